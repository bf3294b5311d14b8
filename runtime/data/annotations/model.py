"""What the format readers hand to the dataset writer: per image, its cells as shapes (segmentation formats) or
marks (count formats), with class names spelled as the source spells them.

Shapes rasterise into a patch (top, left, bool crop) clipped to the image, so composing hundreds of cells on a
large frame never allocates a full-frame mask per cell. Each shape is drawn as the tool that wrote it draws it,
so that a cell keeps the pixels its author saw: COCO and CVAT put a polygon's vertices on pixel *corners* (pixel
(x, y) covers [x, x+1) × [y, y+1)) and rasterise with pycocotools; LabelMe puts them on pixel *centres* and draws
with Pillow's ImageDraw (``polygon``, ``rectangle``, ``ellipse``), whose rules `_pillow_polygon` and
`PillowEllipse` follow. Each reader says which its file uses.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from runtime.errors import CscError
from runtime.io.imageio import stem_of

Patch = tuple[int, int, np.ndarray]  # top, left, bool crop inside the image
FAR_PX = 2**20  # polygons are cut this far beyond the frame: within it pycocotools and Pillow's rule are safe


def _window(x0: float, y0: float, x1: float, y1: float, h: int, w: int) -> tuple[int, int, int, int] | None:
    """Integer pixel window [top, bottom) × [left, right) covering a pixel-coordinate extent, clipped to the image."""
    left, top = max(0, math.floor(x0)), max(0, math.floor(y0))
    right, bottom = min(w, math.floor(x1) + 1), min(h, math.floor(y1) + 1)
    if right <= left or bottom <= top:
        return None
    return top, bottom, left, right


def _nonempty(top: int, left: int, crop: np.ndarray) -> Patch | None:
    return (top, left, crop) if crop.any() else None


@dataclass
class Polygon:
    """One cell as one or more polygons (a COCO multi-part segmentation, a LabelMe group)."""

    label: str
    parts: list[np.ndarray]  # each (N, 2) float: x, y
    corners: bool  # vertices on pixel corners (COCO, CVAT) or on pixel centres (LabelMe)

    def clipped(self, h: int, w: int) -> bool:
        pts = np.concatenate(self.parts)
        hi_x, hi_y = (w, h) if self.corners else (w - 1, h - 1)
        return bool((pts < 0).any() or (pts[:, 0] > hi_x).any() or (pts[:, 1] > hi_y).any())

    def rasterise(self, h: int, w: int) -> Patch | None:
        # Both fills walk every edge whole, off the frame too: a vertex at 1e12 crashed pycocotools (a segfault,
        # the dataset half-written) and asked Pillow's rule for terabytes. A polygon reaching further than
        # FAR_PX beyond the frame is cut there first; so far out, the cut moves the edges inside the frame by a
        # negligible fraction of a pixel. Polygons that stay nearer are drawn untouched, as their tool draws them.
        parts = [_clip_polygon(p, (-FAR_PX, -FAR_PX, w + FAR_PX, h + FAR_PX)) for p in self.parts]
        parts = [p for p in parts if len(p)]
        if not parts:
            return None
        # pycocotools takes the vertices as they are; Pillow (LabelMe) truncates them to integers before drawing
        if not self.corners:
            parts = [np.trunc(p).astype(np.int64) for p in parts]
        pts = np.concatenate(parts)
        win = _window(pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max(), h, w)
        if win is None:
            return None
        top, bottom, left, right = win
        if self.corners:
            from runtime.data.annotations.rle import coco_mask

            shifted = [(p - (left, top)).ravel().tolist() for p in parts]
            return _nonempty(top, left, coco_mask(shifted, bottom - top, right - left))
        crop = np.zeros((bottom - top, right - left), bool)
        for part in parts:
            crop |= _pillow_polygon(part - (left, top), bottom - top, right - left)
        return _nonempty(top, left, crop)


def _clip_polygon(v: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Polygon ``v`` (N, 2) cut to ``box`` (x0, y0, x1, y1) by Sutherland–Hodgman, or ``v`` itself where it lies
    inside. A concave polygon stays one, joined along the box's sides by edges that enclose nothing."""
    x0, y0, x1, y1 = box
    if not ((v[:, 0] < x0).any() or (v[:, 1] < y0).any() or (v[:, 0] > x1).any() or (v[:, 1] > y1).any()):
        return v
    for axis, bound, sign in ((0, x0, 1), (0, x1, -1), (1, y0, 1), (1, y1, -1)):
        inside = sign * (v[:, axis] - bound) >= 0
        kept = []
        for prev, cur, prev_in, cur_in in zip(np.roll(v, 1, axis=0), v, np.roll(inside, 1), inside):
            if prev_in != cur_in:
                kept.append(prev + (bound - prev[axis]) / (cur[axis] - prev[axis]) * (cur - prev))
            if cur_in:
                kept.append(cur)
        v = np.array(kept, np.float64).reshape(-1, 2)
    return v


