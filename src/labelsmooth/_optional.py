"""Import an optional dependency, or say in one line which extra installs it.

Everything beyond torch is optional: the trainer's metrics and progress bar, the command's
plots and data, the Hugging Face integration. Each is imported where it is used, through
:func:`import_optional`, so ``import labelsmooth`` stays light and a missing or too old
package is one line naming the fix.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from types import ModuleType

__all__ = ["import_optional", "parse_version"]


def parse_version(version: str) -> tuple[int, ...]:
    """The leading numeric release of a version string: ``"5.23.0.dev0"`` -> ``(5, 23, 0)``.

    Pre-release and local suffixes are ignored, which is enough for a minimum-version check.

    Example:
        >>> parse_version("2.6.6+cpu")
        (2, 6, 6)
    """
    match = re.match(r"\d+(?:\.\d+)*", version.strip())
    if match is None:
        return ()
    return tuple(int(part) for part in match.group(0).split("."))


def _installed_version(module: ModuleType, package: str) -> str | None:
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def import_optional(
    name: str, *, extra: str, purpose: str, package: str | None = None, minimum: str | None = None,
) -> ModuleType:
    """Import ``name``; if it is missing or older than ``minimum``, raise a one-line ``ImportError``.

    Args:
        name: the dotted module to import, e.g. ``"rich.progress"``.
        extra: the labelsmooth extra that installs it, e.g. ``"trainer"``.
        purpose: what needs it, the subject of the message, e.g. ``"the command"``.
        package: the distribution's name when it differs from the top-level module
            (``"scikit-learn"`` for ``sklearn``); default: the top-level module's name.
        minimum: the oldest version that works, e.g. ``"4.46"``; default ``None`` (any).

    Returns:
        The imported module.

    Raises:
        ImportError: ``"{purpose} needs {package}, which is not installed (...); install it with:
            pip install 'labelsmooth[{extra}]'"``, or for a too old version ``"{purpose} needs
            {package}>={minimum}, found {version}; install it with: pip install -U
            'labelsmooth[{extra}]'"``.

    Example:
        >>> import_optional("json", extra="test", purpose="the tests").__name__
        'json'
    """
    top = name.partition(".")[0]
    package = package or top
    try:
        module = importlib.import_module(name)
    except ImportError as error:
        raise ImportError(
            f"{purpose} needs {package}, which is not installed ({error}); "
            f"install it with: pip install 'labelsmooth[{extra}]'"
        ) from error
    if minimum is not None:
        version = _installed_version(importlib.import_module(top), package)
        if version is None or parse_version(version) < parse_version(minimum):
            raise ImportError(
                f"{purpose} needs {package}>={minimum}, found {version or 'an unknown version'}; "
                f"install it with: pip install -U 'labelsmooth[{extra}]'"
            )
    return module
