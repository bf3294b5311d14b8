"""The project's one on-disk dataset format, its writer and its validator.

Layout: ``images/<stem>.png|tif|jpg``, same-stem ``masks/<stem>.png`` (uint8 class map), optional
``instances/<stem>.png`` (uint16 labels) and ``dataset.json`` (classes, pixel size, source, seed, and the cell
counts per class where instance maps give them).
torch-free, because the runtime, the trainer and the benchmarks all read it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.classes import CLASS_NAMES, DEFAULT_PIXEL_SIZE_UM
from runtime.errors import CscError
from runtime.io.imageio import LABEL_MAP_PNG, list_images, read_image, read_label_map, write_image, write_text

FORMAT = "auto-csc-dataset/1"
META_FILE = "dataset.json"

# A dataset's annotations are class maps ("masks": masks/, optionally instances/), or count-only marks, one point
# or one box per cell in points.csv / boxes.csv and no masks/ (see runtime/data/count_dataset.py).
COUNT_ONLY_KINDS = ("points", "boxes")


def annotation_kind(meta: dict[str, Any]) -> str:
    """``masks`` unless the metadata says the dataset is count-only (older datasets have no such field)."""
    return str(meta.get("annotations", "masks"))


def label_origin(meta: dict[str, Any]) -> str:
    """Where a dataset's labels came from: ``simulator``, ``human``, ``labeller`` or ``import:<format>``.

    Datasets written before the ``labels`` field are recognised by what their writers recorded: the auto-labeller
    records its ``autolabel`` configuration, the simulator a ``seed`` and a ``simulated`` source; anything else
    (hand-made, no metadata) is taken as human.
    """
    if meta.get("labels"):
        return str(meta["labels"])
    if "autolabel" in meta:
        return "labeller"
    if meta.get("seed") is not None and str(meta.get("source", "")).startswith("simulated"):
        return "simulator"
    return "human"


def is_ground_truth(origin: str) -> bool:
    """Labels a prediction may be judged against: the simulator's, people's, imported ones — not the classical
    labeller's, whose split is made by the counter's own splitting code and so agrees with it by construction."""
    return origin != "labeller"


@dataclass
class Sample:
    """Paths of one image and its labels; ``instances`` is None where the dataset has none for it."""

    stem: str
    image: Path
    mask: Path
    instances: Path | None


@dataclass
class Labels:
    image: np.ndarray  # uint8 BGR
    mask: np.ndarray  # uint8 class map
    instances: np.ndarray | None  # uint16 labels


@dataclass
class Dataset:
    root: Path
    samples: list[Sample]
    meta: dict[str, Any]

    @property
    def classes(self) -> list[str]:
        return list(self.meta.get("classes", CLASS_NAMES))

    @property
    def pixel_size_um(self) -> float:
        return float(self.meta.get("pixel_size_um") or DEFAULT_PIXEL_SIZE_UM)

    @property
    def modalities(self) -> list[str]:
        """The optics its images were taken with, as far as dataset.json says (`csc-label auto` records what it
        detected, `csc-data synth` the simulated optics); empty where it does not say (imports, older sets)."""
        found = self.meta.get("modality") or self.meta.get("optics") or []
        return sorted(found) if isinstance(found, (dict, list)) else [str(found)]

    @property
    def scale_known(self) -> bool:
        """Whether ``pixel_size_um`` was given (simulator, a user) rather than estimated from the cells (`csc-label
        auto` without a scale) or never recorded (imports without --pixel-size): counting then reads it off each
        image."""
        return self.meta.get("scale", "given") == "given" and bool(self.meta.get("pixel_size_um"))

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> Labels:
        """Read and validate one sample; a bad one is a CscError naming its file."""
        return load_sample(self.samples[index], len(self.classes))


def read_meta(root: Path) -> dict[str, Any]:
    path = root / META_FILE
    if not path.exists():
        return {"classes": list(CLASS_NAMES)}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CscError(f"unreadable dataset metadata ({err})", path=path, fix="fix or delete the file") from None
    if not isinstance(meta.get("classes", []), list) or len(meta.get("classes", CLASS_NAMES)) < 2:
        raise CscError("'classes' must list at least background and one cell class", path=path)
    return meta


def open_dataset(root: str | Path) -> Dataset:
    """Pair every image with its mask; the first bad pairing is an error that names its file (and says how many
    more there are: `csc-data check` lists them all)."""
    root = _dataset_root(root)
    kind = annotation_kind(read_meta(root))
    if kind in COUNT_ONLY_KINDS:
        raise CscError(f"count-only dataset ({kind}, no masks): nothing to train on or to measure pixels against",
                       path=root, fix="score counts against it with `csc-data count LABELS --truth DATASET` or "
                                      "`csc-train eval CKPT DATASET`; train on a dataset with masks")
    samples, problems = _pair_samples(root, list_images(root / "images"))
    if problems:
        first, more = problems[0], len(problems) - 1
        if more:
            raise CscError(first.reason, path=first.path, fix=f"{first.fix}; {more} more problem{'s' * (more > 1)}: "
                                                              f"`csc-data check {root}` lists every one")
        raise first
    return Dataset(root, samples, read_meta(root))


def _dataset_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise CscError("dataset folder not found", path=root, fix="create one with `csc-data synth` or `csc-label auto`")
    if not (root / "images").is_dir():
        raise CscError("no images/ folder", path=root, fix="a dataset holds images/, masks/ and dataset.json")
    return root


def _pair_samples(root: Path, images: list[Path]) -> tuple[list[Sample], list[CscError]]:
    """The images that have a mask, as samples, and one problem per image that cannot be paired."""
    masks_dir, inst_dir = root / "masks", root / "instances"
    samples, problems = [], []
    for image in images:
        mask = masks_dir / f"{image.stem}.png"
        if not mask.exists():
            problems.append(CscError("image has no mask", path=image, fix=f"add {mask} or remove the image"))
            continue
        inst = inst_dir / f"{image.stem}.png"
        samples.append(Sample(image.stem, image, mask, inst if inst.exists() else None))
    seen: dict[str, Path] = {}
    for sample in samples:
        if sample.stem in seen:
            problems.append(CscError(f"shares its stem with {seen[sample.stem].name}", path=sample.image,
                                     fix="rename one of them"))
        seen.setdefault(sample.stem, sample.image)
    return samples, problems


def load_sample(sample: Sample, n_classes: int = len(CLASS_NAMES)) -> Labels:
    image = read_image(sample.image)
    mask = read_label_map(sample.mask)
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise CscError(
            f"mask must be a single-channel uint8 class map, got {mask.dtype} with shape {mask.shape}",
            path=sample.mask,
            fix="save class ids 0..N as an 8-bit grey PNG",
        )
    if mask.shape != image.shape[:2]:
        raise CscError(
            f"mask is {mask.shape[1]}×{mask.shape[0]} but its image is {image.shape[1]}×{image.shape[0]}",
            path=sample.mask,
            fix="masks must have the same size as their images",
        )
    top = int(mask.max())
    if top >= n_classes:
        raise CscError(
            f"class id {top} outside the declared classes 0..{n_classes - 1}",
            path=sample.mask,
            fix="fix the mask or the 'classes' list in dataset.json",
        )
    instances = None
    if sample.instances is not None:
        instances = read_label_map(sample.instances)
        if instances.ndim != 2 or instances.dtype not in (np.uint8, np.uint16):
            raise CscError("instance labels must be a single-channel 8/16-bit PNG", path=sample.instances)
        if instances.shape != mask.shape:
            raise CscError("instance map and mask differ in size", path=sample.instances)
        instances = instances.astype(np.uint16, copy=False)
    return Labels(image, mask, instances)


def instance_counts(mask: np.ndarray, instances: np.ndarray, n_classes: int = len(CLASS_NAMES)) -> np.ndarray:
    """Cells per class in an instance map: each label is counted once, in the class of its pixels."""
    labels = instances.ravel().astype(np.int64)
    classes = mask.ravel()
    cls_of = np.zeros(int(labels.max()) + 1 if labels.size else 1, np.int64)
    cls_of[labels] = classes  # any pixel's class will do once the instance/class consistency is checked
    present = np.bincount(labels, minlength=cls_of.size) > 0
    present[0] = False
    return np.bincount(cls_of[present], minlength=n_classes)


def write_sample(root: Path, stem: str, image: np.ndarray | None, mask: np.ndarray, instances: np.ndarray | None,
                 image_suffix: str = ".png", n_classes: int = len(CLASS_NAMES)) -> np.ndarray | None:
    """Write one sample's files atomically; returns its per-class cell counts when instances are given."""
    if image is not None:
        write_image(root / "images" / f"{stem}{image_suffix}", image)
    write_image(root / "masks" / f"{stem}.png", mask, LABEL_MAP_PNG)
    if instances is None:
        return None
    write_image(root / "instances" / f"{stem}.png", instances.astype(np.uint16, copy=False), LABEL_MAP_PNG)
    return instance_counts(mask, instances, n_classes)


