"""The command's one kind of user-facing failure, and lazy imports of the optional dependencies.

A :class:`CommandError` is printed as one line (``labelsmooth: error: ...``) with a non-zero exit
status, never as a traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["INSTALL_HINT", "CommandError", "MissingDependencyError", "require"]

INSTALL_HINT = "pip install 'labelsmooth[cli]'"


class CommandError(Exception):
    """A mistake the user can fix; ``exit_status`` is what the command returns."""

    exit_status = 1


class MissingDependencyError(CommandError):
    """An optional package the command needs is not installed."""


def require(module: str, package: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the ``pip install`` fix.

    Args:
        module: the dotted module to import, e.g. ``"matplotlib.pyplot"``.
        package: the distribution that provides it, e.g. ``"matplotlib"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(
            f"the command needs {package}, which is not installed ({error}); "
            f"install it with: {INSTALL_HINT}"
        ) from None
