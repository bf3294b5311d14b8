"""Instance-label images: one PNG/TIFF per image, 0 background and one integer id per cell (Cellpose's
``*_masks.png``, StarDist and ImageJ/Fiji label exports; 8, 16 or 32 bit).

A label file belongs to the image with the same stem, or with the stem left after a tool's suffix
(``_cp_masks``, ``_masks``, ``_mask``, ``_labels``, ``_label``). Classes: every cell is unnamed unless a class
table (CSV) names them, per file (``image,class``) or per cell (``image,label,class``); unnamed cells take the
class that ``--classes '*=NAME'`` gives.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from runtime.annotations.model import Annotations, ImageAnnotation
from runtime.csv_rows import csv_rows
from runtime.errors import CscError
from runtime.imageio import is_image_name, read_label_map, stem_of

TOOL_SUFFIXES = ("_cp_masks", "_masks", "_mask", "_labels", "_label")


def read_masks(src: Path, class_table: Path | None = None) -> Annotations:
    if not src.is_dir():
        raise CscError("the masks source must be a folder of label images", path=src)
    files = sorted(p for p in src.iterdir() if p.is_file() and is_image_name(p))
    if not files:
        raise CscError("no label images (.png, .tif) in the folder", path=src)
    table = _class_table(class_table) if class_table else {}
    images, names = [], set()
    for path in files:
        stem = image_stem(path)
        per_file = table.get(stem, table.get(path.stem, {}))
        names.update(per_file.values() if per_file else [""])
        images.append(ImageAnnotation(stem, path.name, label_map=partial(_load, path, per_file)))
    source = Annotations("masks", "masks", images, files=set(files))
    source.label_names = sorted(names)
    return source


def image_stem(path: Path) -> str:
    """The stem of the image a label file belongs to (``slide1.x40_label.png`` → ``slide1.x40``)."""
    return _without_tool_suffix(stem_of(path.name))


def _without_tool_suffix(stem: str) -> str:
    for suffix in TOOL_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _load(path: Path, names: dict[int, str]) -> tuple[np.ndarray, dict[int, str]]:
    labels = read_label_map(path)
    if labels.ndim != 2:
        raise CscError(f"a label image must have one channel, this one has {labels.shape[2]}", path=path,
                       fix="save instance labels as a single-channel 8/16/32-bit image, not a colour rendering")
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.array_equal(labels, np.round(labels)) or labels.min() < 0:
            raise CscError("a floating-point label image must hold whole, non-negative numbers", path=path)
        labels = labels.astype(np.int64)
    elif labels.dtype.kind == "i" and labels.min() < 0:
        raise CscError("label ids must not be negative", path=path)
    return labels, names


def _class_table(path: Path) -> dict[str, dict[int, str]]:
    """{image stem: {label id (0 = every cell of the file): class name}}."""
    table: dict[str, dict[int, str]] = {}
    for line, row in csv_rows(path, ("image", "class"), ("label",), "pass the class table's CSV file"):
        stem = stem_of(row["image"])
        label = row.get("label", "")
        try:
            label_id = int(label) if label else 0
        except ValueError:
            raise CscError(f"line {line}: label {label!r} is not an integer id", path=path) from None
        table.setdefault(_without_tool_suffix(stem), {})[label_id] = row["class"]
    return table