@dataclass
class DatasetWriter:
    """Writes samples one by one and ``dataset.json`` last, so an interrupted run leaves a valid dataset.

    Every file is written under a temporary name and renamed; ``complete`` is false in the metadata when the
    writer was left by an exception (Ctrl-C included).
    """

    root: Path
    source: str
    seed: int | None = None
    pixel_size_um: float = DEFAULT_PIXEL_SIZE_UM
    classes: tuple[str, ...] = CLASS_NAMES
    extra: dict[str, Any] = field(default_factory=dict)
    labels: str | None = None  # where the labels came from (see label_origin); None leaves it to be inferred
    annotations: str = "masks"  # or a count-only kind: then no masks/ folder is made
    per_image: dict[str, dict[str, int] | None] = field(default_factory=dict)  # None: counts not computed
    skipped: list[dict[str, str]] = field(default_factory=list)

    def __enter__(self) -> DatasetWriter:
        self.root = Path(self.root)
        for sub in ("images", "masks") if self.annotations == "masks" else ("images",):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        return self

    def add(self, stem: str, image: np.ndarray | None, mask: np.ndarray, instances: np.ndarray | None = None,
            image_suffix: str = ".png") -> None:
        """Write one sample; ``image`` None keeps an image that is already in place (auto-labelling)."""
        self.record(stem, write_sample(self.root, stem, image, mask, instances, image_suffix, len(self.classes)))

    def record(self, stem: str, counts: np.ndarray | None) -> None:
        """Register a sample written elsewhere (by a worker process) with its per-class cell counts (None where no
        instance map gave them)."""
        self.per_image[stem] = None if counts is None else {n: int(counts[i]) for i, n in enumerate(self.classes) if i}

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append({"file": name, "reason": reason})

    def write_meta(self, complete: bool) -> None:
        """``images`` holds the counts of the images that have them; ``counts``, their total, only when every image
        has them: a count that was not computed is absent, never a 0 a reader would take for a measurement."""
        counted = {stem: c for stem, c in self.per_image.items() if c is not None}
        meta = {
            "format": FORMAT,
            "classes": list(self.classes),
            "pixel_size_um": self.pixel_size_um,
            "source": self.source,
            "seed": self.seed,
            "n_images": len(self.per_image),
        }
        if counted and len(counted) == len(self.per_image):
            meta["counts"] = {name: sum(c[name] for c in counted.values()) for name in self.classes[1:]}
        if counted:
            meta["images"] = counted
        meta.update({
            "skipped": self.skipped,
            "complete": complete,
            "annotations": self.annotations,
            **({"labels": self.labels} if self.labels else {}),
            **self.extra,
        })
        write_text(self.root / META_FILE, json.dumps(meta, indent=2) + "\n")

    def __exit__(self, exc_type, exc, tb) -> None:
        self.write_meta(complete=exc_type is None)


