"""CVAT for images 1.1 (XML): polygons (vertices on pixel corners, drawn as CVAT's exporter draws them, with
pycocotools), masks (CVAT's run-length encoding of a box) and ellipses (drawn as CVAT's own mask exports draw
them, `CvatEllipse`); cells are stacked by ``z_order``.
``<box>`` and ``<points>`` (every point of one is a cell), CVAT's counting tools, are count-only marks.

A project export names each image's ``subset`` (Train, Validation, …); its images lie in ``images/<subset>/``,
where every subset may hold a file of the same name. An image's name keeps the folders it was uploaded in
(``day1/a.png``), and exports keep them under ``images/`` (in the subset's folder).

Export writes every cell as a ``<mask>`` (exact, and editable with CVAT's brush) in a task-less file that
CVAT's "Upload annotations" (format "CVAT 1.1") reads into a task holding the same images.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from runtime.data.annotations.cells import ExportedImage
from runtime.data.annotations.model import (Annotations, Box, CropMask, Ellipse, ImageAnnotation, Patch, Point,
                                       Polygon, number)
from runtime.data.annotations.rle import cvat_mask, cvat_rle
from runtime.errors import CscError
from runtime.io.imageio import write_text

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
        folder, _, base = name.replace("\\", "/").rpartition("/")
        # Only a relative folder, below --images: not an absolute path's root, drive or way up.
        folder = "/".join(p for p in folder.split("/") if p not in ("", ".", "..") and not p.endswith(":"))
        image = ImageAnnotation(base, where, size, subset=subset, folder=folder or None)
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
        if rx < 0 or ry < 0:
            raise CscError(f"{what}: an ellipse's rx and ry must not be negative", path=src)
        return CvatEllipse.from_xml(label, cx, cy, rx, ry, number(el.get("rotation", 0), f"{what} rotation", src))
    left, top, width, height = (int(number(el.get(k), f"{what} {k}", src)) for k in ("left", "top", "width", "height"))
    try:
        runs = [int(v) for v in (el.get("rle") or "").replace(" ", "").split(",") if v]
        crop = cvat_mask(runs, height, width)
    except ValueError as err:
        raise CscError(f"{what}: bad rle ({err})", path=src) from None
    return CropMask(label, top, left, crop)


class CvatEllipse(Ellipse):
    """An ellipse drawn as CVAT draws it into every mask it exports (COCO, Segmentation mask, Datumaro, …):
    `EllipsesToMasks.convert_ellipse` in CVAT's cvat/apps/dataset_manager/formats/transformations.py (cvat-ai/cvat
    @ 03501ddb9b754e318dd656a94eafc92ecce4f16f; called for every ellipse by bindings.py's `_convert_shape`) fills
    ``cv2.ellipse(mat, (round(cx), round(cy)), (round(rx), round(ry)), rotation, 0, 360, 255, thickness=-1)``
    on the frame. The centre and axes are rounded to whole pixels (Python's round, half to even) and the centre
    taken as a pixel *index*, so a cell CVAT shows centred on the corner (10, 6) is written centred on pixel
    (10, 6), and OpenCV's fill includes the pixels its outline passes through: CVAT's masks are about half a
    pixel larger in radius than the geometric ellipse (13 % of the area at r = 4, 4 % at r = 20). Datumaro does
    not rasterise ellipses (its CVAT reader skips them; `Ellipse.as_polygon` serves IoU only), so CVAT's masks
    are the tool's own drawing of a CVAT ellipse. ``cx, cy, rx, ry`` are held as CVAT holds them (`from_xml`)."""

    @classmethod
    def from_xml(cls, label: str, cx: float, cy: float, rx: float, ry: float, rotation: float) -> CvatEllipse:
        """CVAT's upload of a 'CVAT 1.1' file (formats/cvat.py, `load_anno`) keeps an ellipse as the points
        cx, cy, cx + rx, cy - ry with the last two written to 2 decimals, and its export takes the axes back as
        differences of those: a radius of .5 can come back a hair either side and round either way."""
        right, top = float(f"{cx + rx:.2f}"), float(f"{cy - ry:.2f}")
        return cls(label, cx, cy, right - cx, cy - top, rotation)

    def _drawn(self) -> tuple[tuple[int, int], tuple[int, int]]:
        centre, axes = (round(self.cx), round(self.cy)), (round(self.rx), round(self.ry))
        return centre, axes

    def clipped(self, h: int, w: int) -> bool:
        (x, y), (a, b) = self._drawn()
        r = max(a, b)
        return x - r < 0 or y - r < 0 or x + r > w - 1 or y + r > h - 1

    def rasterise(self, h: int, w: int) -> Patch | None:
        (x, y), axes = self._drawn()
        r = max(axes) + 1  # OpenCV's fill stays within a pixel of the axes, whatever the rotation
        left, top = max(0, x - r), max(0, y - r)
        right, bottom = min(w, x + r + 1), min(h, y + r + 1)
        if right <= left or bottom <= top:
            return None
        crop = np.zeros((bottom - top, right - left), np.uint8)
        # Drawn in its window, not the frame: OpenCV's integer drawing moves with a whole-pixel shift of the centre.
        cv2.ellipse(crop, (x - left, y - top), axes, self.angle_deg, 0, 360, 1, thickness=-1)
        return (top, left, crop.astype(bool)) if crop.any() else None


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
