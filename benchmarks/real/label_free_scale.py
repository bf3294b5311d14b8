"""csc-run without a pixel size on label-free frames (issue #21: "scale estimation must work on all of them"): the
calibration of a run's first three frames (runtime/counting/calibration.py) with the bundled label-free model, and
what it does to the counts.

Rows, for each run start:
- ``--calibrate-on auto`` (the default): the ruler class voted by the model, its measure corrected by the model;
- ``--calibrate-on KIND``: the ruler the user names (the kind of the fields; RBC for mixed ones), corrected likewise;
- reference: the classical measure alone (`calibrate` without the model), the ruler named as above;
- ``--pixel-size TRUE`` (simulated sets): the true scale given, so that what the model itself misses is apart from
  what the scale costs.

Sets:
- **Simulated label-free optics** (runtime/data/simulator.py: a test fixture, not evidence): brightfield, phase
  contrast and DIC fields of RBCs, of macrophages (with pseudopods) and of both, at the simulator's 0.4 µm/px and
  at higher magnifications with as many cells per µm² (`CASES`), at seeds no choice looked at (the calibration's
  rules were examined on seeds 55 and 56). Per start: calibrated ÷ true pixel size, the ruler, and the counts of
  the three frames at that scale ÷ the true counts, per class.
- **BBBC030** (real DIC of live CHO cells, CC BY 3.0 — Koos et al. 2016, Sci. Rep. 6:30420, via the Broad Bioimage
  Benchmark Collection, Ljosa et al. 2012; its pixel size is unknown): each part (`TUNING`, `EVALUATION` of
  benchmarks/real/label_free.py) as one run over its images in name order, at full size and as the ×2 1024-px
  sparse crops (`SPARSE_CROPS`); the cells the model counts, whatever their class, scored against the hand
  outlines (instance F1 at IoU 0.5, count ratio). The model was fine-tuned on the tuning part's outlines.

Run: python -m benchmarks.real.label_free_scale [--real ../shared/real] [--seeds 21 41]
                                               [--out benchmarks/results/label_free_scale.json]
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from benchmarks.publish import publish, tree_state
from benchmarks.real.label_free import (EVALUATION, SPARSE_CROPS, TUNING, bbbc030_pairs, cropped_pairs, density_at,
                                        resized_pairs, score)
from benchmarks.real.runtime_path import RuntimePath
from runtime.data.simulator import make_microscope

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "runtime" / "models" / "label-free.onnx"
OPTICS = ("brightfield", "phase", "dic")
# (fields, µm/px, frame side): the simulator's own scale, and two and four times the magnification for RBCs (30 and
# 60 px across), twice for macrophages (82 px) and mixed fields; frames large enough for ten or more cells each.
CASES = (("rbc", 0.4, 512), ("rbc", 0.2, 512), ("rbc", 0.1, 1024), ("macrophage", 0.4, 512),
         ("macrophage", 0.2, 1024), ("mixed", 0.4, 512), ("mixed", 0.2, 1024))
FRAMES = 3  # a run calibrates on its first three frames (runtime.counting.calibration.FRAMES)
PSEUDOPODS = 2.0
# A calibration between 1/(1 + WITHIN) and 1 + WITHIN of the true pixel size (0.87–1.15) is counted as right in the
# summary: an error by a factor, the same either way.
WITHIN = 0.15


def rows(kind: str) -> dict[str, dict]:
    """The calibration rows (see the module's docstring): the ruler named and whether the model takes part."""
    named = "rbc" if kind == "mixed" else kind
    return {"--calibrate-on auto (default)": {"ruler": None},
            f"--calibrate-on {named}": {"ruler": named},
            f"reference: classical measure alone, {named} as the ruler": {"ruler": named, "model": False}}


def simulated(run: RuntimePath, seeds: Iterable[int]) -> dict:
    """Every CASES × OPTICS × seed start, each row's calibration and counts (see the module's docstring)."""
    out: dict = {}
    for kind, pixel, side in CASES:
        starts = []
        for optics in OPTICS:
            for seed in seeds:
                microscope = make_microscope(kind, size=side, seed=seed, optics=optics, pixel_size_um=pixel,
                                             density=density_at(kind, pixel),
                                             **({"pseudopods": PSEUDOPODS} if kind != "rbc" else {}))
                frames = [microscope.frame(i) for i in range(FRAMES)]
                images = [frame.image for frame in frames]
                truth = {name: sum(len(np.unique(f.instances[(f.semantic == c) & (f.instances > 0)])) for f in frames)
                         for c, name in enumerate(run.meta.classes) if c}
                start: dict = {"optics": optics, "seed": seed, "true_counts": truth, "rows": {}}
                for name, how in rows(kind).items():
                    found = run.calibrated(images, how["ruler"], how.get("model", True))
                    start["rows"][name] = {"pixel_size_ratio": round(found.pixel_size_um / pixel, 3) if found.found
                                           else None, "ruler": found.ruler,
                                           **count_ratios(run, images, found.pixel_size_um, truth)}
                start["rows"]["--pixel-size TRUE"] = {"pixel_size_ratio": 1.0, **count_ratios(run, images, pixel, truth)}
                starts.append(start)
        out[f"{kind} at {pixel} µm/px"] = {"frame_px": side, "starts": starts, "summary": summarise(starts, kind)}
    return out


def count_ratios(run: RuntimePath, images: Sequence[np.ndarray], pixel_size_um: float | None,
                 truth: dict[str, int]) -> dict:
    """The counts of ``images`` at this pixel size (the model's where the calibration failed, as a run falls back)
    ÷ the true counts, per class with cells."""
    totals = dict.fromkeys(truth, 0.0)
    for image in images:
        for name, n in run.cells(image, pixel_size_um or run.meta.pixel_size_um)[1].items():
            totals[name] += n
    return {"count_ratio": {name: round(totals[name] / n, 3) for name, n in truth.items() if n},
            "counts": {name: round(value, 1) for name, value in totals.items()}}


def summarise(starts: list[dict], kind: str) -> dict:
    """Per row over the starts: how many calibrated within WITHIN of the true pixel size, the median |log| error of
    the pixel size and how many took the right ruler (the kind; RBC for mixed fields)."""
    right = "rbc" if kind == "mixed" else kind
    out = {}
    for name in starts[0]["rows"]:
        ratios = [s["rows"][name]["pixel_size_ratio"] for s in starts]
        errors = [abs(math.log(r)) if r else math.inf for r in ratios]
        out[name] = {"starts": len(starts), f"within_{round(100 * WITHIN)}_percent": sum(e <= math.log1p(WITHIN)
                                                                                         for e in errors),
                     "median_abs_log_error": round(float(np.median(errors)), 3)}
        if "ruler" in starts[0]["rows"][name]:
            out[name]["right_ruler"] = sum(s["rows"][name]["ruler"] == right for s in starts)
    return out


def bbbc030(run: RuntimePath, real: Path) -> dict:
    """Each BBBC030 part as a run over its images, at full size and as SPARSE_CROPS (see the module's docstring)."""
    root = real / "bbbc030-dic"
    if not (root / "images").is_dir():
        return {"skipped": f"{root} is absent (see ../shared/real/README.md)"}
    factor, side = SPARSE_CROPS
    layouts: dict[str, Callable[[Sequence[str]], list]] = {
        "full frames": lambda stems: list(bbbc030_pairs(real, stems)),
        f"×{factor:g} in {side}-px crops": lambda stems: list(cropped_pairs(resized_pairs(bbbc030_pairs(real, stems),
                                                                                          factor), side))}
    out: dict = {}
    for layout, pairs_of in layouts.items():
        for part, stems in (("tuning", TUNING), ("evaluation", EVALUATION)):
            pairs = pairs_of(stems)
            images = [cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image  # as csc-run reads them
                      for image, _ in pairs]
            pairs = list(zip(images, (truth for _, truth in pairs)))
            entry: dict = {"images": len(images), "rows": {}}
            for name, how in rows("macrophage").items():
                found = run.calibrated(images[:FRAMES], how["ruler"], how.get("model", True))
                scale = found.pixel_size_um or run.meta.pixel_size_um
                entry["rows"][name] = {"pixel_size_um": found.pixel_size_um and round(found.pixel_size_um, 4),
                                       "ruler": found.ruler, "note": found.note,
                                       **score(pairs, lambda frames, _d: [run.cells(f, scale)[0] for f in frames], 0.0)}
            out[f"{part}, {layout}"] = entry
    return out


def measure(real: Path, seeds: Sequence[int]) -> dict:
    run = RuntimePath(MODEL)
    return {"what": "csc-run's calibration without a pixel size on label-free frames, bundled label-free model",
            **tree_state(ROOT), "model": MODEL.name, "seeds": list(seeds),
            "simulated": simulated(run, seeds), "bbbc030": bbbc030(run, real)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, default=ROOT.parent / "shared" / "real")
    parser.add_argument("--seeds", type=int, nargs="+", default=[21, 41], help="simulator seeds (55, 56: development)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    publish(measure(args.real, args.seeds), args.out)
