"""Counting quality against ground truth: the paper's Table 3 ratio, per-image error, instance P/R/F1.

Kept apart from the counter (as Polygraphy keeps comparators apart from runners): the counter never needs
ground truth, the evaluation never re-implements counting.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


def match_instances(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of two label maps at IoU > threshold.

    With a threshold of at least 0.5 an instance can overlap only one other by more than half, so the
    one-to-one matching is exact without an assignment solver.
    """
    if threshold < 0.5:
        raise ValueError("one-to-one matching by threshold needs IoU ≥ 0.5")
    pred = pred.astype(np.int64, copy=False).ravel()
    truth = truth.astype(np.int64, copy=False).ravel()
    pred_ids, pred_dense = np.unique(pred, return_inverse=True)
    true_ids, true_dense = np.unique(truth, return_inverse=True)
    n_p, n_t = len(pred_ids), len(true_ids)
    inter = np.bincount(pred_dense * n_t + true_dense, minlength=n_p * n_t).reshape(n_p, n_t)
    area_p, area_t = inter.sum(axis=1), inter.sum(axis=0)
    has_bg_p, has_bg_t = pred_ids[0] == 0, true_ids[0] == 0
    inter = inter[int(has_bg_p):, int(has_bg_t):]
    area_p, area_t = area_p[int(has_bg_p):], area_t[int(has_bg_t):]
    union = area_p[:, None] + area_t[None, :] - inter
    tp = int(np.count_nonzero(inter > threshold * union))
    return tp, len(area_p) - tp, len(area_t) - tp


def match_points(labels: np.ndarray, points: np.ndarray, ignore: np.ndarray | None = None) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of predicted instances against annotated points.

    For count-only ground truth (one point per cell, or a box's centre): a point matches the instance that
    contains it, one point per instance, so two points in one instance are one hit and one miss (a merged pair),
    and a point on background is a miss. Predicted instances whose ids are in ``ignore`` (typically those cut by
    the frame edge, which annotators mark only when most of the cell is inside) are not false positives when no
    point falls in them; when one does they are hits like any other. The scored predicted count is tp + fp.
    """
    labels = np.asarray(labels)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    h, w = labels.shape
    xs = np.clip(np.rint(points[:, 0]).astype(np.int64), 0, w - 1)
    ys = np.clip(np.rint(points[:, 1]).astype(np.int64), 0, h - 1)
    hit = np.unique(labels[ys, xs])
    hit = hit[hit != 0]
    tp = len(hit)
    predicted = np.unique(labels)
    predicted = predicted[predicted != 0]
    unmatched = np.setdiff1d(predicted, hit, assume_unique=True)
    if ignore is not None and len(ignore):
        unmatched = np.setdiff1d(unmatched, np.asarray(ignore), assume_unique=False)
    return tp, len(unmatched), len(points) - tp


@dataclass
class CountTally:
    """Accumulates predicted and true counts and instance matches over a dataset, per class name."""

    class_names: tuple[str, ...]
    predicted: dict[str, float] = field(default_factory=dict)
    true: dict[str, float] = field(default_factory=dict)
    abs_error: dict[str, float] = field(default_factory=dict)
    matches: dict[str, list[int]] = field(default_factory=dict)
    images: int = 0

    def __post_init__(self) -> None:
        for name in self.class_names:
            self.predicted[name], self.true[name], self.abs_error[name] = 0.0, 0.0, 0.0
            self.matches[name] = [0, 0, 0]

    def add(self, predicted: dict[str, float], true: dict[str, float]) -> None:
        self.images += 1
        for name in self.class_names:
            p, t = float(predicted.get(name, 0)), float(true.get(name, 0))
            self.predicted[name] += p
            self.true[name] += t
            self.abs_error[name] += abs(p - t)

    def add_matches(self, name: str, tp: int, fp: int, fn: int) -> None:
        for i, v in enumerate((tp, fp, fn)):
            self.matches[name][i] += v

    def summary(self) -> dict:
        """`counts`, `true_counts`, `count_accuracy` (predicted / true, paper Table 3), `mean_abs_error` per
        image, and instance `precision`, `recall`, `f1` at IoU 0.5, each keyed by class name."""
        def ratio(a: float, b: float) -> float | None:
            return round(a / b, 4) if b else None

        out: dict = {
            "images": self.images,
            "counts": {n: tidy_count(v) for n, v in self.predicted.items()},
            "true_counts": {n: tidy_count(v) for n, v in self.true.items()},
            "count_accuracy": {n: ratio(self.predicted[n], self.true[n]) for n in self.class_names},
            "mean_abs_error": {n: round(self.abs_error[n] / max(1, self.images), 3) for n in self.class_names},
        }
        if any(sum(m) for m in self.matches.values()):
            prf = {}
            for name, (tp, fp, fn) in self.matches.items():
                precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
                f1 = ratio(2 * tp, 2 * tp + fp + fn)
                prf[name] = {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}
            out["instances"] = prf
        return out


def tidy_count(value: float) -> float | int:
    """A count as JSON shows it: whole numbers as int, others (the `half` border policy's halves, sums of them)
    rounded to 2 decimals. The one rounding of counts, the counter's (`FrameCounts.counts`) and the summaries'."""
    return int(value) if float(value).is_integer() else round(float(value), 2)


def score_points(labels: np.ndarray, cells: np.ndarray, points: Mapping[str, np.ndarray],
                 class_names: Sequence[str], edge_band: float = 0.0) -> dict[str, tuple[int, int, int]]:
    """Per class name of ``points``: (tp, fp, fn) of that class's counted cells against its annotated points.

    ``labels`` and ``cells`` are what `CellCounter.count(..., return_labels=True)` gives for one frame; a class's
    cells that touch the frame edge are not false positives when no point falls in them (see `match_points`).
    With ``edge_band`` (px), annotations that mark cells near the frame edge inconsistently (Chula RBC-12 does)
    are scored only inside: points within the band are left out, and so are cells whose centre lies in it
    unless an inside point falls in them. The scored predicted count of a class is tp + fp.
    """
    h, w = labels.shape
    class_of = np.zeros(int(labels.max()) + 1 if labels.size else 1, np.int64)
    class_of[cells["id"]] = cells["class_id"]
    near_edge = cells["touches_border"] | (np.minimum(np.minimum(cells["cx"], w - 1 - cells["cx"]),
                                                      np.minimum(cells["cy"], h - 1 - cells["cy"])) < edge_band)
    out = {}
    for name, pts in points.items():
        class_id = list(class_names).index(name)
        own = np.where(class_of[labels] == class_id, labels, 0)
        pts = np.asarray(pts, np.float64).reshape(-1, 2)
        if edge_band > 0:
            inside = np.minimum(np.minimum(pts[:, 0], w - 1 - pts[:, 0]), np.minimum(pts[:, 1], h - 1 - pts[:, 1]))
            pts = pts[inside >= edge_band]
        edge = cells["id"][(cells["class_id"] == class_id) & near_edge]
        out[name] = match_points(own, pts, edge)
    return out
