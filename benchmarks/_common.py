"""Helpers the benchmark scripts share: provenance, CSV rows, memory probes, devices, runs."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")


def git(*args: str) -> str:
    """The stripped output of ``git ARGS`` run in the repository root; "" where git fails."""
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def git_commit() -> str:
    """The short commit of the checkout, with ``+dirty`` when tracked files are modified."""
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += "+dirty"
    return commit


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo``, or what :mod:`platform` knows elsewhere."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return cpu


def utc_now() -> str:
    """The current UTC time to the second, ISO 8601 (the ``date`` column)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def new_run_id() -> str:
    """A run id: the current UTC time to the microsecond, so that ids sort by time."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def provenance(device: torch.device = CPU) -> dict[str, str]:
    """The provenance columns of a row: date, commit, machine (and GPU), threads, versions."""
    cpu = cpu_name()
    if device.type == "cuda":
        cpu += f"; {torch.cuda.get_device_name(device)}"
    return {
        "date": utc_now(),
        "git_commit": git_commit(),
        "machine": f"{platform.node()} ({cpu})",
        "cpu_count": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
    }


def append_csv(rows: Sequence[dict[str, Any]], path: Path, fields: Sequence[str]) -> None:
    """Append ``rows`` to the CSV at ``path`` with columns ``fields``; a new file gets a header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        if new_file:
            writer.writeheader()
        writer.writerows(rows)


def status_kib(field: str) -> int | None:
    """A KiB field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``); None where unavailable."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Set the kernel's peak-RSS mark (VmHWM) to the current RSS; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def run_probe(module: str, *args: str) -> Any:
    """Run ``python -m MODULE ARGS`` in a fresh subprocess; return its last stdout line as JSON.

    The subprocess finds the repository on its path, and glibc gives every buffer above 64 KiB
    a mapping of its own, returned on free, so the RSS follows the live buffers instead of a
    heap that keeps (and reuses) freed memory.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def parse_device(text: str) -> torch.device:
    """``--device``: cpu or cuda[:N]."""
    try:
        device = torch.device(text)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"expected cpu or cuda[:N], got {text!r}")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a wall-clock interval covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_run(path: Path, run_id: str | None) -> list[dict[str, str]]:
    """The CSV's rows of run ``run_id``, by default of the latest non-quick run (or latest)."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise SystemExit(f"--csv: expected benchmark rows, got an empty file {path}")
    if run_id is None:
        full = [row for row in rows if row["quick"] == "False"] or rows
        run_id = max(row["run_id"] for row in full)
    chosen = [row for row in rows if row["run_id"] == run_id]
    if not chosen:
        raise SystemExit(f"--run-id: expected one of the CSV's run ids, got {run_id!r}")
    return chosen
