"""Writing what a reader found into the project's dataset format: images matched and linked, classes mapped,
shapes composed into class and instance maps (segmentation formats) or marks kept (count-only formats).

Everything that can be checked without writing (classes, matching images, `--strict`) is checked first; then
each file is written atomically and `dataset.json` last (``complete: false`` if the run was interrupted), as
every dataset writer of the project does. An import that fails (an error, or nothing imported) removes what it
wrote: a dataset left behind would block the retry with "--out already holds a dataset".
"""
from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from runtime.data.annotations.classmap import ClassMap, ResolvedClasses, usable_name
from runtime.data.annotations.model import Annotations, Box, ImageAnnotation, Point
from runtime.data.count_dataset import write_marks
from runtime.data.dataset import DatasetWriter, check_new_dataset_folder, write_sample
from runtime.errors import CscError
from runtime.io.imageio import atomic_path, is_image_name, place_file, read_raw

_SHOWN = 5  # names listed in an error before "… and N more"


@dataclass
class ImportSummary:
    """What an import did, for the person who ran it (printed) and for later (``dataset.json`` → ``import``)."""

    out: str
    fmt: str
    kind: str
    classes: list[str]
    images: int = 0
    cells: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)  # cells of classes not kept, by source class name
    clipped: int = 0  # shapes cut at the image edge (kept, clipped)
    outside: int = 0  # shapes or marks wholly outside their image (dropped)
    overlapping: int = 0  # cells drawn over an earlier cell: the later one wins the shared pixels
    hidden: int = 0  # cells wholly covered by later ones (gone)
    ignored: dict[str, int] = field(default_factory=dict)  # shapes that are not cells, by type
    notes: list[str] = field(default_factory=list)  # rules that decided what was imported (mixed kinds, crowds, …)
    missing_images: list[str] = field(default_factory=list)  # annotated, but no such image in --images
    unannotated: list[str] = field(default_factory=list)  # images in --images without annotations (not imported)
    skipped: list[dict[str, str]] = field(default_factory=list)  # unreadable images, size mismatches

    def as_json(self) -> dict:
        return asdict(self)


class NothingImported(CscError):
    """An import that kept no image, or no cell from annotations that had some: nothing is written, and the
    summary says where every image and annotation went (the CLI prints it before the error)."""

    def __init__(self, reason: str, summary: ImportSummary, *, path: str | Path, fix: str):
        super().__init__(reason, path=path, fix=fix)
        self.summary = summary


