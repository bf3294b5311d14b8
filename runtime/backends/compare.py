"""Comparing two runners' class maps (Polygraphy-style comparator, kept apart from the runners)."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from runtime.backends.base import Runner


def class_map_agreement(runner_a: Runner, runner_b: Runner, frames: Iterable[np.ndarray]) -> float:
    """Fraction of pixels on which two active runners give the same class, over all frames."""
    same = total = 0
    for frame in frames:
        a, b = runner_a.infer(frame[None]), runner_b.infer(frame[None])
        same += int((a == b).sum())
        total += a.size
    return same / max(1, total)
