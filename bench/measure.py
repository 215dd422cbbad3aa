"""Timing, statistics and the result record every scenario returns."""

from __future__ import annotations

import math
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Result:
    """One line of the report. Times are milliseconds; rates are per second."""

    name: str
    title: str
    target: str
    status: str = "ok"  # ok | not available | error
    unit: str = "ms"  # ms (lower is better) or a rate like "events/s" (higher is better)
    median: float | None = None
    p95: float | None = None
    p99: float | None = None
    peak_mb: float | None = None
    lower_bound: float | None = None  # same unit as median
    lower_bound_label: str = ""
    met: bool | None = None
    samples: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        """How many times slower than the lower bound (1.0 = as fast as plain SQL)."""
        if not self.median or not self.lower_bound:
            return None
        if self.unit == "ms" or self.unit == "s":
            return self.median / self.lower_bound
        return self.lower_bound / self.median


def not_available(name: str, title: str, target: str, why: str) -> Result:
    return Result(name=name, title=title, target=target, status="not available", notes=[why])


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (p95 of 20 samples is the 19th smallest)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def timed(fn: Callable[[], object], *, warmup: int, repeat: int) -> list[float]:
    """Milliseconds of `repeat` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def fill(result: Result, samples: list[float]) -> Result:
    result.samples = len(samples)
    if samples:
        result.median = median(samples)
        result.p95 = percentile(samples, 95)
        result.p99 = percentile(samples, 99)
    return result


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def forked_peak_mb() -> float:
    """Peak resident memory of the largest child process this one has waited for."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


_forks: list[int] = []
os.register_at_fork(after_in_parent=lambda: _forks.append(1))


def forked_processes() -> int:
    """How many processes this one has forked (import_usage's workers)."""
    return len(_forks)


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * resource.getpagesize() / (1024 * 1024)
    except OSError:
        return peak_rss_mb()
