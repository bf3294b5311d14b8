"""A dataset sample's cells as the exporters need them: class name, position and a tight bitmap per instance."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.data.dataset import Dataset
from runtime.counting.instances import find_instances


@dataclass
class Cell:
    label: str
    top: int
    left: int
    mask: np.ndarray  # bool, tight around the cell


@dataclass
class ExportedImage:
    name: str  # the image's file name in the dataset
    path: Path
    height: int
    width: int
    cells: list[Cell]


def exported_images(dataset: Dataset, on_image: Callable[[], None] | None = None) -> Iterator[ExportedImage]:
    """Every sample's cells in instance-id order: from instances/ where the dataset has it, else each class's
    connected components (touching cells of one class are then one cell, as the mask says)."""
    names = dataset.classes
    for i, sample in enumerate(dataset.samples):
        labels = dataset.load(i)
        instances = labels.instances
        if instances is None:
            instances, offset = np.zeros(labels.mask.shape, np.int32), 0
            for class_id in range(1, len(names)):
                found = find_instances(labels.mask == class_id)
                inside = found.labels > 0
                instances[inside] = found.labels[inside] + offset
                offset += len(found.ids)
        h, w = labels.mask.shape
        yield ExportedImage(sample.image.name, sample.image, h, w, _cells(labels.mask, instances, names))
        if on_image is not None:
            on_image()


def _cells(mask: np.ndarray, instances: np.ndarray, names: list[str]) -> list[Cell]:
    flat = instances.ravel()
    pixels = np.flatnonzero(flat)
    pixels = pixels[np.argsort(flat[pixels], kind="stable")]
    ids = flat[pixels]
    starts = np.flatnonzero(np.r_[True, np.diff(ids) != 0]) if ids.size else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], ids.size]
    w = instances.shape[1]
    cells = []
    for s, e in zip(starts, ends):
        ys, xs = np.divmod(pixels[s:e], w)
        top, left = int(ys.min()), int(xs.min())
        crop = np.zeros((int(ys.max()) - top + 1, int(xs.max()) - left + 1), bool)
        crop[ys - top, xs - left] = True
        cells.append(Cell(names[int(mask.flat[pixels[s]])], top, left, crop))
    return cells
