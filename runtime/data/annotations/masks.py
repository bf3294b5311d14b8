"""Instance-label images: one PNG/TIFF per image, 0 background and one integer id per cell (Cellpose's
``*_masks.png``, StarDist and ImageJ/Fiji label exports; 8, 16 or 32 bit).

A label file belongs to the image with the same stem, or with the stem left after a tool's suffix
(``_cp_masks``, ``_masks``, ``_mask``, ``_labels``, ``_label``); the folder may hold the images too (Cellpose
writes its masks beside them): a file that a suffixed one names is that image. Classes: every cell is unnamed
unless a class table (CSV) names them, per file (``image,class``) or per cell (``image,label,class``); unnamed
cells take the class that ``--classes '*=NAME'`` gives.

A palette PNG (labelme2voc's and PASCAL VOC's SegmentationObject) holds its label ids as palette indices, which
OpenCV would expand to colours: they are read back from the palette, and index 255 (VOC's "void" border) is not a
cell. A multi-page TIFF (a 3-D label stack) is refused: its first plane alone would lose every other cell.
"""
from __future__ import annotations

import struct
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from runtime.data.annotations.model import Annotations, ImageAnnotation
from runtime.io.csv_rows import csv_rows
from runtime.errors import CscError
from runtime.io.imageio import is_image_name, read_label_map, read_raw, stem_of

TOOL_SUFFIXES = ("_cp_masks", "_masks", "_mask", "_labels", "_label")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PALETTE_VOID = 255  # PASCAL VOC's index for object borders and regions not to score


def read_masks(src: Path, class_table: Path | None = None) -> Annotations:
    if not src.is_dir():
        raise CscError("the masks source must be a folder of label images", path=src)
    files = sorted(p for p in src.iterdir() if p.is_file() and is_image_name(p))
    # Cellpose saves `a_cp_masks.png` beside `a.png`: a file that a suffixed label file names is its image, not a
    # label file of its own (taken for one, it clashed with its labels, and --images could not match it).
    named = {image_stem(p) for p in files if image_stem(p) != stem_of(p.name)}
    files = [p for p in files if stem_of(p.name) not in named]
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


def _load(path: Path, names: dict[int, str], h: int, w: int) -> tuple[np.ndarray, dict[int, str]]:
    """The label ids of an image of h × w px, and the class names of the file's ids; an error names the label file
    (a size mismatch was reported under the image's path, ambiguous where both are `a.png`)."""
    labels = _read_labels(path)
    if labels.ndim != 2:
        raise CscError(f"a label image must have one channel, this one has {labels.shape[2]}", path=path,
                       fix="save instance labels as a single-channel 8/16/32-bit image, not a colour rendering")
    if labels.shape != (h, w):
        raise CscError(f"the label image is {labels.shape[1]}×{labels.shape[0]} px but its image is {w}×{h}",
                       path=path, fix="label the image at its own size (not a resized copy)")
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.array_equal(labels, np.round(labels)) or labels.min() < 0:
            raise CscError("a floating-point label image must hold whole, non-negative numbers", path=path)
        labels = labels.astype(np.int64)
    elif labels.dtype.kind == "i" and labels.min() < 0:
        raise CscError("label ids must not be negative", path=path)
    return labels, names


def _read_labels(path: Path) -> np.ndarray:
    """The label ids of one file: a palette PNG's indices, a single-page TIFF's plane, any other image as stored."""
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return _single_plane(path)
    palette = _palette(path) if suffix == ".png" else None
    return read_label_map(path) if palette is None else _palette_indices(path, palette)


def _single_plane(path: Path) -> np.ndarray:
    ok, pages = cv2.imdecodemulti(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    if not ok or not pages:
        return read_label_map(path)  # says why it cannot be read
    if len(pages) > 1:
        h, w = pages[0].shape[:2]
        raise CscError(f"a stack of {len(pages)} label planes of {w}×{h} px (3-D or multi-page): only 2-D label "
                       "images import, and the first plane alone would lose the cells of the others", path=path,
                       fix="save one 2-D label image per 2-D image (e.g. each plane beside its image plane)")
    return pages[0]


def _palette(path: Path) -> np.ndarray | None:
    """The (N, 3) RGB palette of an indexed-colour PNG (IHDR colour type 3), else None. Reads the chunks before
    the pixel data only."""
    with open(path, "rb") as f:
        head = f.read(len(PNG_SIGNATURE) + 18)
        if not head.startswith(PNG_SIGNATURE) or len(head) < 26 or head[25] != 3:
            return None
        f.seek(len(PNG_SIGNATURE))
        while len(chunk := f.read(8)) == 8:
            length, kind = struct.unpack(">I4s", chunk)
            if kind == b"PLTE":
                colours = f.read(length)
                return np.frombuffer(colours, np.uint8, len(colours) // 3 * 3).reshape(-1, 3)
            if kind == b"IDAT":
                break
            f.seek(length + 4, 1)  # the chunk's data and CRC
    raise CscError("an indexed-colour PNG without its palette", path=path, fix="save the label image again")


def _palette_indices(path: Path, palette: np.ndarray) -> np.ndarray:
    """Palette indices back from OpenCV's colours (each colour to the first index that has it), void as 0."""
    keys = _rgb_keys(read_raw(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)[..., ::-1])
    colours, inverse = np.unique(keys, return_inverse=True)
    first: dict[int, int] = {}
    for index, key in enumerate(_rgb_keys(palette).tolist()):
        first.setdefault(key, index)
    lut = np.array([first.get(c, -1) for c in colours.tolist()], np.int64)
    if (lut < 0).any():
        raise CscError("a palette PNG with a colour that is not in its palette", path=path,
                       fix="save the label image again, or as a single-channel 8/16-bit image")
    labels = lut[inverse.reshape(keys.shape)].astype(np.uint8)
    labels[labels == PALETTE_VOID] = 0
    return labels


def _rgb_keys(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


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