def import_annotations(source: Annotations, images_dir: str | Path, out: str | Path, class_map: ClassMap,
                       *, origin: str, strict: bool = False, copy_images: bool = False,
                       pixel_size_um: float | None = None,
                       on_image: Callable[[], None] | None = None) -> ImportSummary:
    """Write ``out`` from ``source``; returns the summary. Raises CscError before writing anything for bad
    classes, and (``strict``) for annotations without images or images without annotations; NothingImported
    when no image, or no cell of the annotations, was kept. Whatever fails, ``out`` is left as it was."""
    # resolved: `new/../out2` would make `new` too, and its parents are not out2's (what a failure removes)
    out, images_dir = Path(out).resolve(), Path(images_dir)
    check_new_dataset_folder(out)
    source.drop_conventional_labels({name for name, _ in class_map.pairs})
    source.settle_kind()
    if not class_map.pairs:  # with a map, classes it does not name are dropped anyway
        source.leave_out_unused(lambda name: not usable_name(name))
    resolved = class_map.resolve(source.used_labels())
    pairs, missing, unannotated = match_images(source, images_dir)
    summary = ImportSummary(str(out), source.fmt, source.kind, list(resolved.classes),
                            ignored=dict(source.ignored), notes=list(source.notes), missing_images=missing,
                            unannotated=[p.name for p in unannotated])
    if strict and (missing or unannotated):
        problem = (f"{len(missing)} annotated image(s) not found in {images_dir}: {_some(missing)}" if missing else
                   f"{len(unannotated)} image(s) without annotations: {_some(summary.unannotated)}")
        raise CscError(problem, fix="fix --images or the annotations, or drop --strict to import the rest")
    dropped: Counter = Counter()
    cells = np.zeros(len(resolved.classes), np.int64)
    marks: list[tuple] = []
    with _removed_on_error(out), DatasetWriter(
            out, source=f"{source.fmt} annotations {source.src or ''} (csc-data import)", classes=resolved.classes,
            pixel_size_um=pixel_size_um, labels=origin, annotations=source.kind) as writer:
        for pair in pairs:
            annotation, stem = pair.annotation, pair.stem
            try:
                embedded = None if pair.path is not None else annotation.embedded.load()
                h, w = _image_size(pair, embedded)
                if annotation.size is not None and annotation.size != (h, w):
                    raise CscError(f"{annotation.where} gives {annotation.size[1]}×{annotation.size[0]} px but the "
                                   f"image is {w}×{h}", path=pair.path, fix="annotate the image it belongs to")
                if source.kind == "masks":
                    instances, class_of = (_from_label_map(annotation, resolved, h, w, dropped)
                                           if annotation.label_map is not None else
                                           _compose(annotation, resolved, h, w, summary, dropped))
                else:
                    rows, counts = _marks(stem, source.kind, annotation, resolved, (h, w), summary, dropped)
                # The image goes in only once its labels are made: a dataset never holds an image without them.
                _place_image(pair, embedded, out / "images" / pair.name, link=not copy_images)
                if source.kind == "masks":
                    counts = write_sample(out, stem, None, class_of[instances], instances,
                                          n_classes=len(resolved.classes))
                else:
                    marks += rows
            except CscError as err:
                if strict:
                    raise
                # The file to fix: a label image or annotation file where the error names one, else the image.
                bad = str(err.path or pair.path or annotation.where)
                writer.skip(bad, err.reason)
                summary.skipped.append({"file": bad, "reason": err.reason})
            else:
                writer.record(stem, counts)
                cells += counts
                summary.images += 1
            if on_image is not None:
                on_image()
        if source.kind != "masks":
            write_marks(out, source.kind, marks)
        summary.cells = {n: int(cells[i]) for i, n in enumerate(resolved.classes) if i}
        summary.dropped = dict(dropped)
        writer.extra["import"] = summary.as_json()
        _check_imported(source, summary, images_dir)
    return summary


def _check_imported(source: Annotations, summary: ImportSummary, images_dir: Path) -> None:
    if not summary.images:
        raise NothingImported(f"imported none of the {len(source.images)} annotated images (listed above as not "
                              "found, or skipped)", summary, path=images_dir,
                              fix="check --images: images are matched by file name, else by the name without its "
                                  "extension")
    if not sum(summary.cells.values()) and source.n_annotations():
        raise NothingImported(f"imported no cell from the {source.n_annotations()} annotations (where they went is "
                              "listed above)", summary, path=source.src,
                              fix="map the dropped classes with --classes, or re-export the cells as shapes "
                                  "(polygons, masks) or marks (boxes, points) the format holds")


@contextmanager
def _removed_on_error(out: Path) -> Iterator[None]:
    """Remove what the block wrote under ``out`` when it raises an error: ``out`` itself and the folders above it
    that it made, or, where ``out`` was already there (an empty folder, as `check_new_dataset_folder` requires), what is in it
    now. Ctrl-C is no error here: the files stay, ``complete: false`` says so, as in every dataset writer."""
    made = next((p for p in reversed((out, *out.parents)) if not p.exists()), None)
    try:
        yield
    except Exception:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        else:
            for child in out.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        raise


@dataclass(frozen=True)
class Pair:
    """An annotated image, where its pixels come from, and the file name it takes in the dataset."""

    annotation: ImageAnnotation
    path: Path | None  # the image file; None where the annotation embeds its image
    name: str  # the file name in the dataset's images/; its stem keys the labels

    @property
    def stem(self) -> str:
        return Path(self.name).stem


