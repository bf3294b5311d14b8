"""Count-only datasets: one point or one box per cell instead of masks, as counting studies publish them.

Layout::

    DATASET/
      images/<stem>.jpg|png|tif   the annotated images (hard-linked from where they were, or copied)
      points.csv                  image,x,y,class        (x, y in pixels; image = the image's stem)
      boxes.csv                   image,class,x1,y1,x2,y2 (instead of points.csv for box annotations)
      dataset.json                "annotations": "points" | "boxes", classes, counts per image, "labels" …

Every image in images/ is annotated: an image without a row holds zero cells of the dataset's classes (images
that were never annotated are not imported). There is no masks/ folder, so these datasets cannot train a
segmenter or give pixel metrics; they score counts (`csc-data count LABELS --truth DATASET`, `csc-train eval`).
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.classes import DEFAULT_PIXEL_SIZE_UM
from runtime.io.csv_rows import csv_rows
from runtime.data.dataset import COUNT_ONLY_KINDS, CheckReport, annotation_kind, read_meta, unfinished
from runtime.errors import CscError
from runtime.io.imageio import list_images, read_raw, write_text

MARK_FILES = {"points": "points.csv", "boxes": "boxes.csv"}
MARK_COLUMNS = {"points": ("image", "x", "y", "class"), "boxes": ("image", "class", "x1", "y1", "x2", "y2")}


@dataclass
class CountSample:
    """One annotated image: per class name, its points (for boxes, the boxes' centres) and boxes."""

    stem: str
    image: Path
    points: dict[str, np.ndarray]  # class name → (N, 2) float x, y
    boxes: dict[str, np.ndarray] | None = None  # class name → (N, 4) x1, y1, x2, y2

    def counts(self, names: list[str]) -> dict[str, int]:
        return {n: len(self.points.get(n, ())) for n in names}


@dataclass
class CountDataset:
    root: Path
    kind: str  # "points" or "boxes"
    samples: list[CountSample]
    meta: dict[str, Any]

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def pixel_size_um(self) -> float:
        return float(self.meta.get("pixel_size_um") or DEFAULT_PIXEL_SIZE_UM)

    def __len__(self) -> int:
        return len(self.samples)

    def by_stem(self) -> dict[str, CountSample]:
        return {s.stem: s for s in self.samples}


def is_count_only(root: str | Path) -> bool:
    return annotation_kind(read_meta(Path(root))) in COUNT_ONLY_KINDS


def write_marks(root: Path, kind: str, rows: list[tuple]) -> None:
    """Write points.csv / boxes.csv atomically; each row is (stem, class name, *coordinates) in pixels."""
    columns = MARK_COLUMNS[kind]
    buffer = io.StringIO()
    out = csv.writer(buffer, lineterminator="\n")
    out.writerow(columns)
    for stem, name, *coords in rows:
        text = [np.format_float_positional(c, precision=3, trim="-") for c in coords]
        out.writerow([stem, *text, name] if kind == "points" else [stem, name, *text])
    write_text(root / MARK_FILES[kind], buffer.getvalue())


def open_count_dataset(root: str | Path) -> CountDataset:
    """A count-only dataset with its marks grouped per image; an error names the file and line of a bad row."""
    root = Path(root)
    if not root.is_dir():
        raise CscError("dataset folder not found", path=root, fix="import one with `csc-data import points|boxes`")
    meta = read_meta(root)
    kind = annotation_kind(meta)
    if kind not in COUNT_ONLY_KINDS:
        raise CscError("not a count-only dataset (it has masks)", path=root,
                       fix="count-only datasets come from `csc-data import points|boxes`")
    images = {p.stem: p for p in list_images(root / "images")}
    names = meta["classes"][1:]
    points: dict[str, dict[str, list]] = {stem: {} for stem in images}
    boxes: dict[str, dict[str, list]] = {stem: {} for stem in images}
    path = root / MARK_FILES[kind]
    for line, row in csv_rows(path, MARK_COLUMNS[kind], absent_fix="a count-only dataset needs this file"):
        stem, name = row["image"], row["class"]
        if stem not in images:
            raise CscError(f"line {line}: image {stem!r} is not in images/", path=path,
                           fix="add the image or drop its rows")
        if name not in names:
            raise CscError(f"line {line}: class {name!r} is not one of the dataset's classes ({', '.join(names)})",
                           path=path, fix="fix the row or the 'classes' list in dataset.json")
        if kind == "points":
            points[stem].setdefault(name, []).append([_float(row, "x", line, path), _float(row, "y", line, path)])
        else:
            x1, y1, x2, y2 = (_float(row, c, line, path) for c in ("x1", "y1", "x2", "y2"))
            boxes[stem].setdefault(name, []).append([x1, y1, x2, y2])
            points[stem].setdefault(name, []).append([(x1 + x2) / 2, (y1 + y2) / 2])
    def arrays(marks: dict[str, list], width: int) -> dict[str, np.ndarray]:
        return {n: np.asarray(v, np.float64).reshape(-1, width) for n, v in marks.items()}

    samples = [CountSample(stem, images[stem], arrays(points[stem], 2),
                           arrays(boxes[stem], 4) if kind == "boxes" else None)
               for stem in sorted(images)]
    return CountDataset(root, kind, samples, meta)


def check_count_dataset(root: str | Path) -> CheckReport:
    """Every image readable, every mark inside its image; cells per class."""
    dataset = open_count_dataset(root)
    problems = unfinished(dataset.root, dataset.meta)
    sizes: dict[str, int] = {}
    cells = dict.fromkeys(dataset.classes[1:], 0)
    for sample in dataset.samples:
        try:
            h, w = read_raw(sample.image).shape[:2]
        except CscError as err:
            problems.append(str(err))
            continue
        sizes[f"{w}x{h}"] = sizes.get(f"{w}x{h}", 0) + 1
        for name, pts in sample.points.items():
            cells[name] += len(pts)
            outside = int(((pts[:, 0] < 0) | (pts[:, 0] > w) | (pts[:, 1] < 0) | (pts[:, 1] > h)).sum())
            if outside:
                problems.append(f"{sample.image}: {outside} {name} mark(s) outside the {w}×{h} image")
    return CheckReport(n_images=len(dataset), problems=problems, pixel_fraction={}, cells=cells, sizes=sizes)


def _float(row: dict, column: str, line: int, path: Path) -> float:
    try:
        return float(row[column])
    except (TypeError, ValueError):
        raise CscError(f"line {line}: {column} {row[column]!r} is not a number", path=path) from None
