"""Counting on real microscope images: the project's paths and a simple reference, measured in one run.

Data (read from ``../shared/real``, never copied; skipped with the reason when absent):
- **Chula RBC-12**: the evaluation subset in benchmarks/data/chula_eval_subset.json — images whose point
  annotation was checked complete on full-resolution overlays (its ``how`` says how they were chosen). Its points
  mark cells near the frame edge inconsistently, so a band of half an RBC (18 px) along the edge is not scored.
  640×480, ≈0.194 µm/px. ``--part blind`` scores the blind part instead (benchmarks/data/chula_blind_part.json:
  images no choice of the project looked at, frozen before any method ran on them; its ``caveats`` say what it
  can and cannot show).
- **BCCD + TXL-PBC**: mixed smears with RBC and WBC boxes; an RBC box's centre is its point. The 97 images with an
  odd position in name order are scored (`bccd_half("eval")`); the other 97 may train a model
  (benchmarks/real/real_model.py). RBCs are ≈100 px across (≈0.075 µm/px for a 7.5 µm cell, from the median box); each
  image holds one or two WBCs, reported as "WBCs counted as RBCs" (a WBC box centre inside a counted RBC).
- **DSB 2018 nuclei**: the crop with 125 hand-drawn instances inside the stardist 0.9.2 wheel (fluorescence):
  mIoU (background + cells), count, F1 at IoU 0.5.

Paths (rows), all through the project's own code except the reference:
- ``csc-label auto --split-touching`` with no scale (the defaults: the diameter is estimated per image),
- the same with the dataset's ``--pixel-size``,
- ``--paper`` (the paper's steps) at 0.4 µm/px — what the labeller did before it knew about scale — and at the
  dataset's pixel size,
- the reference: Otsu on grey, holes filled, distance-transform watershed, parameters from the physical cell size
  at the given pixel size (as measured in the real-images issue),
- with ``--model``, the runtime (`csc-run --images DIR --pixel-size P`): the model's class map, rescaled to the
  model's pixel size, counted by the runtime counter.
Scoring is `runtime.counting.evaluation.PointScorer` (point / box-centre F1, count ratio, MAE per image), the code
`csc-data count --truth` uses.

Run: python -m benchmarks.real.real_counts [--real ../shared/real] [--model runtime/models/default.onnx]
                                      [--part development|blind] [--out benchmarks/results/real_counts.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from pathlib import Path

import cv2
import numpy as np

from benchmarks.publish import publish
from runtime.classes import RBC
from runtime.counting.metrics import match_instances
from runtime.counting.counter import CountingConfig, cells_from_instances
from runtime.errors import CscError
from runtime.io.imageio import read_image
from trainer.ablation import NUCLEI_PIXEL_UM as DSB_PIXEL_UM  # nuclei of ≈24 px taken as 6 µm cells
from trainer.autolabel import PAPER_STEPS, AutoLabelConfig, auto_label
from trainer.holes import fill_holes

ROOT = Path(__file__).resolve().parents[2]
SUBSET = ROOT / "benchmarks" / "data" / "chula_eval_subset.json"
# The Chula parts scored: the development subset (choices were made watching it) and the blind part (none were)
CHULA_PARTS = {"development": SUBSET, "blind": ROOT / "benchmarks" / "data" / "chula_blind_part.json"}
RBC_UM = 7.5  # a human RBC's diameter: the reference's only size parameter
CHULA_PIXEL_UM = 0.194  # from the burnt-in scale bars (../shared/real/README.md)
BCCD_PIXEL_UM = 0.075  # a 7.5 µm RBC over the median TXL-PBC RBC box (≈100 px)
CHULA_EDGE_BAND = 18  # half an RBC: cells this close to the frame edge are marked inconsistently

Labeller = Callable[[np.ndarray, float], np.ndarray]  # (BGR image, the dataset's pixel size) → instance labels


def reference_labels(image: np.ndarray, pixel_size_um: float) -> np.ndarray:
    """The baseline: Otsu on grey (cells dark), holes filled, then `watershed_split` at an RBC's size."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    polarity = cv2.THRESH_BINARY_INV if np.median(grey) > grey.mean() else cv2.THRESH_BINARY
    mask = fill_holes(cv2.threshold(grey, 0, 255, polarity | cv2.THRESH_OTSU)[1])
    return watershed_split(mask, image, RBC_UM / pixel_size_um / 2)


