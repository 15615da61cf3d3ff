"""Benchmark scripts (``python -m benchmarks.<name>``); results are appended under ``results/``."""

__all__: list[str] = []
