"""Counting a dataset's class maps and comparing with its instance ground truth (`csc-data count`)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from runtime.count_metrics import CountTally, match_instances
from runtime.counting import CellCounter, CountingConfig
from runtime.dataset import instance_counts, open_dataset


def count_dataset(root: str | Path, config: CountingConfig | None = None,
                  on_image: Callable[[], None] | None = None) -> dict:
    """Counts of every mask in ``root/masks``; with ``root/instances``, true counts and accuracy too."""
    dataset = open_dataset(root)
    config = config or CountingConfig(pixel_size_um=dataset.pixel_size_um)
    counter = CellCounter(config)
    names = config.class_names[1:]
    tally = CountTally(names)
    per_image = {}
    for i, sample in enumerate(dataset.samples):
        labels = dataset.load(i)
        result = counter.count(labels.mask, return_labels=labels.instances is not None)
        truth = None
        if labels.instances is not None:
            true = instance_counts(labels.mask, labels.instances, len(config.class_names))
            truth = {n: int(true[c + 1]) for c, n in enumerate(names)}
            for c, name in enumerate(names, start=1):
                pred_c = np.where(labels.mask == c, result.labels, 0)
                true_c = np.where(labels.mask == c, labels.instances, 0)
                tally.add_matches(name, *match_instances(pred_c, true_c))
            tally.add(result.counts, truth)
        per_image[sample.stem] = {"counts": result.counts, **({"true_counts": truth} if truth else {})}
        if on_image is not None:
            on_image()
    summary = tally.summary() if tally.images else {"images": len(dataset), "counts": _sum(per_image, names)}
    summary["config"] = {"split_touching": config.split_touching, "border": config.border,
                         "pixel_size_um": config.pixel_size_um,
                         "min_area_px": {n: config.min_area(c) for c, n in enumerate(names, start=1)}}
    summary["per_image"] = per_image
    return summary


def _sum(per_image: dict, names) -> dict:
    return {n: sum(v["counts"][n] for v in per_image.values()) for n in names}