def watershed_split(mask: np.ndarray, image: np.ndarray, radius: float) -> np.ndarray:
    """The reference's instances of a cell mask: specks below a quarter of a cell of ``radius`` px removed, markers
    at distance maxima at least 0.4 radius high and 0.6 radius apart, watershed (OpenCV) from them."""
    n, comp, stats, _ = cv2.connectedComponentsWithStats(mask, 8)
    small = stats[:, cv2.CC_STAT_AREA] < 0.25 * np.pi * radius**2
    small[0] = False
    mask[small[comp]] = 0
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    side = 2 * int(round(0.6 * radius)) + 1
    peaks = (dist >= cv2.dilate(dist, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))) - 1e-3) & \
            (dist > 0.4 * radius)
    _, markers = cv2.connectedComponents(peaks.astype(np.uint8))
    markers = (markers + 1).astype(np.int32)
    markers[(mask > 0) & ~peaks] = 0  # to be flooded
    markers = cv2.watershed(image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), markers)
    return np.where(markers > 1, markers - 1, 0).astype(np.int32)


def labeller(**settings) -> Labeller:
    """`csc-label auto --split-touching` with these settings; ``pixel_size_um=True`` takes the dataset's."""
    def run(image: np.ndarray, pixel_size_um: float) -> np.ndarray:
        given = settings.get("pixel_size_um")
        config = AutoLabelConfig(kind="rbc", split_touching=True,
                                 **{**settings, "pixel_size_um": pixel_size_um if given is True else given})
        return auto_label(image, config).instances.astype(np.int32)
    return run


METHODS: dict[str, Labeller] = {
    "csc-label auto --split-touching (scale estimated)": labeller(),
    "csc-label auto --split-touching --pixel-size P": labeller(pixel_size_um=True),
    "csc-label auto --split-touching --paper --pixel-size 0.4": labeller(pixel_size_um=0.4, **PAPER_STEPS),
    "csc-label auto --split-touching --paper --pixel-size P": labeller(pixel_size_um=True, **PAPER_STEPS),
    "reference: Otsu + fill + watershed (pixel size P)": reference_labels,
}


def runtime_labeller(model: Path, calibrated: bool = False, **counting) -> Labeller:
    """The runtime path of `csc-run --images DIR --pixel-size P`: the frame rescaled to the model's pixel size,
    segmented (tiled) by ONNX Runtime, counted by the runtime counter (``counting``: CountingConfig options), the
    RBC instances mapped back to the frame. ``calibrated``: `csc-run` without a pixel size instead, each image
    calibrated alone (runtime/counting/calibration.py; a run calibrates on its first three frames)."""
    from benchmarks.real.runtime_path import RuntimePath

    path = RuntimePath(model, **counting)

    def run(image: np.ndarray, pixel_size_um: float) -> np.ndarray:
        if calibrated:
            pixel_size_um = path.calibrated([image]).pixel_size_um or path.meta.pixel_size_um
        return path.cells(image, pixel_size_um, ["rbc"])[0]
    return run


@dataclass
class Scored:
    """One method on one dataset: the scorer's summary plus extras."""

    summary: dict
    seconds: float
    extra: dict


def score_marks(dataset, stems: list[str] | None, method: Labeller, pixel_size_um: float, edge_band: float,
                wbc: dict[str, np.ndarray] | None = None) -> Scored:
    """Point / box-centre scores of one method over a count-only dataset (optionally only ``stems``)."""
    from runtime.counting.evaluation import PointScorer

    scorer = PointScorer(CountingConfig(class_names=("background", "rbc"), pixel_size_um=pixel_size_um),
                         dataset.classes, edge_band=edge_band)
    samples = [s for s in dataset.samples if stems is None or s.stem in stems]
    wbc_as_rbc = wbcs = 0
    began = time.perf_counter()
    for sample in samples:
        labels = method(read_image(sample.image), pixel_size_um)
        scorer.add_labels(labels, cells_from_instances(labels, RBC, pixel_size_um), sample)
        if wbc is not None and sample.stem in wbc:
            centres = wbc[sample.stem]
            wbcs += len(centres)
            xs = np.clip(np.rint(centres[:, 0]).astype(int), 0, labels.shape[1] - 1)
            ys = np.clip(np.rint(centres[:, 1]).astype(int), 0, labels.shape[0] - 1)
            wbc_as_rbc += int(np.count_nonzero(labels[ys, xs]))
    extra = {"wbcs": wbcs, "wbcs_counted_as_rbc": wbc_as_rbc} if wbc is not None else {}
    return Scored(scorer.summary(), round(time.perf_counter() - began, 1), extra)