# What a dataset folder holds as its own: its readers take a file written among these by another command as one of
# its images or labels, or as its description.
DATASET_FILES = ("images", "masks", "instances", META_FILE)


def check_outside_dataset(out: Path, root: Path, flag: str = "--out") -> None:
    """An error where an output would land among dataset ``root``'s own files (`DATASET_FILES`): onto its
    dataset.json (an export or a summary replaced its classes, pixel size and provenance, and `check` still said ok)
    or into images/, masks/ or instances/ (one more image without labels, or labels without an image, and the
    dataset stopped opening)."""
    out, root = Path(out).resolve(), Path(root).resolve()
    own = {root / name for name in DATASET_FILES}
    if out in own or out.parent in own:
        raise CscError(f"{flag} lies among the dataset's own files ({out.relative_to(root).as_posix()})", path=out,
                       fix=f"write {flag} outside the dataset's {', '.join(DATASET_FILES)}")


def check_new_dataset_folder(out: Path) -> None:
    """An error unless ``out`` is free for a new dataset: absent, or an empty folder. Written into another dataset,
    a new one keeps the other's files beside its own (a shorter `synth` run left the longer one's last images, which
    `check` passed and training took, though dataset.json listed fewer); written into its own source
    (`rescale --out` the dataset it reads), it replaces the images it is still reading."""
    if (out / META_FILE).exists():
        raise CscError("--out already holds a dataset", path=out, fix="choose a new folder or delete this one")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CscError("--out exists and is not an empty folder", path=out, fix="choose a new folder")


