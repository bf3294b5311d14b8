"""Bring your own labels: annotation formats of labelling tools in and out of the project's dataset format.

One small reader per format turns a file or folder into `Annotations` (shapes or marks with the tool's class
names); `writer.import_annotations` maps classes, matches images and writes the dataset. Exports read a dataset
and write COCO, LabelMe or CVAT for a person to correct, and `csc-data import` takes the corrections back.
torch-free; pycocotools is imported only where COCO polygons or RLE are read or written.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from runtime.data.annotations.cells import exported_images
from runtime.data.annotations.coco import CROWD_RULES, read_coco, write_coco
from runtime.data.annotations.cvat import read_cvat, write_cvat
from runtime.data.annotations.labelme import read_labelme, write_labelme
from runtime.data.annotations.marks import read_boxes, read_points
from runtime.data.annotations.masks import read_masks
from runtime.data.annotations.model import Annotations
from runtime.data.dataset import open_dataset
from runtime.errors import CscError

READERS: dict[str, Callable[..., Annotations]] = {"coco": read_coco, "labelme": read_labelme, "cvat": read_cvat,
                                                  "masks": read_masks, "points": read_points, "boxes": read_boxes}
# Each writer takes (images, classes, out, description) and returns the number of cells written.
WRITERS: dict[str, Callable[..., int]] = {"coco": write_coco, "labelme": write_labelme, "cvat": write_cvat}
IMPORT_FORMATS = tuple(READERS)
EXPORT_FORMATS = tuple(WRITERS)


def read_annotations(fmt: str, src: str | Path, class_table: str | Path | None = None,
                     crowd: str = "cell") -> Annotations:
    """Parse ``src`` in format ``fmt``; a malformed file is a CscError naming it and the place in it. ``crowd``
    (COCO): iscrowd=1 annotations as one cell each ("cell") or left out ("skip")."""
    src = Path(src)
    if fmt not in READERS:
        raise CscError(f"unknown annotation format {fmt!r}", fix=f"use one of {', '.join(IMPORT_FORMATS)}")
    if not src.exists():
        raise CscError("annotations not found", path=src, fix="pass the exported file (or folder)")
    if fmt != "masks" and class_table is not None:
        raise CscError("--class-table is for the masks format only", fix="other formats name their classes")
    if fmt != "coco" and crowd != CROWD_RULES[0]:
        raise CscError("--crowd is for the coco format only", fix="other formats have no crowd regions")
    if fmt == "masks":
        source = read_masks(src, None if class_table is None else Path(class_table))
    else:
        source = read_coco(src, crowd) if fmt == "coco" else READERS[fmt](src)
    source.src = src.resolve()
    return source


def export_dataset(root: str | Path, fmt: str, out: str | Path, on_image: Callable[[], None] | None = None) -> int:
    """Write a mask dataset's cells to ``out`` in ``fmt`` (a file; a folder for LabelMe); returns the cell count."""
    if fmt not in WRITERS:
        raise CscError(f"cannot export to {fmt!r}", fix=f"use one of {', '.join(EXPORT_FORMATS)}")
    out = Path(out)
    # Before any image is read (the file formats are written whole at the end): LabelMe's writer makes the folder.
    if fmt != "labelme" and out.is_dir():
        raise CscError(f"--out is a folder; {fmt} is written as one file", path=out,
                       fix="name a file, e.g. one inside that folder")
    dataset = open_dataset(root)
    description = f"auto-csc dataset {Path(root).resolve().name} ({dataset.meta.get('source', 'unknown source')})"
    return WRITERS[fmt](exported_images(dataset, on_image), dataset.classes, out, description)


__all__ = ["Annotations", "CROWD_RULES", "EXPORT_FORMATS", "IMPORT_FORMATS", "export_dataset", "read_annotations"]
