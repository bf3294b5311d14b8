"""Counting a dataset's class maps and scoring the counts against a reference (`csc-data count`).

The reference is the dataset's own instances/, or another dataset with the same image stems (`--truth`): one
with instances (cells matched at IoU > 0.5), or a count-only one with points or boxes (an annotated point, or a
box's centre, hits the counted cell that contains it, one-to-one; cells cut by the frame edge that no point hits
are not scored). Only ground truth gives "true" counts and "accuracy": where the reference came from the
classical labeller (`csc-label auto --split-touching`), the same numbers say how far the counter agrees with
the labeller's own split, and are reported under ``versus_labeller``.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.data.count_dataset import CountSample, is_count_only, open_count_dataset
from runtime.counting.metrics import CountTally, match_instances, score_points
from runtime.counting.counter import CellCounter, CountingConfig
from runtime.data.dataset import Dataset, annotation_kind, instance_counts, is_ground_truth, label_origin, open_dataset
from runtime.errors import CscError

POINT_MATCHING = "an annotated point (a box's centre) hits the counted cell holding it, one-to-one; " \
                 "unhit cells at the frame edge not scored"
INSTANCE_MATCHING = "cells matched one-to-one at IoU > 0.5"
# The same measurements, named for what the reference is (ground truth, or the labeller's own split).
AGREEMENT_KEYS = {"true_counts": "labeller_counts", "count_accuracy": "agreement",
                   "mean_abs_error": "mean_abs_difference", "instances": "instances"}


@dataclass(frozen=True)
class Reference:
    """What counts are scored against: a dataset, its kind of annotation, and where its labels came from."""

    root: str
    annotations: str  # "masks" (with instances), "points" or "boxes"
    labels: str  # label_origin of the reference dataset

    @property
    def ground_truth(self) -> bool:
        return is_ground_truth(self.labels)

    def as_json(self) -> dict:
        matching = INSTANCE_MATCHING if self.annotations == "masks" else POINT_MATCHING
        return {"dataset": self.root, "annotations": self.annotations, "labels": self.labels,
                "ground_truth": self.ground_truth, "matching": matching}


def scored_classes(class_names: Sequence[str], truth_classes: Sequence[str]) -> list[str]:
    """The annotated classes the class maps have (by name, background left out), or an error where there are none:
    asked before any work too, since a command that calibrated or segmented first only then said so."""
    names = [n for n in truth_classes[1:] if n in class_names[1:]]
    if not names:
        raise CscError(f"no class in common: the class maps have {', '.join(class_names[1:])}, the annotations "
                       f"{', '.join(truth_classes[1:])}",
                       fix="import the annotations with --classes mapping to the model's class names")
    return names


class PointScorer:
    """Counts class maps and scores them against count-only annotations, image by image, into one tally.

    The one implementation behind `csc-data count --truth`, `csc-train eval` on count-only datasets and the
    real-image benchmark. Classes are matched by name; annotated classes the class maps do not have are listed
    with their annotated counts, never scored.
    """

    def __init__(self, config: CountingConfig, truth_classes: list[str], edge_band: float = 0.0):
        self.counter = CellCounter(config)
        self.edge_band = edge_band
        self.class_names = config.class_names
        self.names = scored_classes(config.class_names, truth_classes)
        self.unscored = Counter({n: 0 for n in truth_classes[1:] if n not in self.names})
        self.tally = CountTally(tuple(self.names))

    def add(self, class_map: np.ndarray, sample: CountSample, instances: np.ndarray | None = None) -> dict:
        """Count and score one class map — its own ``instances`` where given, else the counter's split; returns
        its per-image record (counts, scored counts, annotated counts)."""
        result = (self.counter.count(class_map, return_labels=True) if instances is None
                  else self.counter.count_instances(class_map, instances, return_labels=True))
        scale = {} if result.scale == "given" else {"pixel_size_um": round(result.pixel_size_um, 4), "scale": result.scale}
        return {"counts": result.counts, **scale, **self.add_labels(result.labels, result.cells, sample)}

    def add_labels(self, labels: np.ndarray, cells: np.ndarray, sample: CountSample) -> dict:
        """Score one image's instance labels and their cell table (`runtime.counting.counter.CELL_DTYPE`: ids, class ids,
        edge flags) — from the counter, or from any method that makes both, such as a benchmark's baseline."""
        empty = np.zeros((0, 2))
        scores = score_points(labels, cells, {n: sample.points.get(n, empty) for n in self.names}, self.class_names,
                              self.edge_band)
        scored = {n: tp + fp for n, (tp, fp, _) in scores.items()}
        annotated = {n: tp + fn for n, (tp, _, fn) in scores.items()}  # the points scored (inside any edge band)
        self.tally.add(scored, annotated)
        for name, (tp, fp, fn) in scores.items():
            self.tally.add_matches(name, tp, fp, fn)
        self.unscored.update(sample.counts(list(self.unscored)))
        return {"scored_counts": scored, "true_counts": annotated}

    def summary(self) -> dict:
        out = self.tally.summary()
        if self.unscored:
            out["not_predicted"] = dict(self.unscored)
        return out


CELLS_FROM = {"instances": "the dataset's own instances/ (its labeller's or annotator's split)",
              "counter": "the class maps, split by the counter"}


