"""Project penultimate-layer activations onto the plane through three class templates.

Mueller, Kornblith and Hinton (2019), figure 1: the logit of class ``k`` is ``x . w_k + b_k``,
so the row ``w_k`` of the last layer's weight is class ``k``'s *template*, and an example's logit
for ``k`` grows as its penultimate activation ``x`` gets closer to ``w_k``. Taking three classes,
building an orthonormal basis of the (affine) plane through their three templates and projecting
the activations of examples of those classes onto it shows how tightly each class clusters around
its template: with label smoothing the clusters become tight, equidistant blobs.

The plane's origin is the templates' centroid, its first axis points from template 0 to
template 1, and its second axis is the part of ``w_2 - w_0`` orthogonal to the first
(Gram-Schmidt). So the templates themselves land at hand-checkable points.

Reference:
    Mueller, Kornblith and Hinton (2019), "When does label smoothing help?", NeurIPS, section 2.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from labelsmooth._validation import fail

__all__ = ["TemplatePlane", "project_onto_plane", "template_plane"]


class TemplatePlane(NamedTuple):
    """An affine plane in feature space: ``origin`` ``(D,)`` and orthonormal ``basis`` ``(2, D)``."""

    origin: torch.Tensor
    basis: torch.Tensor


def template_plane(templates: torch.Tensor) -> TemplatePlane:
    r"""Orthonormal basis of the plane through three templates.

    .. math::
        o = \tfrac13 (w_0 + w_1 + w_2),\quad
        u_1 = \frac{w_1 - w_0}{\lVert w_1 - w_0 \rVert},\quad
        u_2 = \frac{v - (v \cdot u_1) u_1}{\lVert v - (v \cdot u_1) u_1 \rVert},\ v = w_2 - w_0

    Args:
        templates: ``(3, D)`` rows of the last layer's weight for three classes, ``D >= 2``.

    Returns:
        :class:`TemplatePlane` in ``templates``' dtype.

    Raises:
        ValueError: if the templates do not span a plane: two are equal, or the part of
            ``w_2 - w_0`` orthogonal to ``u_1`` is below ``sqrt(eps)`` of the dtype times
            ``||w_2 - w_0||`` (collinear up to rounding).

    Example:
        >>> w = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
        >>> template_plane(w).basis
        tensor([[1., 0., 0.],
                [0., 1., 0.]])
    """
    if (
        not isinstance(templates, torch.Tensor)
        or not templates.is_floating_point()
        or templates.ndim != 2
        or templates.shape[0] != 3
        or templates.shape[1] < 2
    ):
        fail("templates", "a floating-point tensor of shape (3, D) with D >= 2", templates,
             error=TypeError)
    # Gram-Schmidt loses about half the digits on nearly collinear vectors: below sqrt(eps) the
    # second direction is rounding noise.
    tolerance = torch.finfo(templates.dtype).eps ** 0.5
    w0, w1, w2 = templates.unbind(0)
    first = w1 - w0
    first_norm = first.norm()
    if first_norm <= tolerance * templates.norm(dim=1).max():
        fail("templates", "three templates spanning a plane", "two equal templates")
    u1 = first / first_norm
    spanning = w2 - w0
    second = spanning - (spanning @ u1) * u1
    second_norm = second.norm()
    if second_norm <= tolerance * spanning.norm():
        fail("templates", "three templates spanning a plane", "three collinear templates")
    return TemplatePlane(templates.mean(dim=0), torch.stack([u1, second / second_norm]))


def project_onto_plane(features: torch.Tensor, plane: TemplatePlane) -> torch.Tensor:
    """Coordinates of ``features`` in the plane: ``(x - origin) @ basis.T``.

    Args:
        features: ``(N, D)`` penultimate-layer activations.
        plane: from :func:`template_plane`.

    Returns:
        ``(N, 2)`` in-plane coordinates (the orthogonal remainder is dropped).

    Example:
        >>> w = torch.tensor([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
        >>> project_onto_plane(torch.tensor([[1.0, 1.0, 5.0]]), template_plane(w))
        tensor([[0., 0.]])
    """
    if not isinstance(features, torch.Tensor) or features.ndim != 2:
        fail("features", "a tensor of shape (N, D)", features, error=TypeError)
    if features.shape[1] != plane.origin.shape[0]:
        fail("features", f"a tensor of shape (N, {plane.origin.shape[0]})", features)
    return (features.to(plane.basis.dtype) - plane.origin) @ plane.basis.T
