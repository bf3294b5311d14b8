"""`GET /metrics` in Prometheus' text format (version 0.0.4), so that a fleet of boxes is watched from one Grafana.

Stage latencies come from the pipeline's own histograms (runtime/pipeline/running_stats.py): their log-spaced bins are summed
into buckets at every tenth bin edge (5 a decade, 0.1 ms to 10 s), so the bucket counts are exact, not re-estimated.
"""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping

import numpy as np

from runtime.pipeline.running_stats import LatencyHistogram

BUCKET_STEP = 10  # every tenth bin edge of LatencyHistogram: 5 buckets a decade
BUCKET_RANGE_S = (1e-4, 10.0)


class UploadStats:
    """Uploads answered, by status code, and the time each took (body read to answer)."""

    def __init__(self) -> None:
        self.latency = LatencyHistogram()
        self.by_status: Counter[int] = Counter()
        self._lock = threading.Lock()

    def add(self, status: int, seconds: float) -> None:
        with self._lock:
            self.by_status[status] += 1
            self.latency.add(seconds)


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Mapping[str, object]) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in pairs.items()) + "}" if pairs else ""


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class MetricsText:
    """Builds the exposition text, one metric family (HELP, TYPE, samples) at a time."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> MetricsText:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        return self

    def sample(self, name: str, value: float, labels: Mapping[str, object] | None = None) -> MetricsText:
        self.lines.append(f"{name}{_labels(labels or {})} {_number(value)}")
        return self

    def histogram(self, name: str, histogram: LatencyHistogram, labels: Mapping[str, object] | None = None) -> MetricsText:
        """The histogram's cumulative buckets; ``_count`` is the +Inf bucket (read from one copy of the bins, while
        the counting thread may be adding to them)."""
        labels = dict(labels or {})
        counts = histogram.counts.copy()
        cumulative = np.cumsum(counts)
        edges = histogram.upper_bounds()
        low, high = BUCKET_RANGE_S
        for i in range(0, len(edges) - 1, BUCKET_STEP):
            if low * 0.999 <= edges[i] <= high * 1.001:
                self.sample(f"{name}_bucket", int(cumulative[i]), {**labels, "le": f"{edges[i]:.6g}"})
        self.sample(f"{name}_bucket", int(cumulative[-1]), {**labels, "le": "+Inf"})
        self.sample(f"{name}_sum", round(histogram.tally.total, 9), labels)
        self.sample(f"{name}_count", int(cumulative[-1]), labels)
        return self

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"
