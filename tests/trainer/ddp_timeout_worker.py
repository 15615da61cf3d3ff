"""Rank 0 of a two-process group whose rank 1 never starts (run from test_distributed.py with
``RANK=0 WORLD_SIZE=2`` and a master address in the environment): builds a Trainer with
``dist_timeout=3`` and records how long it waited and what it raised. Argument: the output
folder."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for tiny_task

from tiny_task import make_dataset, make_loader, make_model

from labelsmooth import Trainer

TIMEOUT = 3.0


def main(output: Path) -> None:
    start = time.monotonic()
    try:
        Trainer(make_model(), make_loader(make_dataset(16), 8), max_duration="1ep", device="cpu",
                progress_bar=False, dist_timeout=TIMEOUT)
        error = "none"
    except Exception as raised:  # recorded for the test to check
        error = f"{type(raised).__name__}: {raised}"
    (output / "rank0.json").write_text(json.dumps({"waited": time.monotonic() - start,
                                                   "error": error[:500]}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
