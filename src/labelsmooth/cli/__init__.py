"""The ``labelsmooth`` command: train with and without label smoothing, report what changed.

``labelsmooth run`` trains the same model on the same embedded data set (MNIST-1D or scikit-learn's
digits) for each smoothing value and seed and writes a run folder: ``results.json``,
``results.csv``, ``summary.md``, ``reliability.png``, ``penultimate.png`` and ``curves.png``.
``labelsmooth report RUN_DIR`` redraws the summary and pictures from ``results.json``. A folder that
already holds a run is refused unless ``--resume`` (continue it) or ``--overwrite`` is given, and
one command at a time writes into a folder (see :mod:`labelsmooth.cli.folder`).
It needs the ``cli`` extra: ``pip install 'labelsmooth[cli]'``.
"""

from labelsmooth.cli.command import build_parser, main

__all__ = ["build_parser", "main"]
