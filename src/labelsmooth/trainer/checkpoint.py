"""Atomic checkpoint files and the random-number-generator states a bit-identical resume needs.

A checkpoint is written to a temporary file in the destination folder, flushed to disk, and
renamed over the destination (``os.replace`` is atomic on POSIX and Windows). A crash during a
save therefore leaves the previous checkpoint whole, never a truncated file.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["get_rng_state", "load_checkpoint", "save_checkpoint", "set_rng_state"]


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable; not every platform can open a folder.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike[str], *,
                    also: str | os.PathLike[str] | None = None) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (temporary file, fsync, rename).

    Args:
        checkpoint: what to save (anything ``torch.save`` takes).
        path: the destination file; its folder is created.
        also: a second name for the same file (e.g. ``latest.pt``), replaced atomically too.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> save_checkpoint({"step": 1}, folder / "a.pt").name
        'a.pt'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        if also is not None:
            also = Path(also)
            link = Path(temporary + ".link")
            os.link(path, link)
            os.replace(link, also)
    except BaseException:
        for leftover in (temporary, temporary + ".link"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        raise
    _fsync_folder(path.parent)
    return path


def load_checkpoint(path: str | os.PathLike[str], *, map_location: torch.device | str = "cpu"
                    ) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors moved to ``map_location``).

    Only tensors and plain Python containers are unpickled (``weights_only=True``).
    """
    checkpoint: dict[str, Any] = torch.load(path, map_location=map_location, weights_only=True)
    return checkpoint


def get_rng_state() -> dict[str, Any]:
    """Every generator training may draw from: Python's, torch's (CPU and CUDA) and, if numpy
    was imported, numpy's global one."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        kind, keys, position, has_gauss, cached = numpy.random.get_state()
        state["numpy"] = (kind, torch.from_numpy(keys.astype("int64")), position, has_gauss, cached)
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if "numpy" in state:
        numpy = sys.modules.get("numpy") or __import__("numpy")
        kind, keys, position, has_gauss, cached = state["numpy"]
        numpy.random.set_state((kind, keys.numpy().astype("uint32"), position, has_gauss, cached))
