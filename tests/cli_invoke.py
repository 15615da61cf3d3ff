"""Run ``labelsmooth``'s command in-process, as the CLI tests do."""

from __future__ import annotations

import pytest

from labelsmooth.cli import main


def invoke(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the command in-process; argparse's own exits count as return statuses."""
    try:
        status = main(argv)
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return status, captured.out, captured.err
