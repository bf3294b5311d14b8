"""CVAT for images 1.1 (XML): polygons (vertices on pixel corners, drawn as CVAT's exporter draws them, with
pycocotools), masks (CVAT's run-length encoding of a box) and ellipses; cells are stacked by ``z_order``.
``<box>`` and ``<points>`` (every point of one is a cell), CVAT's counting tools, are count-only marks.

A project export names each image's ``subset`` (Train, Validation, …); its images lie in ``images/<subset>/``,
where every subset may hold a file of the same name.

Export writes every cell as a ``<mask>`` (exact, and editable with CVAT's brush) in a task-less file that
CVAT's "Upload annotations" (format "CVAT 1.1") reads into a task holding the same images.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from runtime.annotations.cells import ExportedImage
from runtime.annotations.model import (Annotations, Box, CropMask, Ellipse, ImageAnnotation, Point, Polygon,
                                       number)
from runtime.annotations.rle import cvat_mask, cvat_rle
from runtime.errors import CscError
from runtime.imageio import write_text

CELL_TAGS = ("polygon", "mask", "ellipse")
MARK_TAGS = ("box", "points")


def read_cvat(src: Path) -> Annotations:
    try:
        root = ET.parse(src).getroot()
    except ET.ParseError as err:
        line, column = err.position
        reason = str(err).rsplit(": line", 1)[0]
        raise CscError(f"malformed XML at line {line}, column {column + 1}: {reason}", path=src,
                       fix="re-export 'CVAT for images 1.1' from CVAT") from None
    except OSError as err:
        raise CscError(f"cannot read ({err.strerror})", path=src) from None
    if root.tag != "annotations" or root.find("image") is None and root.find("track") is not None:
        raise CscError("not a 'CVAT for images 1.1' file (no <annotations> with <image> elements)", path=src,
                       fix="export the task as 'CVAT for images 1.1', not 'CVAT for video'")
    declared = [el.findtext("name") for el in root.iterfind("meta//labels/label") if el.findtext("name")]
    source = Annotations("cvat", "masks", [], declared=list(dict.fromkeys(declared)), files={src})
    for el in root.iterfind("image"):
        name = el.get("name")
        if not name:
            raise CscError(f"an <image> without a name (id {el.get('id')!r})", path=src)
        subset = el.get("subset") or None
        where = f"{src.name} <image name={name!r}{f' subset={subset!r}' if subset else ''}>"
        size = None
        if el.get("height") and el.get("width"):
            size = (int(number(el.get("height"), f"{where} height", src)),
                    int(number(el.get("width"), f"{where} width", src)))
        image = ImageAnnotation(name.replace("\\", "/").rsplit("/", 1)[-1], where, size, subset=subset)
        stacked = []
        for order, child in enumerate(el):
            if child.tag not in CELL_TAGS + MARK_TAGS:
                source.ignored[child.tag] += 1
                continue
            z = int(number(child.get("z_order", 0), f"{where} z_order", src))
            shapes = _marks(child, where, src) if child.tag in MARK_TAGS else [_shape(child, where, src)]
            stacked += [(z, order, shape) for shape in shapes]
        image.shapes = [shape for _, _, shape in sorted(stacked, key=lambda t: t[:2])]
        source.images.append(image)
    return source


def _marks(el: ET.Element, where: str, src: Path) -> list[Box | Point]:
    """A ``<box>`` (corners, pixel coordinates) or the points of a ``<points>`` element, one cell each."""
    label = el.get("label")
    if label is None:
        raise CscError(f"{where}: a <{el.tag}> without a label", path=src)
    what = f"{where} <{el.tag} label={label!r}>"
    if el.tag == "box":
        return [Box(label, *(number(el.get(k), f"{what} {k}", src) for k in ("xtl", "ytl", "xbr", "ybr")))]
    return [Point(label, x, y) for x, y in _points(el, what, src)]


def _points(el: ET.Element, what: str, src: Path) -> np.ndarray:
    """The ``points="x,y;x,y;…"`` of an element as (N, 2) floats."""
    try:
        pairs = [p.split(",") for p in (el.get("points") or "").split(";") if p]
        return np.array([[number(x, what, src), number(y, what, src)] for x, y in pairs], np.float64).reshape(-1, 2)
    except ValueError:
        raise CscError(f"{what}: points must be 'x,y;x,y;…'", path=src) from None


def _shape(el: ET.Element, where: str, src: Path):
    label = el.get("label")
    if label is None:
        raise CscError(f"{where}: a <{el.tag}> without a label", path=src)
    what = f"{where} <{el.tag} label={label!r}>"
    if el.tag == "polygon":
        pts = _points(el, what, src)
        if len(pts) < 3:
            raise CscError(f"{what}: a polygon needs at least 3 points", path=src)
        return Polygon(label, [pts], corners=True)
    if el.tag == "ellipse":
        cx, cy, rx, ry = (number(el.get(k), f"{what} {k}", src) for k in ("cx", "cy", "rx", "ry"))
        # CVAT's coordinates are on pixel corners; Ellipse takes pixel centres.
        return Ellipse(label, cx - 0.5, cy - 0.5, rx, ry, number(el.get("rotation", 0), f"{what} rotation", src))
    left, top, width, height = (int(number(el.get(k), f"{what} {k}", src)) for k in ("left", "top", "width", "height"))
    try:
        runs = [int(v) for v in (el.get("rle") or "").replace(" ", "").split(",") if v]
        crop = cvat_mask(runs, height, width)
    except ValueError as err:
        raise CscError(f"{what}: bad rle ({err})", path=src) from None
    return CropMask(label, top, left, crop)


def write_cvat(images: Iterable[ExportedImage], classes: list[str], out: Path, description: str) -> int:
    """One 'CVAT for images 1.1' XML file with every cell as a mask; returns the number of cells."""
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    ET.SubElement(task, "name").text = description
    size = ET.SubElement(task, "size")
    ET.SubElement(task, "mode").text = "annotation"
    labels = ET.SubElement(task, "labels")
    for name in classes[1:]:
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = name
        ET.SubElement(label, "type").text = "mask"
    n_images = n_cells = 0
    for n_images, image in enumerate(images, start=1):
        el = ET.SubElement(root, "image", id=str(n_images - 1), name=image.name, width=str(image.width),
                           height=str(image.height))
        for z, cell in enumerate(image.cells):
            h, w = cell.mask.shape
            ET.SubElement(el, "mask", label=cell.label, source="file", occluded="0",
                          rle=", ".join(map(str, cvat_rle(cell.mask))), left=str(cell.left), top=str(cell.top),
                          width=str(w), height=str(h), z_order=str(z))
            n_cells += 1
    size.text = str(n_images)
    ET.indent(root)
    write_text(out, ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n")
    return n_cells
