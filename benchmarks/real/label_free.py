"""Label-free images, the paper's own domain (issue #21): the auto-labeller with no scale and no modality given,
against a simple reference measured in the same run.

Sets (real ones read from ``../shared/real``, never copied; skipped with the reason when absent):
- **BBBC030** (real DIC of live, unstained CHO cells; 787 hand-outlined instances; CC BY 3.0 — Koos et al. 2016,
  Sci. Rep. 6:30420, via the Broad Bioimage Benchmark Collection, Ljosa et al. 2012, Nat. Methods 9:637).
  Labelled ``--kind macrophage`` (the nearest size). Split by name: cho01–cho30 is the tuning part (every choice in
  trainer/label_free.py and runtime/data/modality.py was made looking at it), cho31–cho60 the evaluation part that no
  choice looked at. Its outlines leave out-of-focus cells and debris unannotated and draw 25 doublets as one
  object (its README), so precision and the count are bounded by the annotation, not only by the labeller.
- **BBBC030 resized** (`RESIZED`: ×0.5 and ×2, cells 26 and 106 px across): the labeller alone, at other
  magnifications of the same real images.
- **BBBC030 in sparse crops** (`SPARSE_CROPS`: ×2 in 1024-px crops, cells 106 px across, two or three a crop; each
  part's crops one folder): the sparse high-magnification regime in real DIC, the labeller as a folder and each
  crop alone beside the reference.
- **Simulated optics** (runtime/data/simulator.py, a test fixture, not evidence): the same scenes rendered as stained
  brightfield, unstained brightfield, phase contrast and DIC, single-kind RBC and macrophage frames (macrophages
  with pseudopods), at a seed no choice looked at; and the label-free optics at two and four times the
  magnification (`MAGNIFIED`: RBCs 30 and 60 px across, macrophages 82), as many cells per µm²; and in full
  4000×3000 frames of the paper's camera at its own magnification (`FULL_FRAME`); and sparse fields of one to
  eight cells at high magnification among the usual debris (`SPARSE`).
- **Stained smears** (no regression): the Chula evaluation subset, the BCCD evaluation half and the DSB nuclei
  crop, scored exactly as benchmarks/real/real_counts.py scores them.

Rows: ``csc-label auto --split-touching`` (scale and modality decided per image, each set labelled as one folder:
its label-free cells measured together first and its optics voted, `trainer.autolabel.for_folder`), and the reference: local
variance (σ an eighth of the cell diameter) + Otsu + holes filled + distance watershed, **given the true median
cell diameter** (the labeller is given nothing). Metrics: instance F1 at IoU 0.5, count ratio (predicted /
annotated), and mIoU as the paper's eq. 5 (the mean over background and cells of the IoU summed over the set);
how each image's modality was detected.

Run: python -m benchmarks.real.label_free [--real ../shared/real] [--n 12] [--seed 21]
                                     [--out benchmarks/results/label_free.json]
     python -m benchmarks.real.label_free --only magnified|sparse|full_frames|bbbc030_sparse [--out ...]
                                         (those sets alone; --magnified-only: the same as --only magnified)
     python -m benchmarks.real.label_free --table benchmarks/results/label_free.json   (the README table)
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

from benchmarks.publish import publish, tree_state
from benchmarks.real.real_counts import headline, nuclei, real_sets, score_nuclei, watershed_split
from runtime.classes import CELL_SIZES, MACROPHAGE, RBC
from runtime.counting.metrics import match_instances
from runtime.errors import CscError
from runtime.data.first_pass import first_pass
from runtime.data.modality import LABEL_FREE, detect_modality
from runtime.data.simulator import SimConfig, make_microscope
from trainer.autolabel import AutoLabelConfig, auto_label, folder_entry, for_folder
from trainer.holes import fill_holes

ROOT = Path(__file__).resolve().parents[2]
OPTICS = ("stained", "brightfield", "phase", "dic")
PSEUDOPODS = 2.0  # mean protrusions per simulated macrophage
TUNING = tuple(f"cho{i:02d}" for i in range(1, 31))
EVALUATION = tuple(f"cho{i:02d}" for i in range(31, 61))

# (a set's images, true median diameter px) → instance labels per image
Method = Callable[[list[np.ndarray], float], list[np.ndarray]]


def labeller(kind: str) -> Method:
    """`csc-label auto DIR --kind KIND --split-touching`, nothing else given (the diameter is not passed on): a
    set's images as one folder, their label-free cells first measured together and their optics voted
    (`for_folder`)."""
    config = AutoLabelConfig(kind=kind, split_touching=True)

    def label(images: list[np.ndarray], _diameter: float) -> list[np.ndarray]:
        entries = [folder_entry(image, config) for image in images]
        folder = for_folder(config, entries)
        return [auto_label(image, folder, own).instances.astype(np.int32) for image, own in zip(images, entries)]

    return label


def per_image(method: Callable[[np.ndarray, float], np.ndarray]) -> Method:
    """A method that labels each image alone as a `Method`."""
    return lambda images, diameter: [method(image, diameter) for image in images]


def alone(kind: str) -> Method:
    """The labeller on each image alone (`auto_label`; before a folder's cells were measured together): the
    sparse sets show what the folder adds."""
    config = AutoLabelConfig(kind=kind, split_touching=True)
    return per_image(lambda image, _diameter: auto_label(image, config).instances.astype(np.int32))


def local_variance_reference(image: np.ndarray, diameter_px: float) -> np.ndarray:
    """The reference: local standard deviation over σ = d/8, Otsu, holes filled, watershed at the true size."""
    grey = (cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image).astype(np.float32)
    sigma = max(1.0, diameter_px / 8)
    mean = cv2.GaussianBlur(grey, (0, 0), sigma)
    std = np.sqrt(np.maximum(cv2.GaussianBlur(grey * grey, (0, 0), sigma) - mean * mean, 0))
    mask = cv2.threshold(cv2.normalize(std, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8), 0, 255,
                         cv2.THRESH_BINARY | cv2.THRESH_OTSU)[1]
    return watershed_split(fill_holes(mask), image, diameter_px / 2)


METHODS: dict[str, Callable[[str], Method]] = {
    "csc-label auto --split-touching (nothing given)": labeller,
    "reference: local variance + Otsu + watershed (true diameter given)": lambda _kind: per_image(local_variance_reference),
}


def score(pairs: Iterable[tuple[np.ndarray, np.ndarray]], method: Method, diameter_px: float) -> dict:
    """Instance F1 at IoU 0.5, count ratio and the set's mIoU of one method over (image, truth) pairs."""
    began = time.perf_counter()
    tp = fp = fn = predicted = annotated = 0
    inter, union = np.zeros(2), np.zeros(2)
    pairs = list(pairs)
    for (_, truth), labels in zip(pairs, method([image for image, _ in pairs], diameter_px), strict=True):
        a, b, c = match_instances(labels, truth)
        tp, fp, fn = tp + a, fp + b, fn + c
        predicted += len(np.unique(labels)) - 1
        annotated += len(np.unique(truth)) - 1
        for k, (p, t) in enumerate(((labels == 0, truth == 0), (labels > 0, truth > 0))):
            inter[k] += np.count_nonzero(p & t)
            union[k] += np.count_nonzero(p | t)
    return {"f1_iou50": round(2 * tp / max(1, 2 * tp + fp + fn), 4), "tp": tp, "fp": fp, "fn": fn,
            "predicted": predicted, "annotated": annotated, "count_ratio": round(predicted / max(1, annotated), 4),
            "miou": round(float(np.mean(inter / np.maximum(union, 1))), 4),
            "seconds": round(time.perf_counter() - began, 1)}


def bbbc030_pairs(real: Path, stems: Iterable[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(image, hand-drawn instances) of BBBC030's images with these stems, read from ``real``."""
    root = real / "bbbc030-dic"
    for stem in stems:
        yield (cv2.imread(str(root / "images" / f"{stem}.png"), cv2.IMREAD_UNCHANGED),
               cv2.imread(str(root / "instances" / f"{stem}.png"), cv2.IMREAD_UNCHANGED))


def bbbc030(real: Path) -> dict:
    """Both parts of BBBC030 with every method, and the detected modalities."""
    root = real / "bbbc030-dic"
    if not (root / "images").is_dir():
        return {"skipped": f"{root} is absent (see ../shared/real/README.md)"}
    with (root / "counts.csv").open(newline="", encoding="utf-8") as f:
        areas = [float(row["median_area_px"]) for row in csv.DictReader(f)]
    diameter = 2 * math.sqrt(float(np.median(areas)) / math.pi)
    out: dict = {"kind": "macrophage", "true_median_diameter_px": round(diameter, 1), "parts": {}}
    for part, stems in (("tuning", TUNING), ("evaluation", EVALUATION)):
        modalities = Counter(detect_modality(image).modality for image, _ in bbbc030_pairs(real, stems))
        out["parts"][part] = {"images": f"{stems[0]}–{stems[-1]}", "modality_detected": dict(modalities),
                              "methods": {name: score(bbbc030_pairs(real, stems), make("macrophage"), diameter)
                                          for name, make in METHODS.items()}}
    return out


# BBBC030 resized by these factors (its CHO cells 26 and 106 px across instead of 53): the labeller, given nothing,
# at other magnifications of real DIC images.
RESIZED = (0.5, 2.0)


def resized_pairs(pairs: Iterable[tuple[np.ndarray, np.ndarray]],
                  factor: float) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(image, instances) pairs resized by ``factor``: the image averaged down or interpolated up, the instances by
    their nearest pixel."""
    for image, truth in pairs:
        size = (round(image.shape[1] * factor), round(image.shape[0] * factor))
        yield (cv2.resize(image, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR),
               cv2.resize(truth, size, interpolation=cv2.INTER_NEAREST))


def bbbc030_resized(real: Path) -> dict:
    """The labeller alone on both parts of BBBC030 at each RESIZED factor."""
    root = real / "bbbc030-dic"
    if not (root / "images").is_dir():
        return {"skipped": f"{root} is absent (see ../shared/real/README.md)"}
    out: dict = {}
    for factor in RESIZED:
        out[f"×{factor:g}"] = {part: score(resized_pairs(bbbc030_pairs(real, stems), factor), labeller("macrophage"),
                                           0.0)
                               for part, stems in (("tuning", TUNING), ("evaluation", EVALUATION))}
    return out


# BBBC030 enlarged this much and cut in square crops of this side (cells about 106 px across, none to eight a crop,
# two or three as a rule): the sparse high-magnification regime of the held-out DIC RBCs (about 72 px, five
# a frame), in real DIC. Each part's crops are one folder.
SPARSE_CROPS = (2.0, 1024)


def cropped_pairs(pairs: Iterable[tuple[np.ndarray, np.ndarray]],
                  side: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Each (image, instances) pair cut in ``side``-px square crops on a grid from the top left (the remainder at the
    right and bottom edges dropped); a cell cut by a crop's edge is the part of it inside, in the truth as in the
    image."""
    for image, truth in pairs:
        for y in range(0, truth.shape[0] - side + 1, side):
            for x in range(0, truth.shape[1] - side + 1, side):
                yield image[y:y + side, x:x + side], truth[y:y + side, x:x + side]


def bbbc030_sparse(real: Path) -> dict:
    """Both parts of BBBC030 as SPARSE_CROPS, each part one folder: the labeller as a folder and each crop alone,
    and the reference given the true size."""
    root = real / "bbbc030-dic"
    if not (root / "images").is_dir():
        return {"skipped": f"{root} is absent (see ../shared/real/README.md)"}
    factor, side = SPARSE_CROPS
    with (root / "counts.csv").open(newline="", encoding="utf-8") as f:
        diameter = factor * 2 * math.sqrt(float(np.median([float(row["median_area_px"]) for row in csv.DictReader(f)]))
                                          / math.pi)
    methods = {**METHODS, "csc-label auto, each image alone": alone}
    out: dict = {"factor": factor, "crop_px": side, "true_median_diameter_px": round(diameter, 1), "parts": {}}
    for part, stems in (("tuning", TUNING), ("evaluation", EVALUATION)):
        pairs = list(cropped_pairs(resized_pairs(bbbc030_pairs(real, stems), factor), side))
        out["parts"][part] = {
            "images": f"{stems[0]}–{stems[-1]}", "crops": len(pairs),
            "modality_detected": dict(Counter(detect_modality(image).modality for image, _ in pairs)),
            "methods": {name: score(pairs, make("macrophage"), diameter) for name, make in methods.items()}}
    return out


def simulated(n: int, seed: int, size: int = 512, kinds: Iterable[str] = ("rbc", "macrophage"),
              optics_names: Iterable[str] = OPTICS, pixel_size_um: float | None = None,
              height: int | None = None, crowding: float = 1.0,
              methods: dict[str, Callable[[str], Method]] = METHODS) -> dict:
    """Every optics × single kind, the same scenes in each optics; at the simulator's own pixel size, or at
    ``pixel_size_um`` with as many cells per µm² (larger cells, fewer of them per frame) times ``crowding``; frames
    ``size`` px square, or ``height`` px high."""
    out: dict = {"n": n, "seed": seed, "size": size, "pseudopods": PSEUDOPODS, "sets": {}}
    if pixel_size_um is not None:
        out["pixel_size_um"] = pixel_size_um
    if height is not None:
        out["height"] = height
    if crowding != 1.0:
        out["crowding"] = crowding
    for kind in kinds:
        cls = RBC if kind == "rbc" else MACROPHAGE
        extra = {"pseudopods": PSEUDOPODS} if kind == "macrophage" else {}
        if height is not None:
            extra["height"] = height
        if pixel_size_um is not None:
            extra["pixel_size_um"] = pixel_size_um
        if pixel_size_um is not None or crowding != 1.0:
            extra["density"] = density_at(kind, pixel_size_um or SimConfig().pixel_size_um, crowding)
        for optics in optics_names:
            microscope = make_microscope(kind, size=size, seed=seed, optics=optics, **extra)
            frames = [microscope.frame(i) for i in range(n)]
            diameter = CELL_SIZES[cls].typical_um / microscope.config.pixel_size_um
            out["sets"][f"{kind} {optics}"] = {
                "modality_detected": dict(Counter(detect_modality(f.image).modality for f in frames)),
                **({"first_pass_copy": first_pass_copies(f.image for f in frames)} if optics in LABEL_FREE else {}),
                "methods": {name: score(((f.image, f.instances) for f in frames), make(kind), diameter)
                            for name, make in methods.items()}}
    return out


def density_at(kind: str, pixel_size_um: float, crowding: float = 1.0) -> float:
    """The simulator's ``density`` (cells a 512² frame) for ``kind`` at ``pixel_size_um``: as many cells per µm² as
    at its own pixel size, times ``crowding``."""
    zoom = pixel_size_um / SimConfig().pixel_size_um
    return SimConfig(mode=kind).mean_cells * zoom * zoom * crowding


def first_pass_copies(images: Iterable[np.ndarray]) -> dict[str, int]:
    """How many frames the labeller's first pass measured on each copy (`runtime.data.first_pass`: "1" full size,
    "2", "4", "8" halved that often) alone: which rule a label-free set's scale estimate rested on, before the
    folder's measure (which a frame takes where its own is under half the folder's: the sparse sets)."""
    return dict(sorted(Counter(str(first_pass(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image)
                                   .factor) for image in images).items(), key=lambda item: int(item[0])))


# Label-free cells at higher magnifications than the simulator's 0.4 µm/px: (kind, µm/px, frame size). RBCs 30 and
# 60 px across (the held-out DIC RBCs are about 72), macrophages about 82; frames large enough to hold ten
# or more cells each.
MAGNIFIED = (("rbc", 0.2, 512), ("rbc", 0.1, 1024), ("macrophage", 0.2, 1024))


def magnified(n: int, seed: int) -> dict:
    """The label-free optics at the MAGNIFIED scales, ``n`` frames each."""
    return {f"{kind} at {pixel} µm/px": simulated(n, seed, size, (kind,), OPTICS[1:], pixel)
            for kind, pixel, size in MAGNIFIED}


# Sparse fields at high magnification: (kind, µm/px, frame size) at SPARSE_CROWDING of the simulator's cells per
# µm², one to eight cells a 1024-px frame, among as much debris as ever — as the held-out DIC RBCs (about
# 72 px, five a frame). RBCs 60 px across, macrophages 82 and 164.
SPARSE = (("rbc", 0.1, 1024), ("macrophage", 0.2, 1024), ("macrophage", 0.1, 1024))
SPARSE_CROWDING = 0.3


def sparse(n: int, seed: int) -> dict:
    """The label-free optics in SPARSE fields, ``n`` frames each (a folder: `labeller`)."""
    methods = {**METHODS, "csc-label auto, each image alone": alone}
    return {f"{kind} at {pixel} µm/px": simulated(n, seed, size, (kind,), OPTICS[1:], pixel, crowding=SPARSE_CROWDING,
                                                 methods=methods)
            for kind, pixel, size in SPARSE}


# The paper's camera (§2.3): full 4000×3000 frames at the magnification of its 512-px crops, the simulator's own.
FULL_FRAME = (3000, 4000)


def full_frames(n: int, seed: int) -> dict:
    """The label-free optics in full frames of the paper's camera (`FULL_FRAME`), ``n`` frames each: where a frame
    shrunk whole to the modality detection's size leaves its cells a few px across (`DETECT_CELLS_PX`)."""
    return {f"{kind} at {FULL_FRAME[1]}×{FULL_FRAME[0]}": simulated(n, seed, FULL_FRAME[1], (kind,), OPTICS[1:],
                                                                   height=FULL_FRAME[0])
            for kind in ("rbc", "macrophage")}


def smears(real: Path) -> dict:
    """The labeller on the stained sets, scored as benchmarks/real/real_counts.py scores them (no regression)."""
    from benchmarks.real.real_counts import labeller as rbc_labeller

    method = rbc_labeller()
    out: dict = {"method": "csc-label auto --split-touching (scale estimated)"}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for key, result in real_sets(real, Path(tmp)).score(method).items():
                out[key] = {**headline(result.summary), **result.extra}
    except CscError as err:
        out["skipped"] = str(err)
    pair = nuclei()
    out["dsb_nuclei"] = ({"skipped": "needs `pip install --no-deps stardist==0.9.2`"} if pair is None else
                         score_nuclei(*pair, method).summary)
    return out


def measure(real: Path, n: int = 12, seed: int = 21) -> dict:
    return {"what": "auto-labels of label-free images with nothing given, against a local-variance reference given "
                    "the true cell size; the stained smears for no regression", **tree_state(ROOT),
            "bbbc030": bbbc030(real), "bbbc030_resized": bbbc030_resized(real), "bbbc030_sparse": bbbc030_sparse(real),
            "simulated": simulated(n, seed),
            "magnified": magnified(max(1, n // 2), seed), "sparse": sparse(n, seed),
            "full_frames": full_frames(max(1, n // 12), seed),
            "smears": smears(real)}


def render_markdown(result: dict) -> str:
    """The README table: one row per set and method (F1 at IoU 0.5, count ratio, mIoU, modality detected)."""
    lines = ["| set | method | instance F1 | count ratio | mIoU | modality detected |", "|---|---|---:|---:|---:|---|"]

    def rows(name: str, entry: dict) -> None:
        detected = ", ".join(f"{m} {n}" for m, n in entry["modality_detected"].items())
        for method, r in entry["methods"].items():
            lines.append(f"| {name} | {method} | {r['f1_iou50']:.3f} | {r['count_ratio']:.3f} | {r['miou']:.3f} | "
                         f"{detected} |")

    for part, entry in result["bbbc030"].get("parts", {}).items():
        rows(f"BBBC030 {part} ({entry['images']})", entry)
    for factor, parts in result.get("bbbc030_resized", {}).items():
        for part, r in parts.items() if isinstance(parts, dict) else ():
            lines.append(f"| BBBC030 {part} resized {factor} | {next(iter(METHODS))} | {r['f1_iou50']:.3f} | "
                         f"{r['count_ratio']:.3f} | {r['miou']:.3f} | — |")
    sparse_crops = result.get("bbbc030_sparse", {})
    for part, entry in sparse_crops.get("parts", {}).items():
        rows(f"BBBC030 {part} ×{sparse_crops['factor']:g} in {sparse_crops['crop_px']}-px crops ({entry['crops']})",
             entry)
    for name, entry in result["simulated"]["sets"].items():
        rows(f"simulated {name}", entry)
    for section in ("magnified", "sparse", "full_frames"):
        for scale, sets in result.get(section, {}).items():
            for name, entry in sets["sets"].items():
                rows(f"simulated {name}, {scale.split(' at ')[1]}", entry)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, default=ROOT.parent / "shared" / "real")
    parser.add_argument("--n", type=int, default=12, help="simulated frames per optics and kind")
    parser.add_argument("--seed", type=int, default=21, help="simulator seed (tuning used 20)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--table", type=Path, default=None, help="print the README table of a result file and exit")
    parser.add_argument("--only", choices=("magnified", "sparse", "full_frames", "bbbc030_sparse"), default=None,
                        help="only the MAGNIFIED, SPARSE, FULL_FRAME or SPARSE_CROPS sets (to measure another commit's "
                             "labeller on them)")
    parser.add_argument("--magnified-only", dest="only", action="store_const", const="magnified",
                        help="the same as --only magnified")
    args = parser.parse_args()
    if args.table is not None:
        print(render_markdown(json.loads(args.table.read_text(encoding="utf-8"))), end="")
    elif args.only is not None:
        sets = {"magnified": lambda: magnified(max(1, args.n // 2), args.seed), "sparse": lambda: sparse(args.n, args.seed),
                "full_frames": lambda: full_frames(max(1, args.n // 12), args.seed),
                "bbbc030_sparse": lambda: bbbc030_sparse(args.real)}[args.only]()
        publish({"what": f"the label-free optics, {args.only.replace('_', ' ')} only", **tree_state(ROOT),
                 "bbbc030": {}, "simulated": {"sets": {}}, args.only: sets}, args.out)
    else:
        publish(measure(args.real, args.n, args.seed), args.out)