def unfinished(root: Path, meta: dict[str, Any]) -> list[str]:
    """A check's problem where dataset.json says its writer stopped early (Ctrl-C, `--strict`'s first bad image):
    every file it lists may be sound, and still the set is not the one asked for."""
    if meta.get("complete") is not False:
        return []
    return [f"{root / META_FILE}: incomplete: the run that wrote it stopped early (interrupted, or stopped at a bad "
            "image) — run that command again (`csc-label auto` replaces its own output; others: into a new folder)"]


@dataclass
class CheckReport:
    n_images: int
    problems: list[str]
    pixel_fraction: dict[str, float]
    cells: dict[str, int] | None
    sizes: dict[str, int]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_dataset(root: str | Path) -> CheckReport:
    """Validate every file (mask present, readable, sizes, class ids, instance/class agreement, metadata) and gather
    statistics; every bad file is a problem in the report, none stops the check."""
    root = _dataset_root(root)
    problems: list[str] = []
    try:
        images = list_images(root / "images")
    except CscError as err:  # a problem like any other: a run stopped before its first image says so below
        images = []
        problems.append(str(err))
    samples, unpaired = _pair_samples(root, images)
    problems += [str(err) for err in unpaired]
    try:
        meta = read_meta(root)
    except CscError as err:
        problems.append(str(err))
        meta = {"classes": list(CLASS_NAMES)}
    problems += unfinished(root, meta)
    dataset = Dataset(root, samples, meta)
    names = dataset.classes
    pixels = np.zeros(len(names), np.int64)
    cells = np.zeros(len(names), np.int64)
    have_instances = True
    sizes: dict[str, int] = {}
    for sample in dataset.samples:
        try:
            labels = load_sample(sample, len(names))
        except CscError as err:
            problems.append(str(err))
            continue
        h, w = labels.mask.shape
        sizes[f"{w}x{h}"] = sizes.get(f"{w}x{h}", 0) + 1
        pixels += np.bincount(labels.mask.ravel(), minlength=len(names))[: len(names)]
        if labels.instances is None:
            have_instances = False
            continue
        inst = labels.instances
        if np.any((inst > 0) & (labels.mask == 0)) or np.any((inst == 0) & (labels.mask > 0)):
            problems.append(f"{sample.instances}: instance labels and mask disagree on which pixels are cells")
            continue
        # One class per instance: the min and max class over each label's pixels must agree.
        n = int(inst.max()) + 1
        lo = np.full(n, 255, np.int64)
        hi = np.zeros(n, np.int64)
        np.minimum.at(lo, inst.ravel(), labels.mask.ravel())
        np.maximum.at(hi, inst.ravel(), labels.mask.ravel())
        if np.any(lo[1:][hi[1:] > 0] != hi[1:][hi[1:] > 0]):
            problems.append(f"{sample.instances}: an instance label spans more than one class")
            continue
        cells += instance_counts(labels.mask, inst, len(names))
    if dataset.root.joinpath("masks").is_dir():
        stems = {s.stem for s in dataset.samples}
        for orphan in sorted(p for p in (dataset.root / "masks").iterdir() if p.stem not in stems):
            problems.append(f"{orphan}: mask has no image")
    total = max(1, int(pixels.sum()))
    return CheckReport(
        n_images=len(images),
        problems=problems,
        pixel_fraction={n: float(pixels[i]) / total for i, n in enumerate(names)},
        cells={n: int(cells[i]) for i, n in enumerate(names) if i} if have_instances else None,
        sizes=sizes,
    )


