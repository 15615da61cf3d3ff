"""Atomic checkpoint files and the random-number-generator states a bit-identical resume needs.

A checkpoint is written to a temporary file in the destination folder, flushed to disk, and
renamed over the destination (``os.replace`` is atomic on POSIX and Windows). A crash during a
save therefore leaves the previous checkpoint whole, never a truncated file; a temporary file
left by a process that was killed mid-save is removed by :func:`remove_stale_temporaries`.
Files are created with the permissions the process's umask allows, like any other file it
writes.

Reading a file that is empty, truncated, corrupted or not a checkpoint, and running out of disk
space while writing, raise one line naming the file and what is wrong with it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import random
import re
import sys
import uuid
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch

from labelsmooth._validation import fail

__all__ = [
    "check_writable_folder",
    "dataloader_generators",
    "get_rng_state",
    "load_checkpoint",
    "remove_stale_temporaries",
    "save_checkpoint",
    "set_rng_state",
]

# ``.{destination name}.{pid of the writer}.{random hex}.tmp``: the pid tells a live writer's
# file from one whose writer was killed.
_TEMPORARY = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{32}\.tmp$")
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable; not every platform can open a folder.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _temporary_name(destination: Path) -> Path:
    return destination.with_name(f".{destination.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")


def _create(path: Path) -> int:
    # Mode 0o666 filtered by the umask, as open() does (tempfile.mkstemp would force 0o600).
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)


def _os_error(number: int | None, message: str) -> OSError:
    # The message alone (no "[Errno N]" prefix), with the errno kept for code that checks it.
    error = OSError(message)
    error.errno = number
    return error


def _raise_write_error(error: BaseException, path: Path) -> NoReturn:
    """One line for a failed write: disk full, or the operating system's reason."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in _DISK_FULL:
            raise _os_error(cause.errno, f"checkpoint: expected room to write {str(path)!r}, got "
                            "a full disk (no space left on the device); the previous checkpoint "
                            "is unchanged") from error
        cause = cause.__cause__ or cause.__context__
    if isinstance(error, OSError):
        message = (f"checkpoint: expected to write {str(path)!r}, got {error.strerror or error}; "
                   "the previous checkpoint is unchanged")
        raise _os_error(error.errno, message) from error
    raise error


def save_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike[str], *,
                    also: str | os.PathLike[str] | None = None) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (temporary file, fsync, rename).

    Args:
        checkpoint: what to save (anything ``torch.save`` takes).
        path: the destination file; its folder is created.
        also: a second name for the same file (e.g. ``latest.pt``), replaced atomically too.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OSError: one line naming the file when the disk is full or the write fails; ``path``
            and ``also`` then hold what they held before.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> save_checkpoint({"step": 1}, folder / "a.pt").name
        'a.pt'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_name(path)
    link = None if also is None else _temporary_name(Path(also))
    try:
        with os.fdopen(_create(temporary), "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        if also is not None and link is not None:
            os.link(path, link)
            os.replace(link, also)
    except BaseException as error:
        for leftover in (temporary, link):
            if leftover is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
        if isinstance(error, (OSError, RuntimeError)):
            _raise_write_error(error, path)
        raise
    _fsync_folder(path.parent)
    return path


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, but another user's (or no signals on this platform)
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files of saves whose process no longer runs.

    A process killed during :func:`save_checkpoint` leaves its hidden ``.<name>.<pid>.<hex>.tmp``
    file behind; this removes those whose writing process is gone, and nothing else.

    Returns:
        The files removed.

    Example:
        >>> import tempfile, pathlib
        >>> remove_stale_temporaries(pathlib.Path(tempfile.mkdtemp()))
        []
    """
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in Path(folder).iterdir():
            match = _TEMPORARY.match(entry.name)
            if match and not _pid_alive(int(match.group(1))) and entry.is_file():
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
                    removed.append(entry)
    return removed


def _describe_unreadable(path: Path, error: BaseException) -> str:
    size = path.stat().st_size
    if size == 0:
        return "an empty file (0 bytes)"
    with path.open("rb") as handle:
        head = handle.read(4)
    if head == b"PK\x03\x04":
        # A whole archive whose pickle the weights-only unpickler refuses holds other objects.
        if isinstance(error, pickle.UnpicklingError):
            return "a file that holds objects other than tensors and plain containers"
        return f"a truncated or corrupted file ({size} bytes of an incomplete zip archive)"
    return f"a file that is not a PyTorch checkpoint ({size} bytes, starting with {head!r})"


def load_checkpoint(path: str | os.PathLike[str], *, map_location: torch.device | str = "cpu",
                    argument: str = "path") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors moved to ``map_location``).

    Only tensors and plain Python containers are unpickled (``weights_only=True``).

    Args:
        path: the file to read.
        map_location: where tensors go. Default: the CPU.
        argument: the name ``path`` has in error messages. Default: ``"path"``.

    Raises:
        ValueError: one line naming the file if it is empty, truncated, corrupted or not a
            checkpoint (or not a dict).
    """
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile,
            ValueError) as error:
        if not path.is_file():
            raise
        fail(argument, "a complete checkpoint file", f"{str(path)!r}, "
             f"{_describe_unreadable(path, error)}")
    if not isinstance(checkpoint, dict):
        fail(argument, "a checkpoint holding a dict", f"{str(path)!r}, holding a "
             f"{type(checkpoint).__name__}")
    return checkpoint


