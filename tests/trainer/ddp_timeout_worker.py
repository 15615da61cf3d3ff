"""One rank of the dist_timeout test (run by torchrun from test_distributed.py): rank 1 never
joins; rank 0 builds a Trainer with ``dist_timeout=3`` and records how long it waited and what
it raised. Argument: the output folder."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for tiny_task

from tiny_task import make_dataset, make_loader, make_model

from labelsmooth import Trainer

TIMEOUT = 3.0


def main(output: Path) -> None:
    report = output / "rank0.json"
    if int(os.environ["RANK"]) != 0:
        # A stopped rank: it never reaches the process group, and leaves once rank 0 gave up.
        deadline = time.monotonic() + 120
        while not report.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        return
    start = time.monotonic()
    try:
        Trainer(make_model(), make_loader(make_dataset(16), 8), max_duration="1ep", device="cpu",
                progress_bar=False, dist_timeout=TIMEOUT)
        error = "none"
    except Exception as raised:  # recorded for the test to check
        error = f"{type(raised).__name__}: {raised}"
    report.write_text(json.dumps({"waited": time.monotonic() - start, "error": error[:500]}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
