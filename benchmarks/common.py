"""Timing helpers shared by the benchmark scripts: medians over repeats after warm-up, peak host memory."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> tuple[float, float]:
    """(median seconds, first-call seconds) of ``fn``; the first call includes compilation for jitted code."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), first


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    import jax

    try:
        import torch

        torch_v = torch.__version__
    except ImportError:  # pragma: no cover
        torch_v = "-"
    return (
        f"{platform.machine()} {os.cpu_count()} cores, python {sys.version.split()[0]}, "
        f"jax {jax.__version__} ({jax.default_backend()}), torch {torch_v}"
    )