def _generator_places(dataloader: Any) -> list[tuple[str, Any]]:
    sampler = getattr(dataloader, "sampler", None)
    batch_sampler = getattr(dataloader, "batch_sampler", None)
    places = [("generator", dataloader), ("sampler.generator", sampler),
              ("batch_sampler.generator", batch_sampler),
              ("batch_sampler.sampler.generator", getattr(batch_sampler, "sampler", None)),
              ("dataset.generator", getattr(dataloader, "dataset", None))]
    return [(name, getattr(owner, "generator", None)) for name, owner in places
            if owner is not None]


def dataloader_generators(dataloader: Any, argument: str = "train_dataloader"
                          ) -> tuple[list[torch.Generator], list[str]]:
    """The random generators a dataloader draws from that a checkpoint can hold, and those
    it cannot.

    Looks at the ``generator`` attribute of the dataloader, its sampler, its batch sampler, the
    batch sampler's sampler and the dataset. Each distinct :class:`torch.Generator` is returned
    once, in that order; any other random state found there (another library's generator, the
    random state of persistent worker processes) is named in the second list.

    Example:
        >>> from torch.utils.data import DataLoader
        >>> generator = torch.Generator().manual_seed(0)
        >>> found, missed = dataloader_generators(DataLoader(range(4), shuffle=True, generator=generator))
        >>> found == [generator], missed
        (True, [])
    """
    generators: list[torch.Generator] = []
    uncaptured: list[str] = []
    seen: list[Any] = []
    for name, generator in _generator_places(dataloader):
        if generator is None or any(generator is known for known in seen):
            continue
        seen.append(generator)
        if isinstance(generator, torch.Generator):
            generators.append(generator)
        else:
            uncaptured.append(f"{argument}.{name} (a {type(generator).__name__})")
    if getattr(dataloader, "num_workers", 0) > 0 and getattr(dataloader, "persistent_workers", False):
        uncaptured.append(f"{argument}'s persistent worker processes")
    return generators, uncaptured


def get_rng_state(generators: Sequence[torch.Generator] = ()) -> dict[str, Any]:
    """Every generator training may draw from: Python's, torch's (CPU and CUDA), numpy's global
    one if numpy was imported, and ``generators`` (a dataloader's own, for example)."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        kind, keys, position, has_gauss, cached = numpy.random.get_state()
        state["numpy"] = (kind, torch.from_numpy(keys.astype("int64")), position, has_gauss, cached)
    if generators:
        state["generators"] = [generator.get_state() for generator in generators]
    return state


def set_rng_state(state: dict[str, Any], generators: Sequence[torch.Generator] = (), *,
                  argument: str = "generators") -> None:
    """Restore what :func:`get_rng_state` returned (``generators`` in the same order).

    Raises:
        ValueError: if ``state`` holds a different number of generator states than
            ``generators`` (a checkpoint from a dataloader with other generators).
    """
    saved = state.get("generators", [])
    if len(saved) != len(generators):
        fail(argument, f"{len(saved)} torch.Generator(s) of a sampler or dataloader, as when the "
             "checkpoint was written", f"{len(generators)}")
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if "numpy" in state:
        numpy = sys.modules.get("numpy") or __import__("numpy")
        kind, keys, position, has_gauss, cached = state["numpy"]
        numpy.random.set_state((kind, keys.numpy().astype("uint32"), position, has_gauss, cached))
    for generator, saved_state in zip(generators, saved, strict=True):
        generator.set_state(saved_state.cpu())


def check_writable_folder(folder: str | os.PathLike[str], argument: str = "save_folder") -> Path:
    """Create ``folder`` (and its parents) and prove a file can be written in it.

    Raises:
        ValueError: one line naming the folder and the operating system's reason.

    Example:
        >>> import tempfile, pathlib
        >>> check_writable_folder(pathlib.Path(tempfile.mkdtemp()) / "run").name
        'run'
    """
    folder = Path(folder)
    probe = _temporary_name(folder / "write-test")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.close(_create(probe))
        os.unlink(probe)
    except OSError as error:
        fail(argument, "a folder this process can create files in",
             f"{str(folder)!r} ({error.strerror or error})")
    return folder