def score_nuclei(image: np.ndarray, truth: np.ndarray, method: Labeller) -> Scored:
    began = time.perf_counter()
    labels = method(image, DSB_PIXEL_UM)
    pred, true = labels > 0, truth > 0
    miou = float(np.mean([(pred & true).sum() / (pred | true).sum(), (~pred & ~true).sum() / (~pred | ~true).sum()]))
    tp, fp, fn = match_instances(labels, truth)
    summary = {"miou": round(miou, 4), "counts": {"nuclei": int(len(np.unique(labels)) - 1)},
               "true_counts": {"nuclei": int(len(np.unique(truth)) - 1)},
               "f1_iou50": round(2 * tp / max(1, 2 * tp + fp + fn), 4)}
    summary["count_accuracy"] = {"nuclei": round(summary["counts"]["nuclei"] / summary["true_counts"]["nuclei"], 4)}
    return Scored(summary, round(time.perf_counter() - began, 1), {})


def bccd_half(dataset, part: str) -> list[str]:
    """The stems of one half of the BCCD images: "train" (even positions in name order) or "eval" (odd)."""
    stems = sorted(sample.stem for sample in dataset.samples)
    return stems[{"train": 0, "eval": 1}[part]::2]


def import_real(real: Path, work: Path) -> tuple:
    """The Chula points and BCCD boxes as count-only datasets (`csc-data import`'s code; images hard-linked)."""
    from runtime.data.annotations import read_annotations
    from runtime.data.annotations.classmap import ClassMap
    from runtime.data.annotations.writer import import_annotations
    from runtime.data.count_dataset import open_count_dataset

    chula, bccd = real / "chula-rbc12", real / "bccd-txlpbc"
    import_annotations(read_annotations("points", chula / "points"), chula / "images", work / "chula",
                       ClassMap.parse("*=rbc"), origin="import:points", pixel_size_um=CHULA_PIXEL_UM)
    import_annotations(read_annotations("boxes", bccd / "boxes.csv"), bccd / "images", work / "bccd",
                       ClassMap.parse("RBC=rbc,WBC=wbc"), origin="import:boxes", pixel_size_um=BCCD_PIXEL_UM)
    return open_count_dataset(work / "chula"), open_count_dataset(work / "bccd")


def nuclei() -> tuple[np.ndarray, np.ndarray] | None:
    from trainer.ablation import stardist_nuclei

    try:
        return stardist_nuclei()
    except CscError:
        return None


@dataclass
class RealSets:
    """The held-out real images every real-image benchmark scores on: the Chula evaluation subset (points) and the
    BCCD evaluation half (RBC boxes, WBC box centres reported apart)."""

    chula: Any
    chula_stems: list[str]
    bccd: Any
    bccd_stems: list[str]
    wbc: dict[str, np.ndarray]

    def score(self, method: Labeller) -> dict[str, Scored]:
        """One method on both sets, keyed "chula" and "bccd"."""
        return {"chula": score_marks(self.chula, self.chula_stems, method, CHULA_PIXEL_UM, CHULA_EDGE_BAND),
                "bccd": score_marks(self.bccd, self.bccd_stems, method, BCCD_PIXEL_UM, 0.0, self.wbc)}


def chula_part(part: str = "development") -> dict:
    """The file of one Chula part (``CHULA_PARTS``): its ``images`` (stems) and how they were chosen."""
    if part not in CHULA_PARTS:
        raise CscError(f"no Chula part {part!r}", fix=f"one of {', '.join(CHULA_PARTS)}")
    return json.loads(CHULA_PARTS[part].read_text(encoding="utf-8"))