def _spans(rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, h: int, w: int) -> np.ndarray:
    """bool (h, w) crop with the pixels ``starts..ends`` (inclusive) of each row set; spans may overlap."""
    keep = (rows >= 0) & (rows < h) & (ends >= starts)
    rows = rows[keep]
    edges = np.zeros((h, w + 1), np.int32)
    np.add.at(edges, (rows, np.clip(starts[keep], 0, w)), 1)
    np.add.at(edges, (rows, np.clip(ends[keep] + 1, 0, w)), -1)
    return np.cumsum(edges, axis=1)[:, :w] > 0


def _pillow_polygon(v: np.ndarray, h: int, w: int) -> np.ndarray:
    """bool (h, w) crop of a polygon with integer vertices ``v`` (x, y in the crop) filled as Pillow's
    ``ImageDraw.polygon`` fills it, LabelMe's own rasteriser; a fill that rounds the vertices instead, or includes
    every pixel its outline touches (OpenCV's), differs from it by percents of a cell's pixels. Pillow's rule: on
    each pixel row the edges' crossings (float32) are sorted and paired, each pair filled from the pixel nearest
    the left crossing to the one nearest the right; an edge's bottom row counts twice unless it is the polygon's
    last, so a vertex where the outline turns fills its pixel; horizontal edges are drawn whole. (Pillow's extra
    rule for corners whose crossings fall exactly on a pixel is left out: it moves single pixels there, 0.04 % of
    the pixels of random polygons and none in LabelMe's own example files.)"""
    x0, y0 = v[:, 0], v[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    moves = (x0 != x1) | (y0 != y1)  # Pillow skips repeated vertices; a lone point stays a dot
    if moves.any():
        x0, y0, x1, y1 = x0[moves], y0[moves], x1[moves], y1[moves]
    flat = y0 == y1
    rows, starts, ends = [y0[flat]], [np.minimum(x0, x1)[flat]], [np.maximum(x0, x1)[flat]]
    down = ~flat & (y0 < y1)  # each sloped edge from its top vertex to its bottom one
    tx, ty = np.where(down, x0, x1)[~flat], np.minimum(y0, y1)[~flat]
    bx, by = np.where(down, x1, x0)[~flat], np.maximum(y0, y1)[~flat]
    if tx.size:
        slope = (bx - tx).astype(np.float32) / (by - ty).astype(np.float32)
        n = by - ty + 1
        edge = np.repeat(np.arange(tx.size), n)
        ys = np.arange(edge.size) - np.repeat(np.cumsum(n) - n, n) + ty[edge]
        xs = (ys - ty[edge]).astype(np.float32) * slope[edge] + tx[edge].astype(np.float32)
        twice = (ys == by[edge]) & (ys < by.max())
        ys, xs = np.concatenate([ys, ys[twice]]), np.concatenate([xs, xs[twice]])
        order = np.lexsort((xs, ys))
        ys, xs = ys[order], xs[order]
        rank = np.arange(ys.size) - np.searchsorted(ys, ys)  # place among its row's crossings
        first = np.flatnonzero((rank % 2 == 0) & (np.r_[ys[1:], -1] == ys))  # a pair's left crossing; an odd
        rows.append(ys[first])  # last one is left unpaired, as Pillow leaves it
        starts.append(np.floor(xs[first] + np.float32(0.5)).astype(np.int64))
        ends.append(np.ceil(xs[first + 1] - np.float32(0.5)).astype(np.int64))
    return _spans(np.concatenate(rows), np.concatenate(starts), np.concatenate(ends), h, w)


@dataclass
class Ellipse:
    """A cell drawn as an ellipse (CVAT) or a circle (LabelMe); centre in pixel-centre coordinates."""

    label: str
    cx: float
    cy: float
    rx: float
    ry: float
    angle_deg: float = 0.0

    def clipped(self, h: int, w: int) -> bool:
        r = max(self.rx, self.ry)
        return bool(self.cx - r < 0 or self.cy - r < 0 or self.cx + r > w - 1 or self.cy + r > h - 1)

    def check_near(self, h: int, w: int) -> None:
        """An error where the ellipse reaches further than FAR_PX beyond an h × w frame (or is not a number): a
        corrupt shape, which OpenCV refused with a traceback ("Can't parse 'axes'") and Pillow's walk, a pixel at a
        time, would have taken hours to draw."""
        r = max(self.rx, self.ry)
        if not (r < FAR_PX and -FAR_PX < self.cx < w + FAR_PX and -FAR_PX < self.cy < h + FAR_PX):
            raise CscError(f"an ellipse of radius {r:g} px at ({self.cx:g}, {self.cy:g}) reaches far beyond the "
                           f"{w}×{h} px image: a corrupt shape", fix="correct or delete it in the labelling tool")

    def rasterise(self, h: int, w: int) -> Patch | None:
        self.check_near(h, w)
        r = max(self.rx, self.ry)
        win = _window(self.cx - r, self.cy - r, self.cx + r, self.cy + r, h, w)
        if win is None:
            return None
        top, bottom, left, right = win
        crop = np.zeros((bottom - top, right - left), np.uint8)
        shift = 4  # sub-pixel centre and axes: cv2.ellipse takes fixed-point coordinates with this many bits
        centre = (int(round((self.cx - left) * 16)), int(round((self.cy - top) * 16)))
        axes = (int(round(self.rx * 16)), int(round(self.ry * 16)))
        cv2.ellipse(crop, centre, axes, self.angle_deg, 0, 360, 1, thickness=-1, shift=shift)
        return _nonempty(top, left, crop.astype(bool))


class PillowEllipse(Ellipse):
    """An axis-aligned ellipse (LabelMe's circle) drawn as Pillow's ``ImageDraw.ellipse`` draws it on its bounding
    box: the box's corners truncated to integers and its edge pixels included, so the cell comes out about half a
    pixel larger in radius than the geometric ellipse that OpenCV draws (3–5 % of a cell's area)."""

    def rasterise(self, h: int, w: int) -> Patch | None:
        self.check_near(h, w)
        x0, y0 = int(self.cx - self.rx), int(self.cy - self.ry)  # int() truncates toward zero, as Pillow does
        x1, y1 = int(self.cx + self.rx), int(self.cy + self.ry)
        win = _window(x0, y0, x1, y1, h, w)
        if win is None or x0 == x1 and y0 == y1:  # Pillow draws nothing in a box of one pixel
            return None
        top, bottom, left, right = win
        a, b = x1 - x0, y1 - y0
        reach = _quarter_reach(a, b)
        ys, rs = np.array(list(reach), np.int64), np.array(list(reach.values()), np.int64)
        rows = np.concatenate([(b - ys) // 2, (b + ys) // 2]) + y0 - top  # each row above and below the centre
        starts, ends = np.tile((a - rs) // 2 + x0 - left, 2), np.tile((a + rs) // 2 + x0 - left, 2)
        return _nonempty(top, left, _spans(rows, starts, ends, bottom - top, right - left))


def _quarter_reach(a: int, b: int) -> dict[int, int]:
    """Pillow's walk along the top-right quarter of an ellipse whose bounding box is a × b pixel steps wide, on a
    grid of half pixels (points (X, Y) with X ≡ a and Y ≡ b mod 2, the centre at 0): from (a, b mod 2) to
    (a mod 2, b), each step to whichever of up, up-left and left lies nearest the curve (earlier on a tie).
    Returns, per row Y, the largest X reached: the filled ellipse spans -X..X on rows ±Y."""
    a2, b2 = a * a, b * b

    def off(x: int, y: int) -> int:
        return abs(a2 * y * y + b2 * x * x - a2 * b2)

    x, y = a, b % 2
    reach = {y: x}
    while (x, y) != (a % 2, b):
        step = (x, y + 2)
        if x > 1:
            for other in ((x - 2, y + 2), (x - 2, y)):
                if off(*step) > off(*other):
                    step = other
        x, y = step
        reach.setdefault(y, x)
    return reach


@dataclass
class CropMask:
    """A cell as a bitmap at a position (CVAT masks, LabelMe masks, COCO RLE decoded)."""

    label: str
    top: int
    left: int
    mask: np.ndarray  # bool

    def clipped(self, h: int, w: int) -> bool:
        mh, mw = self.mask.shape
        return self.top < 0 or self.left < 0 or self.top + mh > h or self.left + mw > w

    def rasterise(self, h: int, w: int) -> Patch | None:
        mh, mw = self.mask.shape
        top, left = max(0, self.top), max(0, self.left)
        bottom, right = min(h, self.top + mh), min(w, self.left + mw)
        if bottom <= top or right <= left:
            return None
        crop = self.mask[top - self.top : bottom - self.top, left - self.left : right - self.left]
        return _nonempty(top, left, crop)


@dataclass
class Rle:
    """A cell as a COCO run-length encoding of the whole image (compressed or not)."""

    label: str
    rle: dict  # {"size": [h, w], "counts": str | list[int]}
    where: str = "an annotation"  # for messages: which one, in which file

    def clipped(self, h: int, w: int) -> bool:
        return False  # an RLE covers exactly its image; a size mismatch is an error, not a clip

    def rasterise(self, h: int, w: int) -> Patch | None:
        from runtime.data.annotations.rle import coco_mask

        if list(self.rle["size"]) != [h, w]:
            raise CscError(f"{self.where}: its RLE mask is {self.rle['size'][1]}×{self.rle['size'][0]} px but its "
                           f"image is {w}×{h}")
        try:
            full = coco_mask(self.rle, h, w)
        except ValueError:  # pycocotools' only word for it: "Invalid RLE mask representation"
            raise CscError(f"{self.where}: its RLE mask cannot be decoded (its runs do not cover the {w}×{h} image "
                           "exactly, or its counts string is corrupt)", fix="re-export the annotations") from None
        rows, cols = np.flatnonzero(full.any(axis=1)), np.flatnonzero(full.any(axis=0))
        if not rows.size:
            return None
        return int(rows[0]), int(cols[0]), full[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


@dataclass
class Group:
    """Several shapes that are one cell (LabelMe's group_id): their union."""

    label: str
    members: list

    def clipped(self, h: int, w: int) -> bool:
        return any(m.clipped(h, w) for m in self.members)

    def rasterise(self, h: int, w: int) -> Patch | None:
        patches = [p for p in (m.rasterise(h, w) for m in self.members) if p is not None]
        if not patches:
            return None
        top = min(p[0] for p in patches)
        left = min(p[1] for p in patches)
        bottom = max(p[0] + p[2].shape[0] for p in patches)
        right = max(p[1] + p[2].shape[1] for p in patches)
        crop = np.zeros((bottom - top, right - left), bool)
        for t, lft, m in patches:
            crop[t - top : t - top + m.shape[0], lft - left : lft - left + m.shape[1]] |= m
        return top, left, crop


Shape = Polygon | Ellipse | CropMask | Rle | Group  # PillowEllipse is an Ellipse


@dataclass
class Point:
    """One counted cell as a point (pixel-centre coordinates)."""

    label: str
    x: float
    y: float


@dataclass
class Box:
    """One counted cell as a box (x1, y1 top-left, x2, y2 bottom-right, pixel coordinates)."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    normalised: bool = False  # in fractions of the image size (YOLO), scaled once the image size is known


@dataclass(frozen=True)
class EmbeddedImage:
    """An image carried inside the annotation file (LabelMe's ``imageData``), written to the dataset as ``name``.
    Its bytes are loaded only when the image is written: a folder of such files would not fit in memory at once."""

    name: str
    load: Callable[[], bytes]  # the encoded file (PNG, JPEG, …) as stored


@dataclass
class ImageAnnotation:
    """The annotations of one image. ``name`` is the image's file name, or its stem, as the source refers to it."""

    name: str
    where: str  # for messages: the annotation file (and entry) this came from
    size: tuple[int, int] | None = None  # (height, width) the source declares; checked against the image
    shapes: list = field(default_factory=list)  # Shape (segmentation) or Point / Box (count-only)
    # Instance-label files (the `masks` format): a loader of (label image, class name per label id) instead of shapes,
    # given the image's height and width: a label image of another size is an error naming the label file.
    label_map: Callable[[int, int], tuple[np.ndarray, dict[int, str]]] | None = None
    # A CVAT project's subset: the image is looked for in --images/<subset>/ first, and its dataset name gets the
    # prefix ``<subset>_``, because every subset may hold a file of the same name.
    subset: str | None = None
    # The folders in a CVAT image's name (`day1/a.png`, from a zip or a share with folders), which its exports keep
    # under images/ (in the subset's folder): looked for there first, and where found there, the dataset name gets
    # them as a prefix too (`day1_a.png`), since each folder may hold a file of the same name.
    folder: str | None = None
    embedded: EmbeddedImage | None = None  # the image itself, used where --images has no file for it

    @property
    def stem(self) -> str:
        return stem_of(self.name)


@dataclass
class Annotations:
    """Everything one source file or folder holds, before classes are mapped and images are matched."""

    fmt: str
    kind: str  # "masks", "points" or "boxes"
    images: list[ImageAnnotation]
    declared: list[str] = field(default_factory=list)  # class names the source declares (COCO categories, …)
    ignored: Counter = field(default_factory=Counter)  # shapes that are not cells in this format, by type
    label_names: list[str] = field(default_factory=list)  # class names the instance-label loaders will give
    files: set[Path] = field(default_factory=set)  # files read, never taken for images when they share a folder
    src: Path | None = None  # the file or folder given, recorded as the dataset's source
    notes: list[str] = field(default_factory=list)  # rules that decided what was imported, for the summary

    def used_labels(self) -> list[str]:
        """Class names in the order declared, then in order of first use."""
        names = dict.fromkeys(self.declared)
        for image in self.images:
            for shape in image.shapes:
                names.setdefault(shape.label, None)
        for name in self.label_names:
            names.setdefault(name, None)
        return list(names)

    def n_annotations(self) -> int:
        """Shapes, marks and label images read, and those set aside as not cells: what a user expects cells from."""
        return sum(len(i.shapes) + (i.label_map is not None) for i in self.images) + sum(self.ignored.values())

    def settle_kind(self) -> None:
        """Decide the dataset a file makes when it mixes cells and marks (a CVAT task, a COCO file). Shapes win:
        with any polygon, mask or ellipse it is a mask dataset and its boxes and points are set aside as ignored
        (a dataset holds one kind of label). Marks alone make a count-only dataset: boxes a boxes dataset; points,
        with or without boxes, a points dataset, where a box counts at its centre."""
        kinds = {_kind_of(s) for image in self.images for s in image.shapes}
        if not kinds:
            return  # label images, or no annotation at all: the reader's kind stands
        self.kind = "masks" if "masks" in kinds else "points" if "points" in kinds else "boxes"
        if self.kind == "masks" and kinds != {"masks"}:
            for image in self.images:
                marks = [s for s in image.shapes if _kind_of(s) != "masks"]
                self.ignored.update(type(m).__name__.lower() for m in marks)
                image.shapes = [s for s in image.shapes if _kind_of(s) == "masks"]
            self.notes.append("boxes and points are not imported beside polygons or masks (a dataset holds one "
                              "kind of label); export them alone to import them as a count-only dataset")
        elif kinds == {"points", "boxes"}:
            self.notes.append("points and boxes together: a points dataset, each box counted at its centre")

    def drop_conventional_labels(self, kept: set[str]) -> None:
        """Set aside shapes and classes named by a tool's convention for what is not an object (LabelMe's
        ``__ignore__``, labelme2coco's ``_background_``), unless ``kept`` (the names ``--classes`` maps) has them."""
        names = {n: why for n, why in CONVENTIONAL_LABELS.items() if n not in kept}
        found: Counter = Counter()
        for image in self.images:
            found.update(s.label for s in image.shapes if s.label in names)
            image.shapes = [s for s in image.shapes if s.label not in names]
        found.update({n: 0 for n in self.declared if n in names})
        self.declared = [n for n in self.declared if n not in names]
        self.ignored.update({n: c for n, c in found.items() if c})
        for name in found:
            self.notes.append(f"label {name!r} ignored: {names[name]}, not a class (map it with --classes to keep it)")

    def leave_out_unused(self, unusable: Callable[[str], bool]) -> None:
        """Declared classes that no annotation uses and whose names cannot be class names (VOC's 'potted plant'
        among labelme2coco's categories): left out with a note, rather than stopping the import of those used."""
        used = {s.label for image in self.images for s in image.shapes} | set(self.label_names)
        left_out = [n for n in self.declared if n not in used and unusable(n)]
        if left_out:
            self.declared = [n for n in self.declared if n not in left_out]
            self.notes.append("classes declared but never used, whose names cannot be class names, left out: "
                              + ", ".join(repr(n) for n in left_out))


# Label names that tools write for what is not an object, by convention, and whose convention it is.
CONVENTIONAL_LABELS = {"__ignore__": "LabelMe's region to ignore", "_background_": "labelme2coco's background"}


def _kind_of(shape: object) -> str:
    return "points" if isinstance(shape, Point) else "boxes" if isinstance(shape, Box) else "masks"


def load_json(path: Path) -> object:
    """Parsed JSON; a malformed file is a CscError naming the file, line and column."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise CscError(f"cannot read ({err})", path=path) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise CscError(f"malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}", path=path,
                       fix="re-export it from the labelling tool") from None


def number(value: object, what: str, path: Path) -> float:
    """A finite number from a file, or a CscError saying which value is wrong and where."""
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise CscError(f"{what}: {value!r} is not a number", path=path) from None
    if not math.isfinite(out):
        raise CscError(f"{what}: {value!r} is not a finite number", path=path)
    return out
