"""LabelMe: one JSON file per image; polygons with vertices on pixel centres, drawn as LabelMe draws them (Pillow).

Read: ``polygon``, ``rectangle``, ``circle`` and ``mask`` shapes (other types are not cells and are counted as
ignored); shapes sharing a label and a ``group_id`` are one cell. A file whose image is not in --images but
embedded (``imageData``, e.g. ``imagePath`` naming the JSON itself) brings its image along: it is written to the
dataset as ``<JSON stem>.png|.jpg``.

Export: each cell as LabelMe draws it back exactly. A cell whose outer contour, drawn as LabelMe draws polygons
(Pillow), gives exactly its pixels is written as that polygon (one per part, sharing a ``group_id``, for a cell
split in parts by an overlapping one), which stays editable in LabelMe. Any other cell (one with a hole: polygons
carry none) is written as a ``mask`` shape, LabelMe 5/6's bitmap: ``points`` the inclusive corner pixels
``[[x0, y0], [x1, y1]]`` of its box, ``mask`` a base64 8-bit greyscale PNG of the box's crop, 1 on the cell and 0
elsewhere, as LabelMe 6.3.1 writes it (app.py ``_shape_to_dict``: ``img_arr_to_b64(mask.astype(np.uint8))``) and
reads it (utils/shape.py ``shapes_to_label``: ``mask[y1 : y2 + 1, x1 : x2 + 1] = shape["mask"]``, points
``astype(int)``; _label_file.py: the PNG ``astype(bool)``). A mask paints only the cell's own pixels, so cells
lying in a hole come back too; cells are still written largest first. A part one pixel wide gives a contour of one
or two points, which LabelMe refuses as a polygon: its last point is repeated up to three, which draws the same
pixels.
"""
from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from runtime.data.annotations.cells import Cell, ExportedImage
from runtime.data.annotations.model import (Annotations, CropMask, EmbeddedImage, Group, ImageAnnotation, PillowEllipse,
                                       Polygon, load_json, number)
from runtime.errors import CscError
from runtime.io.imageio import write_text

LABELME_VERSION = "5.5.0"  # the file layout written; LabelMe 4 and 5 read it
# Leading bytes of the encodings LabelMe embeds as imageData (the image file's own bytes, or a PNG it encoded).
_MAGIC = {b"\x89PNG": ".png", b"\xff\xd8\xff": ".jpg", b"II*\x00": ".tif", b"MM\x00*": ".tif", b"BM": ".bmp"}


def read_labelme(src: Path) -> Annotations:
    files = sorted(p for p in src.iterdir() if p.suffix.lower() == ".json") if src.is_dir() else [src]
    if not files:
        raise CscError("no .json files in the folder", path=src, fix="pass LabelMe's output folder or one file")
    source = Annotations("labelme", "masks", [], files=set(files))
    for path in files:
        data = load_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
            raise CscError("not a LabelMe file: a 'shapes' list expected", path=path)
        image_path = str(data.get("imagePath") or path.stem).replace("\\", "/").rsplit("/", 1)[-1]
        size = None
        if data.get("imageHeight") and data.get("imageWidth"):
            size = (int(number(data["imageHeight"], "imageHeight", path)),
                    int(number(data["imageWidth"], "imageWidth", path)))
        image = ImageAnnotation(image_path, path.name, size, embedded=_embedded(data.get("imageData"), path))
        groups: dict[tuple[str, object], Group] = {}
        for i, raw in enumerate(data["shapes"]):
            shape = _shape(raw, f"shape {i}", path, source)
            if shape is None:
                continue
            group_id = raw.get("group_id")
            if group_id is None:
                image.shapes.append(shape)
            elif (shape.label, group_id) in groups:
                groups[shape.label, group_id].members.append(shape)
            else:
                groups[shape.label, group_id] = Group(shape.label, [shape])
                image.shapes.append(groups[shape.label, group_id])
        source.images.append(image)
    return source


def _embedded(image_data: object, path: Path) -> EmbeddedImage | None:
    """The image embedded in the file, if any, to be decoded when written (named after the JSON file, as LabelMe
    names it after the image)."""
    if not image_data:
        return None
    head = str(image_data)[:8]
    try:
        magic = base64.b64decode(head, validate=True)
    except ValueError:  # binascii.Error
        magic = b""
    suffix = next((s for m, s in _MAGIC.items() if magic.startswith(m)), None)
    if suffix is None:
        raise CscError("imageData is not a base64 PNG, JPEG, TIFF or BMP image", path=path,
                       fix="save the file again in LabelMe, or drop imageData and put the image in --images")
    return EmbeddedImage(f"{path.stem}{suffix}", partial(_image_data, path))


def _image_data(path: Path) -> bytes:
    try:
        return base64.b64decode(str(load_json(path)["imageData"]), validate=True)
    except ValueError:  # binascii.Error
        raise CscError("imageData is not valid base64", path=path, fix="save the file again in LabelMe") from None