class _Folder:
    """The image files of one folder, by file name and by stem (annotation files excepted)."""

    def __init__(self, path: Path, annotation_files: set[Path]):
        self.path = path
        self.files = sorted(p for p in path.iterdir()
                            if p.is_file() and is_image_name(p) and p.resolve() not in annotation_files)
        self.by_name = {p.name: p for p in self.files}
        self.by_stem: dict[str, list[Path]] = {}
        for p in self.files:
            self.by_stem.setdefault(p.stem, []).append(p)

    def find(self, annotation: ImageAnnotation) -> Path | None:
        """By file name, else by stem (annotations often drop or change the suffix)."""
        path = self.by_name.get(Path(annotation.name).name)
        if path is not None:
            return path
        candidates = self.by_stem.get(annotation.stem, [])
        if len(candidates) > 1:
            raise CscError(f"{annotation.where} could be any of {', '.join(p.name for p in candidates)}",
                           path=self.path, fix="keep one image per name, or give file names with suffixes")
        return candidates[0] if candidates else None


def match_images(source: Annotations, images_dir: Path) -> tuple[list[Pair], list[str], list[Path]]:
    """Pair each annotated image with its file: for a CVAT image, in the folders its subset and name give
    (`_places`), else in ``images_dir``, else the image the annotation embeds. Returns the pairs, the names not
    found, and the images left without annotation."""
    if not images_dir.is_dir():
        raise CscError("--images is not a folder", path=images_dir, fix="pass the folder that holds the images")
    annotation_files = {f.resolve() for f in source.files}
    folders = {images_dir: _Folder(images_dir, annotation_files)}
    pairs, missing, used = [], [], {}
    for annotation in source.images:
        path = None
        for sub, prefix in _places(annotation):
            if (images_dir / sub).is_dir():
                path = folders.setdefault(images_dir / sub, _Folder(images_dir / sub, annotation_files)).find(annotation)
                if path is not None:
                    break
        if path is None and annotation.embedded is None:
            missing.append("/".join(filter(None, (annotation.subset, annotation.folder, annotation.name))))
            continue
        pair = Pair(annotation, path, _dataset_name(prefix, path.name if path else annotation.embedded.name))
        if pair.stem in used:
            raise CscError(f"{annotation.where} and {used[pair.stem]} both annotate {pair.name}",
                           path=path or images_dir, fix="merge the two entries, or keep one")
        used[pair.stem] = annotation.where
        pairs.append(pair)
    taken = {pair.path for pair in pairs}
    unannotated = [p for f in folders.values() for p in f.files if p not in taken and p.stem not in used]
    return pairs, missing, unannotated


def _places(annotation: ImageAnnotation) -> list[tuple[str, str]]:
    """Where below --images an image lies, most likely first, each with the prefix of its dataset name: a CVAT
    project export's ``<subset>/<folder>/``, the subset's folder, a task export's ``<folder>/``, --images itself.
    The subset is always a prefix and the folders where the image lay in them, since each may hold a file of the
    same name."""
    subset, folder = annotation.subset or "", annotation.folder or ""
    nested = "/".join(filter(None, (subset, folder)))
    places = [(nested, nested), (subset, subset), (folder, nested)] if folder else [(subset, subset)]
    return list(dict.fromkeys((sub, prefix) for sub, prefix in places if sub)) + [("", subset)]


def _dataset_name(prefix: str, name: str) -> str:
    """The image's file name in the dataset, with the folders of its prefix joined by '_' (none in images/)."""
    prefix = re.sub(r"[/\\]", "_", prefix)
    return f"{prefix}_{name}" if prefix else name


def _image_size(pair: Pair, embedded: bytes | None) -> tuple[int, int]:
    flags = cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH
    if embedded is None:
        image = read_raw(pair.path, flags)
    else:
        image = cv2.imdecode(np.frombuffer(embedded, np.uint8), flags)
        if image is None:
            raise CscError(f"{pair.annotation.where}: its embedded image (imageData) cannot be decoded",
                           fix="save the file again in LabelMe, or put the image in --images")
    return int(image.shape[0]), int(image.shape[1])


def _place_image(pair: Pair, embedded: bytes | None, target: Path, link: bool) -> None:
    if embedded is None:
        place_file(pair.path, target, link=link)
        return
    with atomic_path(target) as tmp:
        tmp.write_bytes(embedded)


