"""Count-only annotations: points and boxes, as CSV tables or as one text file per image.

- points: a CSV with a header naming ``image, x, y`` and optionally ``class`` (any order, more columns ignored);
  or a folder of ``<image stem>.txt`` files with one cell per line, ``x y [class]`` (spaces or commas) — the
  Chula RBC-12 layout, whose third column is a cell-type code. An empty file is an image with zero cells; an
  image without a file was not annotated.
- boxes: a CSV with ``image, class, x1, y1, x2, y2`` (pixels); or a YOLO folder of ``<stem>.txt`` files with
  ``class cx cy w h`` normalised to the image size, class names from ``classes.txt`` or ``obj.names`` beside them
  (else the class ids are the names; an id the file does not name is an error).
"""
from __future__ import annotations

import re
from pathlib import Path

from runtime.data.annotations.model import Annotations, Box, ImageAnnotation, Point, number
from runtime.io.csv_rows import csv_rows
from runtime.errors import CscError

CSV_OR_FOLDER = "pass a CSV file or a folder of .txt files"

_SPLIT = re.compile(r"[,\s]+")
YOLO_NAMES = ("classes.txt", "obj.names")


def read_points(src: Path) -> Annotations:
    if src.is_dir():
        images = [_text_image(path, _point_line) for path in _text_files(src)]
        return Annotations("points", "points", images, files=set(_text_files(src)))
    rows = csv_rows(src, ("image", "x", "y"), ("class",), CSV_OR_FOLDER)
    images: dict[str, ImageAnnotation] = {}
    for line, row in rows:
        image = _image_of(images, row["image"], src)
        x, y = (number(row[c], f"line {line}, {c}", src) for c in ("x", "y"))
        image.shapes.append(Point(row.get("class") or "", x, y))
    return Annotations("points", "points", list(images.values()), files={src})


def read_boxes(src: Path) -> Annotations:
    if src.is_dir():
        names_file, names = _yolo_names(src)
        files = _text_files(src, exclude=YOLO_NAMES)
        images = [_text_image(path, lambda f, where: _yolo_line(f, where, names, names_file)) for path in files]
        return Annotations("boxes", "boxes", images, declared=list(names.values()), files=set(files))
    rows = csv_rows(src, ("image", "class", "x1", "y1", "x2", "y2"), absent_fix=CSV_OR_FOLDER)
    images: dict[str, ImageAnnotation] = {}
    for line, row in rows:
        image = _image_of(images, row["image"], src)
        x1, y1, x2, y2 = (number(row[c], f"line {line}, {c}", src) for c in ("x1", "y1", "x2", "y2"))
        image.shapes.append(Box(row["class"], x1, y1, x2, y2))
    return Annotations("boxes", "boxes", list(images.values()), files={src})


def _image_of(images: dict[str, ImageAnnotation], name: str, src: Path) -> ImageAnnotation:
    """Rows of one image, whether they name it with its suffix or without (both are seen in the wild)."""
    image = ImageAnnotation(name, f"{src.name} (image {name})")
    return images.setdefault(image.stem, image)


def _text_files(folder: Path, exclude: tuple[str, ...] = ()) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".txt" and p.name not in exclude
                   and not p.name.startswith("."))
    if not files:
        raise CscError("no .txt annotation files in the folder", path=folder, fix="one <image stem>.txt per image")
    return files


def _text_image(path: Path, parse_line) -> ImageAnnotation:
    image = ImageAnnotation(path.stem, path.name)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise CscError(f"cannot read ({err})", path=path) from None
    for i, text in enumerate(lines, start=1):
        fields = [f for f in _SPLIT.split(text.strip()) if f]
        if fields and not fields[0].startswith("#"):
            image.shapes.append(parse_line(fields, (path, i)))
    return image


def _point_line(fields: list[str], where: tuple[Path, int]) -> Point:
    path, line = where
    if len(fields) not in (2, 3):
        raise CscError(f"line {line}: expected 'x y [class]', got {' '.join(fields)!r}", path=path)
    x, y = (number(v, f"line {line}, {c}", path) for v, c in zip(fields, "xy"))
    return Point(fields[2] if len(fields) == 3 else "", x, y)


def _yolo_line(fields: list[str], where: tuple[Path, int], names: dict[str, str], names_file: Path | None) -> Box:
    """YOLO boxes are in fractions of the image size; the writer scales them once it has read the image. With a
    names file, an id it does not name is an error: taken as its own name, it became a dataset class ("2")."""
    path, line = where
    if len(fields) != 5:
        raise CscError(f"line {line}: expected 'class cx cy w h', got {' '.join(fields)!r}", path=path)
    if names_file is not None and fields[0] not in names:
        ids = f" (ids 0–{len(names) - 1})" if names else ""
        raise CscError(f"line {line}: class id {fields[0]!r}, but {names_file} names {len(names)} classes{ids}",
                       path=path, fix=f"add the missing names to {names_file.name}, one a line")
    cx, cy, w, h = (number(v, f"line {line}, {c}", path) for v, c in zip(fields[1:], ("cx", "cy", "w", "h")))
    return Box(names.get(fields[0], fields[0]), cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, normalised=True)


def _yolo_names(folder: Path) -> tuple[Path | None, dict[str, str]]:
    """The names file and {class id: name}; without one, (None, {}): the ids are the names."""
    for candidate in (folder / n for n in YOLO_NAMES):
        if candidate.is_file():
            names = [n.strip() for n in candidate.read_text(encoding="utf-8-sig").splitlines() if n.strip()]
            return candidate, {str(i): n for i, n in enumerate(names)}
    return None, {}