def real_sets(real: Path, work: Path, part: str = "development") -> RealSets:
    """The held-out sets, imported from ``real`` (../shared/real) into ``work``; a clear error when it is absent.
    ``part``: which Chula part is scored (``CHULA_PARTS``)."""
    if not real.is_dir():
        raise CscError("the real images are not here", path=real,
                       fix="run from a checkout beside ../shared/real (see its README), or pass --real")
    chula, bccd = import_real(real, work)
    stems = [image["stem"] for image in chula_part(part)["images"]]
    wbc = {s.stem: s.points["wbc"] for s in bccd.samples if len(s.points.get("wbc", ()))}
    return RealSets(chula, stems, bccd, bccd_half(bccd, "eval"), wbc)


def measure(real: Path, model: Path | None = None, part: str = "development") -> dict:
    methods = dict(METHODS)
    if model is not None:
        methods[f"csc-run --pixel-size P ({model.name})"] = runtime_labeller(model)
        methods[f"csc-run, pixel size calibrated ({model.name})"] = runtime_labeller(model, calibrated=True)
    with tempfile.TemporaryDirectory() as tmp:
        sets = real_sets(real, Path(tmp), part)
        chosen = chula_part(part)
        out: dict = {"chula": {"part": part, "file": str(CHULA_PARTS[part].relative_to(ROOT)),
                               "images": len(sets.chula_stems), "how": chosen["how"],
                               **({"caveats": chosen["caveats"]} if "caveats" in chosen else {}),
                               "pixel_size_um": CHULA_PIXEL_UM, "edge_band_px": CHULA_EDGE_BAND, "methods": {}},
                     "bccd": {"pixel_size_um": BCCD_PIXEL_UM, "methods": {}, "images": len(sets.bccd_stems)},
                     "dsb_nuclei": {"methods": {}}}
        for name, method in methods.items():
            for key, result in sets.score(method).items():
                out[key]["methods"][name] = {**headline(result.summary), **result.extra, "seconds": result.seconds,
                                             "summary": result.summary}
                print(f"{key:6s} {name}: {out[key]['methods'][name]['ratio']} ratio, "
                      f"F1 {out[key]['methods'][name]['f1']}", flush=True)
    pair = nuclei()
    if pair is None:
        out["dsb_nuclei"]["skipped"] = "needs `pip install --no-deps stardist==0.9.2`"
    else:
        for name, method in methods.items():
            if name.startswith("csc-run"):
                continue  # an RBC model has no nuclei class
            result = score_nuclei(*pair, method)
            out["dsb_nuclei"]["methods"][name] = {**result.summary, "seconds": result.seconds}
    return out


def headline(summary: dict) -> dict:
    rbc = summary["instances"]["rbc"]
    return {"predicted": summary["counts"]["rbc"], "annotated": summary["true_counts"]["rbc"],
            "ratio": summary["count_accuracy"]["rbc"], "mae_per_image": summary["mean_abs_error"]["rbc"],
            "precision": rbc["precision"], "recall": rbc["recall"], "f1": rbc["f1"]}


def render_markdown(result: dict) -> str:
    """The README table: one row per path, Chula and BCCD columns, DSB nuclei beside them."""
    lines = ["| path | Chula: predicted / annotated | Chula: point F1 | BCCD: RBC predicted / annotated | BCCD: F1 | "
             "BCCD: WBCs counted as RBC | DSB nuclei: mIoU | DSB: count / 125 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, chula in result["chula"]["methods"].items():
        bccd = result["bccd"]["methods"][name]
        dsb = result["dsb_nuclei"]["methods"].get(name)
        nuclei_cells = ("—", "—") if dsb is None else (f"{dsb['miou']:.3f}", str(dsb["counts"]["nuclei"]))
        lines.append(f"| {name} | {chula['ratio']:.3f} | {chula['f1']:.3f} | {bccd['ratio']:.3f} | {bccd['f1']:.3f} | "
                     f"{bccd['wbcs_counted_as_rbc']} / {bccd['wbcs']} | {nuclei_cells[0]} | {nuclei_cells[1]} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, default=ROOT.parent / "shared" / "real")
    parser.add_argument("--model", type=Path, default=None, help="also score the runtime with this ONNX model")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--part", choices=tuple(CHULA_PARTS), default="development",
                        help="the Chula part scored: the development subset (default) or the blind part")
    parser.add_argument("--table", type=Path, default=None, help="print the README table of a result file and exit")
    args = parser.parse_args()
    if args.table is not None:
        print(render_markdown(json.loads(args.table.read_text(encoding="utf-8"))))
    else:
        publish(measure(args.real, args.model, args.part), args.out)
