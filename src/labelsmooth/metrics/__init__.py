"""Metrics that show what label smoothing does: calibration and the penultimate-layer picture.

Pure functions of tensors (only torch needed): :func:`expected_calibration_error`,
:func:`reliability_bins` (from the additive :func:`calibration_histogram`),
:func:`brier_score`, :func:`fit_temperature`, and the projection of
penultimate activations onto the plane through three class templates (:func:`template_plane`,
:func:`project_onto_plane`).
"""

from labelsmooth.metrics.calibration import (
    ReliabilityBins,
    brier_score,
    calibration_histogram,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)
from labelsmooth.metrics.projection import TemplatePlane, project_onto_plane, template_plane

__all__ = [
    "ReliabilityBins",
    "TemplatePlane",
    "brier_score",
    "calibration_histogram",
    "expected_calibration_error",
    "fit_temperature",
    "project_onto_plane",
    "reliability_bins",
    "template_plane",
]
