"""The run folder on disk: which files make a run, one writer at a time, atomic writes.

* :func:`atomic_write` writes a file beside its target under a unique temporary name and renames
  it over the target, so an interruption never leaves half a file and two writers never share a
  temporary file.
* :class:`FolderLock` holds ``.labelsmooth.lock`` in the run folder for as long as a command
  writes there. The lock is an advisory ``flock`` on that file, which the operating system
  releases when the holder exits in any way (even ``kill -9``): a lock file left by a dead
  process is simply taken over. The file names the holder's process id and host for the message
  a second command prints.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
from pathlib import Path
from types import TracebackType

from labelsmooth.cli.errors import CommandError

__all__ = [
    "DERIVED_FILES",
    "LOCK_FILE",
    "RESULT_FILES",
    "FolderInUseError",
    "FolderLock",
    "atomic_write",
    "remove_files",
    "run_files",
]

# Written after every training.
RESULT_FILES = ("results.json", "results.csv")
# Drawn from results.json (by `labelsmooth run` at its end and by `labelsmooth report`).
DERIVED_FILES = ("summary.md", "reliability.png", "penultimate.png", "curves.png")
LOCK_FILE = ".labelsmooth.lock"


class FolderInUseError(CommandError):
    """Another process holds the run folder's lock."""

    exit_status = 2


def _default_mode() -> int:
    # os.umask can only be read by setting it; set it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a uniquely named temporary file and a rename.

    The file gets the permissions of any new file (``0o666`` less the umask), not the private
    ``0o600`` of a temporary file.

    Args:
        path: the file to (re)place; its folder must exist.
        data: text (written as UTF-8) or bytes.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as name:
        ...     atomic_write(Path(name) / "a.txt", "hello")
        ...     [path.name for path in Path(name).iterdir()], (Path(name) / "a.txt").read_text()
        (['a.txt'], 'hello')
    """
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(temporary, _default_mode())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def run_files(folder: Path) -> list[str]:
    """The names of the files of a run (results, summary, pictures) present in ``folder``."""
    return [name for name in (*RESULT_FILES, *DERIVED_FILES) if (folder / name).exists()]


def remove_files(folder: Path, names: tuple[str, ...] | list[str]) -> None:
    """Remove ``names`` from ``folder`` where present, and temporary files a killed writer left."""
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
    for name in (*RESULT_FILES, *DERIVED_FILES):
        for stale in folder.glob(f".{name}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()


def _holder(descriptor: int) -> str:
    try:
        os.lseek(descriptor, 0, os.SEEK_SET)
        holder = json.loads(os.read(descriptor, 4096).decode("utf-8"))
        return f"process {int(holder['pid'])} on host {holder['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"  # it has not written its name yet


class FolderLock:
    """Hold ``folder/.labelsmooth.lock`` while a command writes into ``folder``.

    Args:
        folder: the run folder (created if missing).
        argument: how the folder was named on the command line (``--out``, ``RUN_DIR``), for
            the messages.

    Raises:
        FolderInUseError: another process holds the lock (exit status 2).
        CommandError: the folder cannot be created or written (exit status 1).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as name, FolderLock(Path(name), "--out"):
        ...     (Path(name) / ".labelsmooth.lock").exists()
        True
    """

    def __init__(self, folder: Path, argument: str) -> None:
        self.folder = folder
        self.argument = argument
        self.path = folder / LOCK_FILE
        self._descriptor: int | None = None

    def __enter__(self) -> FolderLock:
        import fcntl  # POSIX only; imported here so that the rest of the module imports anywhere

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            while True:
                descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _holder(descriptor)
                    os.close(descriptor)
                    raise FolderInUseError(
                        f"{self.argument}: expected a folder no other labelsmooth command is using, "
                        f"got {str(self.folder)!r} (locked by {holder}); wait for it to end or "
                        "choose another folder") from None
                # The previous holder removes the file as it lets go: if that happened between
                # our open and our flock, we hold a lock on a file nobody else can see; retry.
                try:
                    same = os.path.samestat(os.fstat(descriptor), os.stat(self.path))
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(descriptor)
            os.ftruncate(descriptor, 0)
            os.write(descriptor, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        except OSError as error:
            raise CommandError(f"{self.argument}: cannot write to {str(self.folder)!r} "
                               f"({error.strerror or error})") from None
        self._descriptor = descriptor
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._descriptor is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._descriptor)
        self._descriptor = None
