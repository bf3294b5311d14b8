"""COCO instance segmentation JSON: polygons (on pixel corners) and RLE, read and drawn with pycocotools.

An annotation without a segmentation but with a ``bbox`` is a box (Roboflow's and CVAT's detection exports): a
file of boxes alone imports as a count-only boxes dataset. ``iscrowd: 1`` is read as one cell by default, since
CVAT marks every mask so; ``crowd="skip"`` leaves out COCO's own crowd regions (several objects under one mask).
A category that only names the others' supercategory and has no annotation (Roboflow's dataset-wide parent,
e.g. ``RBC-WBC`` over ``rbc`` and ``wbc``) is not a class.

Export writes each cell as compressed RLE, COCO's exact mask encoding (polygons would move outlines by up to
half a pixel on the way back in); CVAT, Detectron2 and pycocotools read it.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from runtime.data.annotations.cells import ExportedImage
from runtime.data.annotations.model import Annotations, Box, ImageAnnotation, Polygon, Rle, load_json, number
from runtime.data.annotations.rle import coco_rle
from runtime.errors import CscError
from runtime.io.imageio import write_text


CROWD_RULES = ("cell", "skip")  # iscrowd=1: one cell each, or left out


def read_coco(src: Path, crowd: str = "cell") -> Annotations:
    if crowd not in CROWD_RULES:
        raise CscError(f"unknown crowd rule {crowd!r}", fix=f"use one of {', '.join(CROWD_RULES)}")
    data = load_json(src)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations")):
        raise CscError("not a COCO instances file: 'images' and 'annotations' lists expected", path=src,
                       fix="export 'COCO 1.0' (instance segmentation) from the labelling tool")
    categories = {}
    for c in data.get("categories") or []:
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise CscError(f"a category needs 'id' and 'name', got {c!r}", path=src)
        _check_once(categories, c["id"], str(c["name"]), "category", src)
        categories[c["id"]] = str(c["name"])
    images: dict = {}
    for entry in data["images"]:
        if not isinstance(entry, dict) or "id" not in entry or "file_name" not in entry:
            raise CscError(f"an image entry needs 'id' and 'file_name', got {_short(entry)}", path=src)
        size = None
        if "height" in entry and "width" in entry:
            size = (int(number(entry["height"], "image height", src)), int(number(entry["width"], "image width", src)))
        name = str(entry["file_name"]).replace("\\", "/").rsplit("/", 1)[-1]
        _check_once({k: v.name for k, v in images.items()}, entry["id"], name, "image", src)
        images[entry["id"]] = ImageAnnotation(name, f"{src.name} image id {entry['id']}", size)
    source = Annotations("coco", "masks", list(images.values()), files={src})
    crowds = 0
    for ann in data["annotations"]:
        where = f"annotation id {ann.get('id', '?')}" if isinstance(ann, dict) else repr(ann)
        if not isinstance(ann, dict) or ann.get("image_id") not in images:
            raise CscError(f"{where} refers to an image id not in 'images'", path=src)
        if ann.get("category_id") not in categories:
            raise CscError(f"{where} has category_id {ann.get('category_id')!r}; the categories are "
                           + ", ".join(f"{k} ({v})" for k, v in categories.items()), path=src)
        crowds += ann.get("iscrowd") == 1
        if ann.get("iscrowd") == 1 and crowd == "skip":
            source.ignored["crowd region"] += 1
            continue
        label, image = categories[ann["category_id"]], images[ann["image_id"]]
        shape = _shape(ann.get("segmentation"), label, image, where, src) or _box(ann.get("bbox"), label, where, src)
        if shape is None:
            source.ignored["without a segmentation"] += 1
        else:
            image.shapes.append(shape)
    source.declared = _classes(data, categories, source)
    if crowds:
        rule = "imported as one cell each" if crowd == "cell" else "left out"
        source.notes.append(f"{crowds} iscrowd=1 annotations {rule} (--crowd {crowd}; CVAT marks every mask so, "
                            "while COCO's own crowd regions hold several objects: --crowd skip)")
    return source


def _classes(data: dict, categories: dict, source: Annotations) -> list[str]:
    """The category names in order, less a parent that only names the others' supercategory (Roboflow's)."""
    used = {s.label for image in source.images for s in image.shapes}
    parents = {str(c.get("supercategory")) for c in data.get("categories") or [] if c.get("supercategory") != c["name"]}
    names = list(categories.values())
    left_out = [n for n in names if n in parents and n not in used]
    for name in left_out:
        source.notes.append(f"category {name!r} left out: the other categories' supercategory, with no annotation")
    return [n for n in names if n not in left_out]


def _box(bbox, label: str, where: str, src: Path) -> Box | None:
    """A COCO ``[x, y, width, height]`` box (pixel corners), or None where the annotation has none."""
    if not isinstance(bbox, list) or not bbox:
        return None
    if len(bbox) != 4:
        raise CscError(f"{where}: a bbox needs [x, y, width, height], got {_short(bbox)}", path=src)
    x, y, w, h = (number(v, f"{where} bbox", src) for v in bbox)
    return Box(label, x, y, x + w, y + h)


def _check_once(seen: dict, key: object, name: str, what: str, src: Path) -> None:
    """An error where an id is not a number or a string, or names two things: the later one silently took the
    earlier's annotations (two categories of one id counted every cell of the first as the second)."""
    if not isinstance(key, (int, str)):
        raise CscError(f"a {what} id must be a number, got {key!r}", path=src)
    if seen.get(key, name) != name:
        raise CscError(f"{what} id {key!r} is given twice, as {seen[key]!r} and {name!r}", path=src,
                       fix=f"give each {what} an id of its own, or export the annotations again")


def _shape(segmentation, label: str, image: ImageAnnotation, where: str, src: Path):
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and isinstance(counts, (str, list))):
            raise CscError(f"{where}: an RLE segmentation needs 'size' [h, w] and 'counts'", path=src)
        if image.size is not None and tuple(size) != image.size:
            raise CscError(f"{where}: RLE size {size} differs from its image's {list(image.size)}", path=src)
        return Rle(label, segmentation, f"{src.name} {where}")
    if isinstance(segmentation, list) and segmentation:
        parts = []
        for polygon in segmentation:
            if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
                raise CscError(f"{where}: a polygon needs at least 3 x, y pairs", path=src)
            parts.append(np.array([number(v, f"{where} polygon", src) for v in polygon]).reshape(-1, 2))
        return Polygon(label, parts, corners=True)
    return None


def write_coco(images: Iterable[ExportedImage], classes: list[str], out: Path, description: str) -> int:
    """Write one COCO file with every cell as RLE; returns the number of cells."""
    ids = {name: i for i, name in enumerate(classes) if i}
    doc: dict = {"info": {"description": description}, "licenses": [], "images": [], "annotations": [],
                 "categories": [{"id": i, "name": n, "supercategory": "cell"} for n, i in ids.items()]}
    for image_id, image in enumerate(images, start=1):
        doc["images"].append({"id": image_id, "file_name": image.name, "width": image.width, "height": image.height})
        for cell in image.cells:
            doc["annotations"].append({
                "id": len(doc["annotations"]) + 1, "image_id": image_id, "category_id": ids[cell.label],
                "segmentation": coco_rle(cell.mask, cell.top, cell.left, image.height, image.width),
                "area": int(cell.mask.sum()), "iscrowd": 0,
                "bbox": [cell.left, cell.top, cell.mask.shape[1], cell.mask.shape[0]]})
    write_text(out, json.dumps(doc) + "\n")
    return len(doc["annotations"])


def _short(value) -> str:
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."
