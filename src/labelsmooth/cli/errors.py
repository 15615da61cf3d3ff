"""The command's one kind of user-facing failure, and lazy imports of the optional dependencies.

A :class:`CommandError` is printed as one line (``labelsmooth: error: ...``) with a non-zero exit
status, never as a traceback.
"""

from __future__ import annotations

from types import ModuleType

from labelsmooth._optional import import_optional

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

    Returns:
        The imported module.

    Example:
        >>> require("json", "json").__name__
        'json'
    """
    try:
        return import_optional(module, extra="cli", purpose="the command", package=package)
    except ImportError as error:
        raise MissingDependencyError(str(error)) from None
