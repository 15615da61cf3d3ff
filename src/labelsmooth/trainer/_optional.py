"""Import an optional dependency, or say which extra installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["import_optional"]


def import_optional(name: str, *, extra: str = "trainer", purpose: str) -> ModuleType:
    """Import ``name``; if it is missing, raise ``ImportError`` naming the pip command that fixes it.

    Example:
        >>> import_optional("json", purpose="tests").__name__
        'json'
    """
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ImportError(
            f"{purpose} needs the '{name}' package: pip install 'labelsmooth[{extra}]'"
        ) from error
