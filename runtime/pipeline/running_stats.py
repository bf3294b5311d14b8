"""Statistics of a stream in constant memory: a run that lasts weeks keeps no per-frame list.

A list of stage times and counts grew by about 150 bytes a frame (0.7 GB a day at 53 FPS). `Tally` keeps count,
total, minimum and maximum; `LatencyHistogram` keeps log-spaced bins (Prometheus' and HdrHistogram's idea), so
that percentiles cover the whole run, not a window, to within half a bin (±2.3 %).
"""
from __future__ import annotations

import math

import numpy as np


class Tally:
    """Count, total, minimum and maximum of the values seen (per-frame cell counts)."""

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, value: float) -> None:
        self.n += 1
        self.total += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    def summary(self) -> dict[str, float]:
        """mean (2 decimals), min, max, total; zeros before the first value."""
        if not self.n:
            return {"mean": 0.0, "min": 0.0, "max": 0.0, "total": 0.0}
        return {"mean": round(self.mean, 2), "min": float(self.min), "max": float(self.max), "total": float(self.total)}


class LatencyHistogram:
    """Durations in seconds binned on a log scale from LOW to HIGH (BINS_PER_DECADE per decade; shorter and longer
    ones fall in the end bins): mean exact, percentiles to within half a bin."""

    LOW = 1e-6
    HIGH = 1e4
    BINS_PER_DECADE = 50

    def __init__(self) -> None:
        decades = round(math.log10(self.HIGH / self.LOW))
        self.counts = np.zeros(decades * self.BINS_PER_DECADE + 2, np.int64)  # + underflow and overflow bins
        self.tally = Tally()

    def add(self, seconds: float) -> None:
        self.tally.add(seconds)
        if seconds <= self.LOW:
            index = 0
        else:
            index = min(int(math.log10(seconds / self.LOW) * self.BINS_PER_DECADE) + 1, len(self.counts) - 1)
        self.counts[index] += 1

    def __len__(self) -> int:
        return self.tally.n

    def upper_bounds(self) -> np.ndarray:
        """Each bin's upper edge in seconds (the last is +inf): Prometheus' ``le`` labels."""
        edges = self.LOW * 10.0 ** (np.arange(len(self.counts) - 1) / self.BINS_PER_DECADE)
        return np.append(edges, np.inf)

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0–100) in seconds: the geometric middle of the bin that holds it, clamped to
        the values seen (the end bins give the smallest and largest value seen)."""
        if not self.tally.n:
            return 0.0
        rank = q / 100.0 * self.tally.n
        index = int(np.searchsorted(np.cumsum(self.counts), max(rank, 1), side="left"))
        if index == 0:  # at or below LOW
            return self.tally.min
        if index == len(self.counts) - 1:  # beyond HIGH
            return self.tally.max
        value = self.LOW * 10.0 ** ((index - 0.5) / self.BINS_PER_DECADE)
        return min(max(value, self.tally.min), self.tally.max)

    def summary_ms(self) -> dict[str, float]:
        """mean, p50 and p90 in milliseconds (2 decimals)."""
        return {"mean_ms": round(self.tally.mean * 1e3, 2), "p50_ms": round(self.percentile(50) * 1e3, 2),
                "p90_ms": round(self.percentile(90) * 1e3, 2)}