def _compose(annotation: ImageAnnotation, resolved: ResolvedClasses, h: int, w: int, summary: ImportSummary,
             dropped: Counter) -> tuple[np.ndarray, np.ndarray]:
    """Instance map of the shapes in order; a later shape wins pixels an earlier one holds (the tools' z-order)."""
    instances = np.zeros((h, w), np.uint16)
    class_of = [0]
    for shape in annotation.shapes:
        class_id = resolved.class_id(shape.label)
        if class_id is None:
            dropped[shape.label] += 1
            continue
        patch = shape.rasterise(h, w)
        if patch is None:
            summary.outside += 1
            continue
        summary.clipped += int(shape.clipped(h, w))
        if len(class_of) > np.iinfo(np.uint16).max:
            raise CscError(f"{annotation.where}: more than 65535 cells in one image")
        top, left, crop = patch
        view = instances[top : top + crop.shape[0], left : left + crop.shape[1]]
        summary.overlapping += bool(view[crop].any())
        view[crop] = len(class_of)
        class_of.append(class_id)
    return _dense(instances, np.asarray(class_of, np.uint8), summary)


def _dense(instances: np.ndarray, class_of: np.ndarray, summary: ImportSummary | None) -> tuple[np.ndarray, np.ndarray]:
    """Renumber the instances left with pixels 1..N (cells wholly covered by later ones are gone)."""
    present = np.bincount(instances.ravel(), minlength=class_of.size) > 0
    present[0] = True
    if summary is not None:
        summary.hidden += int(class_of.size - present.sum())
    lut = np.cumsum(present).astype(np.uint16) - 1
    return lut[instances], class_of[present]


def _from_label_map(annotation: ImageAnnotation, resolved: ResolvedClasses, h: int, w: int,
                    dropped: Counter) -> tuple[np.ndarray, np.ndarray]:
    labels, names = annotation.label_map(h, w)
    ids = np.unique(labels)
    ids = ids[ids != 0]
    if len(ids) > np.iinfo(np.uint16).max:
        raise CscError(f"{annotation.where}: more than 65535 cells in one image")
    class_of = np.zeros(len(ids) + 1, np.uint8)
    keep = np.zeros(len(ids) + 1, bool)
    for k, label_id in enumerate(ids.tolist(), start=1):
        name = names.get(label_id, names.get(0, ""))
        class_id = resolved.class_id(name)
        if class_id is None:
            dropped[name] += 1
        else:
            class_of[k], keep[k] = class_id, True
    dense = np.searchsorted(ids, labels).astype(np.int64) + 1
    dense[labels == 0] = 0
    dense[~keep[dense]] = 0
    return _dense(dense.astype(np.uint16), class_of, None)


def _marks(stem: str, kind: str, annotation: ImageAnnotation, resolved: ResolvedClasses, size: tuple[int, int],
           summary: ImportSummary, dropped: Counter) -> tuple[list[tuple], np.ndarray]:
    """Rows of the dataset's points.csv / boxes.csv for one image, and its per-class counts; in a points dataset
    a box is a point at its centre."""
    h, w = size
    marks: list[tuple] = []
    counts = np.zeros(len(resolved.classes), np.int64)
    for mark in annotation.shapes:
        class_id = resolved.class_id(mark.label)
        if class_id is None:
            dropped[mark.label] += 1
            continue
        name = resolved.classes[class_id]
        if isinstance(mark, Point):
            if not (0 <= mark.x <= w and 0 <= mark.y <= h):
                summary.outside += 1
                continue
            marks.append((stem, name, mark.x, mark.y))
        elif isinstance(mark, Box):
            sx, sy = (w, h) if mark.normalised else (1, 1)
            x1, x2 = sorted((mark.x1 * sx, mark.x2 * sx))
            y1, y2 = sorted((mark.y1 * sy, mark.y2 * sy))
            cx1, cy1, cx2, cy2 = max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)
            if cx2 <= cx1 or cy2 <= cy1:
                summary.outside += 1
                continue
            summary.clipped += (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2)
            box = (cx1, cy1, cx2, cy2) if kind == "boxes" else ((cx1 + cx2) / 2, (cy1 + cy2) / 2)
            marks.append((stem, name, *box))
        counts[class_id] += 1
    return marks, counts


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" … and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")