def count_dataset(root: str | Path, config: CountingConfig | None = None,
                  on_image: Callable[[], None] | None = None, truth: str | Path | None = None,
                  resplit: bool = False) -> dict:
    """Counts of every mask in ``root/masks``, scored against ``truth`` (a dataset with the same image stems)
    or, without it, against ``root/instances`` where that exists.

    Against ``truth``, the cells scored are the dataset's own instances where it has them (what its labeller or
    annotator split), unless ``resplit`` asks for the counter's split of its class maps; ``cells_from`` in the
    summary says which. Against its own instances the counter's split is always what is scored (there the
    question is how far the counter agrees with them)."""
    dataset = open_dataset(root)
    config = config or CountingConfig(class_names=tuple(dataset.classes),
                                      pixel_size_um=dataset.pixel_size_um if dataset.scale_known else None)
    own = truth is not None and not resplit and any(s.instances is not None for s in dataset.samples)
    if truth is not None and is_count_only(truth):
        summary = _against_points(dataset, open_count_dataset(truth), config, on_image, own)
    else:
        reference = dataset if truth is None else open_dataset(truth)
        summary = _against_instances(dataset, reference, config, on_image, truth is not None, own)
    summary["cells_from"] = CELLS_FROM["instances" if own else "counter"]
    names = config.class_names[1:]
    summary["config"] = {"split_touching": config.split_touching, "border": config.border,
                         "pixel_size_um": config.fixed_pixel_size_um,  # None: estimated per image (see per_image)
                         "diameter_px": config.diameter_px,
                         **({"min_area_px": {n: config.min_area(c) for c, n in enumerate(names, start=1)}}
                            if config.fixed_pixel_size_um else {})}
    return summary


def _against_points(dataset: Dataset, truth, config: CountingConfig, on_image, own: bool) -> dict:
    reference = Reference(str(truth.root), truth.kind, label_origin(truth.meta))
    scorer = PointScorer(config, truth.classes)
    annotated = truth.by_stem()
    per_image = {}
    for i, sample in enumerate(dataset.samples):
        labels = dataset.load(i)
        instances = labels.instances if own else None
        if sample.stem in annotated:
            per_image[sample.stem] = scorer.add(labels.mask, annotated[sample.stem], instances)
        else:
            counted = scorer.counter.count(labels.mask) if instances is None else \
                scorer.counter.count_instances(labels.mask, instances)
            per_image[sample.stem] = {"counts": counted.counts}
        if on_image is not None:
            on_image()
    stems = {s.stem for s in dataset.samples}
    unmatched = {"annotated_without_class_map": sorted(s for s in annotated if s not in stems),
                 "class_maps_without_annotation": sorted(s for s in stems if s not in annotated)}
    return _report(scorer.summary(), reference, per_image, unmatched)


def _against_instances(dataset: Dataset, truth: Dataset, config: CountingConfig, on_image, separate: bool,
                       own: bool = False) -> dict:
    counter = CellCounter(config)
    names = config.class_names[1:]
    shared = [n for n in names if n in truth.classes[1:]]
    tally = CountTally(tuple(shared))
    truth_index = {s.stem: i for i, s in enumerate(truth.samples)}
    per_image = {}
    for i, sample in enumerate(dataset.samples):
        labels = dataset.load(i)
        j = truth_index.get(sample.stem)
        reference = None if j is None else (truth.load(j) if separate else labels)
        scored = reference is not None and reference.instances is not None
        result = (counter.count_instances(labels.mask, labels.instances, return_labels=scored)
                  if own and labels.instances is not None else counter.count(labels.mask, return_labels=scored))
        record: dict = {"counts": result.counts}
        if result.scale != "given":
            record.update(pixel_size_um=round(result.pixel_size_um, 4), scale=result.scale)
        if scored:
            if reference.mask.shape != labels.mask.shape:
                raise CscError(f"{sample.stem}: the reference image is {reference.mask.shape[::-1]} px, the class map "
                               f"{labels.mask.shape[::-1]}", path=truth.samples[j].mask)
            true = instance_counts(reference.mask, reference.instances, len(truth.classes))
            record["true_counts"] = {n: int(true[truth.classes.index(n)]) for n in shared}
            for name in shared:
                pred_c = np.where(labels.mask == config.class_names.index(name), result.labels, 0)
                true_c = np.where(reference.mask == truth.classes.index(name), reference.instances, 0)
                tally.add_matches(name, *match_instances(pred_c, true_c))
            tally.add({n: result.counts[n] for n in shared}, record["true_counts"])
        per_image[sample.stem] = record
        if on_image is not None:
            on_image()
    if not tally.images:
        totals = {n: sum(r["counts"][n] for r in per_image.values()) for n in names}
        return {"images": len(dataset), "counts": totals, "per_image": per_image}
    reference = Reference(str(truth.root), annotation_kind(truth.meta), label_origin(truth.meta))
    return _report(tally.summary(), reference, per_image)


def _report(scores: dict, reference: Reference, per_image: dict, unmatched: dict | None = None) -> dict:
    """The tally's numbers under the names the reference deserves (see the module docstring)."""
    out = {"images": scores.pop("images"), "counts": scores.pop("counts"), "reference": reference.as_json()}
    if reference.ground_truth:
        out.update(scores)
    else:
        out["versus_labeller"] = {AGREEMENT_KEYS.get(k, k): v for k, v in scores.items()}
        for record in per_image.values():
            if "true_counts" in record:
                record["labeller_counts"] = record.pop("true_counts")
    if unmatched is not None:
        out["unmatched"] = unmatched
    out["per_image"] = per_image
    return out