def _shape(raw: dict, where: str, path: Path, source: Annotations):
    if not isinstance(raw, dict) or "label" not in raw or not isinstance(raw.get("points"), list):
        raise CscError(f"{where} needs 'label' and 'points'", path=path)
    kind = raw.get("shape_type") or "polygon"
    if raw["label"] is None or not str(raw["label"]).strip():  # str(None) made a class named "None"
        raise CscError(f"{where} has no label", path=path, fix="name the shape's class in LabelMe, or delete the shape")
    if not isinstance(raw.get("group_id"), (int, str, type(None))):  # a list or a dict: "unhashable type" before
        raise CscError(f"{where}: group_id must be a number, got {raw['group_id']!r}", path=path)
    label = str(raw["label"])
    try:
        pts = np.array([[number(v, f"{where} points", path) for v in p] for p in raw["points"]], np.float64)
    except (TypeError, ValueError):  # a vertex not a list, or of another length than the others
        raise CscError(f"{where}: points must be [x, y] pairs", path=path) from None
    if pts.ndim != 2 or pts.shape[1] != 2 or not len(pts):
        raise CscError(f"{where}: points must be [x, y] pairs", path=path)
    if kind == "polygon":  # fewer than 3 points draw a dot or a line, as LabelMe's own rasteriser (PIL) does
        return Polygon(label, [pts], corners=False)
    if kind == "rectangle" and len(pts) == 2:
        (x1, y1), (x2, y2) = pts
        return Polygon(label, [np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])], corners=False)
    if kind == "circle" and len(pts) == 2:
        (cx, cy), (px, py) = pts
        r = float(np.hypot(px - cx, py - cy))
        return PillowEllipse(label, cx, cy, r, r)
    if kind == "mask" and raw.get("mask"):
        try:
            data = np.frombuffer(base64.b64decode(str(raw["mask"])), np.uint8)
        except ValueError:  # binascii.Error: a cut or edited string
            data = np.zeros(0, np.uint8)
        crop = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
        if crop is None:
            raise CscError(f"{where}: its mask is not a base64 PNG", path=path)
        # the box's first corner, truncated as LabelMe 6.3.1's shapes_to_label truncates it (astype(int))
        return CropMask(label, int(pts[0, 1]), int(pts[0, 0]), crop > 0)
    source.ignored[kind] += 1
    return None


def write_labelme(images: Iterable[ExportedImage], classes: list[str], out: Path, description: str) -> int:
    """One ``<stem>.json`` per image in the folder ``out``, its imagePath relative to it; returns the cells.
    (LabelMe files list no classes and carry no description: those arguments only keep the writers alike.)"""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file of that name, or on the way to it
        why = "a file of that name exists" if out.exists() else f"cannot make the folder ({err.strerror})"
        raise CscError(why, path=out,
                       fix="name a folder: labelme is written as one JSON file per image") from None
    n = 0
    for image in images:
        shapes = []
        for k, cell in enumerate(sorted(image.cells, key=lambda c: -c.mask.size)):  # enclosing cells first
            parts = _polygons(cell)
            if _draws_exactly(parts, cell, image.height, image.width):
                shapes += [{"label": cell.label, "points": part.tolist(), "group_id": k if len(parts) > 1 else None,
                            "description": "", "shape_type": "polygon", "flags": {}, "mask": None} for part in parts]
            else:
                shapes.append(_mask_shape(cell))
            n += 1
        doc = {"version": LABELME_VERSION, "flags": {}, "shapes": shapes,
               "imagePath": os.path.relpath(image.path, out), "imageData": None,
               "imageHeight": image.height, "imageWidth": image.width}
        write_text(out / f"{Path(image.name).stem}.json", json.dumps(doc, indent=1) + "\n")
    return n


def _polygons(cell: Cell) -> list[np.ndarray]:
    """The cell's outer contours, vertices on pixel centres in image coordinates, each of three points or more."""
    contours, _ = cv2.findContours(cell.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [_three_or_more(c.reshape(-1, 2) + (cell.left, cell.top)) for c in contours]


def _draws_exactly(parts: list[np.ndarray], cell: Cell, h: int, w: int) -> bool:
    """Whether the polygons, drawn on the image as LabelMe draws them (Pillow), fill exactly the cell's pixels."""
    patch = Polygon(cell.label, [p.astype(np.float64) for p in parts], corners=False).rasterise(h, w)
    if patch is None:
        return False
    top, left, crop = patch
    return (top, left) == (cell.top, cell.left) and np.array_equal(crop, cell.mask)


def _mask_shape(cell: Cell) -> dict:
    """The cell as a LabelMe ``mask`` shape: its box's inclusive corner pixels and a 0/1 8-bit PNG of its crop."""
    mh, mw = cell.mask.shape
    png = cv2.imencode(".png", cell.mask.astype(np.uint8))[1].tobytes()
    return {"label": cell.label, "points": [[cell.left, cell.top], [cell.left + mw - 1, cell.top + mh - 1]],
            "group_id": None, "description": "", "shape_type": "mask", "flags": {},
            "mask": base64.b64encode(png).decode("ascii")}


def _three_or_more(points: np.ndarray) -> np.ndarray:
    """A contour of a part one pixel wide (one or two points: a dot or a line) as a polygon LabelMe accepts (it
    asserts more than two points): the last point repeated, which fills the same pixels."""
    return np.concatenate([points, np.repeat(points[-1:], 3 - len(points), axis=0)]) if len(points) < 3 else points
