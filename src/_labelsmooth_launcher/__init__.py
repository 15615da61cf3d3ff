"""The ``labelsmooth`` console script's entry point: signal handling before the heavy imports.

Importing :mod:`labelsmooth` imports torch, which takes seconds. Ctrl-C or SIGTERM during those
seconds must end the command with one line, like at any later moment, not with a traceback: so
the console script starts here, in a module that needs only the standard library, and imports
the command once the handlers are in place.

SIGTERM (sent by ``timeout``, ``kill``, job schedulers) raises :class:`Terminated`, a
``KeyboardInterrupt``, so a terminated run unwinds exactly like an interrupted one: finished
trainings kept, summary written, exit status 143 (128 + SIGTERM) instead of 130 (128 + SIGINT).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["INTERRUPTED", "TERMINATED", "Terminated", "exit_status", "handle_sigterm", "main"]

INTERRUPTED = 128 + signal.SIGINT
TERMINATED = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def handle_sigterm() -> Callable[..., Any] | int | None:
    """Make SIGTERM raise :class:`Terminated`; return the previous handler (for restoring it).

    Signal handlers can only be set from the main thread; elsewhere nothing changes and ``None``
    is returned.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def exit_status(interrupt: KeyboardInterrupt) -> int:
    """143 for SIGTERM, 130 for Ctrl-C."""
    return TERMINATED if isinstance(interrupt, Terminated) else INTERRUPTED


def main() -> int:
    """Run the ``labelsmooth`` command with Ctrl-C and SIGTERM handled from the first instant."""
    handle_sigterm()
    try:
        from labelsmooth.cli.command import main as command_main
    except KeyboardInterrupt as interrupt:
        word = "terminated" if isinstance(interrupt, Terminated) else "interrupted"
        print(f"labelsmooth: {word}", file=sys.stderr)
        return exit_status(interrupt)
    return command_main()
