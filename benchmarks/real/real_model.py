"""The paper's method on real data, as one command: auto-labels of real single-kind smears → U-Single →
U-Transfer, evaluated on held-out real images beside the labels they were trained on, and the bundled model.

1. Auto-label the Chula RBC-12 smears (`csc-label auto --kind rbc --split-touching`, scale estimated; no hand
   label is used) except the evaluation subset, which stays held out; bring them to the model's 0.4 µm/px
   (`csc-data rescale --from 0.194`). Simulated single-kind RBC and macrophage frames are auto-labelled the same way
   (no real macrophage images with a usable licence exist here).
2. U-Single (`csc-train single`): light-unet on the three single-kind sets, microscope augmentation (stain colour,
   uneven light, defocus, scale 0.7–1.4) and a 2-px background gap carved between touching cells, so the network
   draws the line between touching cells itself.
3. U-Transfer (`csc-train transfer --n 70`, 2000 steps): fine-tuned, as the paper's U-Transfer is, on labelled
   mixed images — 70 of each of two sets: simulated mixed frames (exact labels), and the BCCD smears of the
   training half (`bccd_half("train")`) whose cells are shaped by the TXL-PBC RBC boxes (`box_instances`: each
   box's ellipse cut to the labeller's foreground, so overlapping cells are taught apart) and whose WBCs are
   background. Those boxes are the only hand annotation used; `--bccd-labels auto` uses the labeller's cells
   instead (WBC boxes still kept out of the RBC class).
4. Both exported (`csc-export onnx`, fused fp32) and measured in the same run, through the runtime
   (`csc-run --pixel-size P`'s path, `benchmarks.real.real_counts`), against the labeller itself on the held-out Chula
   subset and on BCCD, and on 30 simulated mixed frames (the demo's look): does the network beat its labels?
5. ``--bundle``: the better model on the real subset, among those that keep the demo's counts within 10 %, is
   written to runtime/models/default.onnx.

Run: python -m benchmarks.real.real_model --work runs/real-model --out benchmarks/results/real_model.json [--bundle]
(2-core CPU: about 30 minutes, mostly training; the timings are in the result.)
``--part blind --work runs/real-model-blind``: the Chula blind part (benchmarks/data/chula_blind_part.json) is the
held-out part instead — left out of the auto-labelled training images and scored; no model is bundled from it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.publish import publish
from benchmarks.real.real_counts import (BCCD_PIXEL_UM, CHULA_PARTS, CHULA_PIXEL_UM, bccd_half, chula_part, headline,
                                    import_real, labeller, real_sets, runtime_labeller)
from benchmarks.real.prepared import to_make
from runtime.errors import CscError
from runtime.io.imageio import list_images, place_file
from runtime.data.rescale import rescale_dataset
from runtime.data.synthesize import synthesize_dataset
from runtime.io.writers import write_json
from trainer.autolabel import AutoLabelConfig
from trainer.labelling import label_folder
from trainer.regimes import plan_single, plan_transfer
from trainer.train import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "runtime" / "models" / "default.onnx"
MODEL_PIXEL_UM = 0.4  # the simulator's, so one model serves the demo and real cameras (via --pixel-size)


@dataclass
class Recipe:
    arch: str = "light-unet"
    size: int = 224
    batch: int = 8
    single_steps: int = 6000
    transfer_steps: int = 2000
    transfer_n: int = 70  # of each mixed set: nearly all of BCCD's training split (73 images)
    val_every: int = 500
    simulated_singles: int = 150
    simulated_mixed: int = 120
    demo_frames: int = 30
    touching_gap: int = 4  # at 0.4 µm/px; the light U-Net's logits are at half resolution: 2 px there
    augment: str = "microscope"
    bccd_labels: str = "boxes"  # "auto": labeller cells minus WBCs; "boxes": the TXL-PBC RBC boxes shape the cells
    seed: int = 0


def prepare_data(real: Path, work: Path, recipe: Recipe, part: str = "development") -> dict[str, Path]:
    """Auto-labelled single-kind sets at the model's pixel size, the labelled mixed set and the demo test set; the
    Chula ``part`` (``CHULA_PARTS``) is held out of the training images."""
    data = work / "data"
    held_out = {image["stem"] for image in chula_part(part)["images"]}
    chula = data / "chula-train-images"
    if not chula.exists():
        chula.mkdir(parents=True)
        for path in list_images(real / "chula-rbc12" / "images"):
            if path.stem not in held_out:
                place_file(path, chula / path.name, link=True)
    sets = {"chula-auto": data / "chula-auto"}
    if to_make(sets["chula-auto"]):
        label_folder(chula, sets["chula-auto"], AutoLabelConfig(kind="rbc", split_touching=True))
    for kind in ("rbc", "macrophage"):
        raw, sets[f"sim-{kind}-auto"] = data / f"sim-{kind}-raw", data / f"sim-{kind}-auto"
        if to_make(raw):
            synthesize_dataset(kind, recipe.simulated_singles, raw, seed=recipe.seed + 2)
        if to_make(sets[f"sim-{kind}-auto"]):
            label_folder(raw / "images", sets[f"sim-{kind}-auto"],
                         AutoLabelConfig(kind=kind, split_touching=True, pixel_size_um=MODEL_PIXEL_UM))
    sets["chula"] = data / "chula-0.4"
    if to_make(sets["chula"]):
        rescale_dataset(sets["chula-auto"], sets["chula"], MODEL_PIXEL_UM, CHULA_PIXEL_UM)
    for name, count, seed in (("mixed", recipe.simulated_mixed, recipe.seed + 1), ("demo", recipe.demo_frames, 99)):
        sets[name] = data / name
        if to_make(sets[name]):
            synthesize_dataset("mixed", count, sets[name], seed=seed)
    sets["bccd"] = data / f"bccd-{recipe.bccd_labels}-0.4"
    if to_make(sets["bccd"]):
        bccd_mixed(real, data, sets["bccd"], recipe.bccd_labels)
    return sets


def bccd_mixed(real: Path, data: Path, out: Path, labels: str) -> None:
    """The BCCD training half as labelled mixed images at the model's pixel size.

    ``labels="auto"``: the labeller's RBC instances, with cells whose centre falls in a WBC box set to background.
    ``labels="boxes"``: the paper's U-Transfer uses hand-labelled mixed images, and the TXL-PBC RBC boxes are this
    half's hand labels — each box's inscribed ellipse, cut to the labeller's foreground, is one cell, so cells that
    overlap (which a mask-only splitter separates only by area) are taught as separate cells; labeller cells
    outside every box (TXL-PBC misses about 5 %) are kept, those hit by a WBC box centre dropped."""
    from runtime.data.count_dataset import open_count_dataset
    from runtime.data.dataset import DatasetWriter, open_dataset

    imported = data / "bccd-import"
    if to_make(imported / "bccd"):
        shutil.rmtree(imported, ignore_errors=True)
        import_real(real, imported)
    marks = open_count_dataset(imported / "bccd").by_stem()
    images = data / "bccd-train-images"
    if not images.exists():
        images.mkdir(parents=True)
        for stem in bccd_half(open_count_dataset(imported / "bccd"), "train"):
            place_file(marks[stem].image, images / marks[stem].image.name, link=True)
    auto = data / "bccd-auto"
    if to_make(auto):
        label_folder(images, auto, AutoLabelConfig(kind="rbc", split_touching=True))
    dataset = open_dataset(auto)
    labelled = data / f"bccd-train-{labels}"
    with DatasetWriter(labelled, source=f"BCCD training half: {labels} labels", pixel_size_um=BCCD_PIXEL_UM,
                       classes=tuple(dataset.classes), extra={"scale": "given"}) as writer:
        for i, sample in enumerate(dataset.samples):
            image = dataset.load(i)
            mark = marks[sample.stem]
            instances = without_wbcs(image.instances, mark.points.get("wbc"))
            if labels == "boxes":
                instances = box_instances(instances > 0, mark.boxes.get("rbc", np.zeros((0, 4))), instances)
            writer.add(sample.stem, image.image, (instances > 0).astype(np.uint8), instances)
    rescale_dataset(labelled, out, MODEL_PIXEL_UM, BCCD_PIXEL_UM)


def without_wbcs(instances: np.ndarray, centres: np.ndarray | None) -> np.ndarray:
    """The labeller's cells minus those under a WBC box centre (its nucleus test catches most of them already)."""
    if centres is None or not len(centres):
        return instances
    h, w = instances.shape
    hit = set(instances[centres[:, 1].astype(int).clip(0, h - 1), centres[:, 0].astype(int).clip(0, w - 1)].tolist())
    return np.where(np.isin(instances, list(hit - {0})), 0, instances)


def box_instances(foreground: np.ndarray, boxes: np.ndarray, auto: np.ndarray, cover: float = 0.6) -> np.ndarray:
    """One cell per box: the pixels of its inscribed ellipse that are nearer (in ellipse-normalised distance) to its
    centre than to any other box's, cut to ``foreground`` — or the ellipse itself, shrunk a little, where the
    foreground covers under ``cover`` of it (a pale cell the labeller missed). ``auto`` cells that lie mostly
    outside every box are kept as they are."""
    h, w = foreground.shape
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    boxes = boxes[(boxes[:, 2] - boxes[:, 0] >= 2) & (boxes[:, 3] - boxes[:, 1] >= 2)]  # a degenerate box is no cell
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    nearest = np.full((h, w), np.inf, np.float32)
    owner = np.zeros((h, w), np.int32)
    for k, (x1, y1, x2, y2) in enumerate(boxes, 1):
        r = np.hypot((xx - (x1 + x2) / 2) / max((x2 - x1) / 2, 1), (yy - (y1 + y2) / 2) / max((y2 - y1) / 2, 1))
        take = (r <= 1) & (r < nearest)
        nearest[take], owner[take] = r[take], k
    out = np.zeros((h, w), np.int32)
    for k in range(1, len(boxes) + 1):
        region = owner == k
        cell = region & foreground
        out[cell if cell.sum() >= cover * region.sum() else region & (nearest <= 0.95)] = k
    owned, label = out > 0, len(boxes) + 1
    for v in np.unique(auto[auto > 0]):
        cell = auto == v
        if (cell & owned).sum() <= 0.3 * cell.sum():
            out[cell & ~owned], label = label, label + 1
    ids = np.unique(out[out > 0])  # ids 1..N: boxes wholly outside the frame leave no gap
    lut = np.zeros(label, np.int32)
    lut[ids] = np.arange(1, len(ids) + 1)
    return lut[out]


def train_models(sets: dict[str, Path], work: Path, recipe: Recipe) -> dict[str, Path]:
    common = dict(arch=recipe.arch, size=recipe.size, batch=recipe.batch, seed=recipe.seed, device="cpu",
                  val_every=recipe.val_every, augment=recipe.augment, touching_gap=recipe.touching_gap)
    runs = work / "runs"
    single = runs / "single"
    if not (single / "best.pt").exists():
        plan_single(sets["chula"], sets["sim-macrophage-auto"], TrainConfig(regime="U-Single",
                    steps=recipe.single_steps, **common), [sets["sim-rbc-auto"]]).run(single)
    transfer = runs / "transfer"
    if not (transfer / "best.pt").exists():
        plan_transfer(single / "best.pt", sets["mixed"], recipe.transfer_n,
                      TrainConfig(regime="U-Transfer", steps=recipe.transfer_steps, lr=5e-4, **common),
                      [sets["bccd"]]).run(transfer)
    return {"U-Single": single / "best.pt", "U-Transfer": transfer / "best.pt"}


def export(checkpoint: Path, out: Path) -> Path:
    from export.onnx_export import ExportOptions, export_onnx

    export_onnx(checkpoint, out, ExportOptions(batch="1", size=512))
    return out


def demo_counts(model: Path, demo: Path) -> dict:
    """The model on simulated mixed frames through the runtime (`csc-run --pixel-size P`, P the set's: frames of
    another pixel size than the model's rescaled to it): counts against the simulator's truth."""
    from runtime.backends.onnxruntime import OnnxRuntimeRunner
    from runtime.counting.metrics import CountTally
    from runtime.counting.counter import CellCounter, CountingConfig
    from runtime.data.dataset import instance_counts, open_dataset
    from runtime.pipeline.stream import Segmenter

    dataset = open_dataset(demo)
    with OnnxRuntimeRunner(model) as runner:
        counter = CellCounter(CountingConfig(class_names=tuple(runner.metadata.classes),
                                             pixel_size_um=runner.metadata.pixel_size_um))
        segmenter = Segmenter(runner, zoom=dataset.pixel_size_um / runner.metadata.pixel_size_um)
        names = runner.metadata.classes[1:]
        tally = CountTally(tuple(names))
        for i in range(len(dataset)):
            labels = dataset.load(i)
            counts = counter.count(segmenter.segment(labels.image)).counts
            true = instance_counts(labels.mask, labels.instances, len(dataset.classes))
            tally.add(counts, {n: int(true[dataset.classes.index(n)]) for n in names})
    summary = tally.summary()
    return {k: summary[k] for k in ("counts", "true_counts", "count_accuracy", "mean_abs_error")}


def evaluate(models: dict[str, Path], real: Path, sets: dict[str, Path], work: Path, part: str = "development") -> dict:
    """Labels vs networks on the held-out real images (the Chula ``part``), and each network on the demo, in one run."""
    scratch = work / "eval"
    shutil.rmtree(scratch, ignore_errors=True)
    held_out = real_sets(real, scratch, part)
    paths = {"auto-labels (csc-label auto --split-touching, scale estimated)": labeller(),
             **{f"{name} (csc-run --pixel-size P)": runtime_labeller(path) for name, path in models.items()}}
    out = {}
    for name, method in paths.items():
        row = {key: {k: headline(result.summary)[k] for k in ("ratio", "f1", "precision", "recall", "mae_per_image")}
               | result.extra for key, result in held_out.score(method).items()}
        out[name] = row
        print(f"{name}: Chula {row['chula']['ratio']} / F1 {row['chula']['f1']}; BCCD {row['bccd']['ratio']} / "
              f"F1 {row['bccd']['f1']}", flush=True)
    for name, path in models.items():
        out[f"{name} (csc-run --pixel-size P)"]["demo"] = demo_counts(path, sets["demo"])
    return out


def choose(evaluation: dict, models: dict[str, Path]) -> str | None:
    """The model to bundle: best Chula point F1 among those whose demo RBC and macrophage counts are within 10 %."""
    best, best_f1 = None, -1.0
    for name in models:
        row = evaluation[f"{name} (csc-run --pixel-size P)"]
        demo_ok = all(v is not None and abs(v - 1) <= 0.10 for v in row["demo"]["count_accuracy"].values())
        if demo_ok and row["chula"]["f1"] > best_f1:
            best, best_f1 = name, row["chula"]["f1"]
    return best


def keep_recipe(work: Path, recipe: Recipe) -> None:
    """Each stage is reused when its output exists: a work folder made by another recipe would silently give that
    recipe's data and models under this one's name, so it is refused."""
    path = work / "recipe.json"
    if path.exists() and json.loads(path.read_text(encoding="utf-8")) != asdict(recipe):
        raise CscError("this work folder holds the data and runs of another recipe", path=work,
                       fix="pass a new --work, or delete the folder")
    write_json(path, asdict(recipe))


def run_stages(work: Path, recipe, prepare: Callable[[], Any], train: Callable[[Any], dict[str, Path]],
               evaluate: Callable[[dict[str, Path], Any], dict],
               choose: Callable[[dict, dict[str, Path]], str | None], bundled: Path, bundle: bool) -> dict:
    """A recipe's stages, each reused when its output exists: data → models → ONNX exports → evaluation → the model
    to bundle (copied to ``bundled`` with ``bundle``); returns the report's common part, timings included."""
    keep_recipe(work, recipe)
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    began = time.perf_counter()
    data = prepare()
    prepared = time.perf_counter()
    checkpoints = train(data)
    trained = time.perf_counter()
    models = {name: export(ckpt, work / "onnx" / f"{name.lower()}.onnx") for name, ckpt in checkpoints.items()}
    evaluation = evaluate(models, data)
    chosen = choose(evaluation, models)
    if bundle and chosen is not None:
        shutil.copyfile(models[chosen], bundled)
    meta = {name: json.loads((ckpt.parent / "metrics.json").read_text()) for name, ckpt in checkpoints.items()}
    return {"recipe": asdict(recipe), "chosen": chosen, "bundled": bool(bundle and chosen),
            "training": {name: {"best_val_miou": m["best_val_miou"], "seconds": m["seconds"],
                                "class_fractions": m["config"].get("class_fractions", {}),
                                "modalities": m["config"].get("modalities", [])} for name, m in meta.items()},
            "seconds": {"data": round(prepared - began), "training": round(trained - prepared),
                        "total": round(time.perf_counter() - began)},
            "evaluation": evaluation}


def keep_part(work: Path, part: str) -> None:
    """A work folder's training images leave out one Chula part: data made for another part is refused (the
    development runs predate this marker, so a folder without it is taken as "development")."""
    path = work / "chula_part.txt"
    held = path.read_text(encoding="utf-8").strip() if path.exists() else ("development" if work.exists() else part)
    if held != part:
        raise CscError(f"this work folder's training images leave out the {held!r} Chula part, not {part!r}",
                       path=work, fix="pass a new --work")
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(part + "\n", encoding="utf-8")


def main(real: Path, work: Path, recipe: Recipe, bundle: bool, part: str = "development") -> dict:
    if not real.is_dir():
        raise CscError("the real images are not here", path=real, fix="run beside ../shared/real, or pass --real")
    if bundle and part != "development":
        raise CscError("a model chosen on the blind part would make it a development part", fix="drop --bundle")
    keep_part(work, part)
    report = run_stages(work, recipe, lambda: prepare_data(real, work, recipe, part),
                        lambda sets: train_models(sets, work, recipe),
                        lambda models, sets: evaluate(models, real, sets, work, part), choose, BUNDLED, bundle)
    return {**report, "held_out": {"chula_part": part, "chula_subset": str(CHULA_PARTS[part].relative_to(ROOT)),
                                   "bccd": "the 97 images at odd positions in name order (the even ones train "
                                           "U-Transfer)"}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, default=ROOT.parent / "shared" / "real")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "real-model", help="data, runs and exports")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--bundle", action="store_true", help="write the chosen model to runtime/models/default.onnx")
    parser.add_argument("--part", choices=tuple(CHULA_PARTS), default="development",
                        help="the Chula part held out of training and scored (no --bundle with blind)")
    parser.add_argument("--single-steps", type=int, default=Recipe.single_steps)
    parser.add_argument("--transfer-steps", type=int, default=Recipe.transfer_steps)
    parser.add_argument("--transfer-n", type=int, default=Recipe.transfer_n)
    parser.add_argument("--bccd-labels", choices=("boxes", "auto"), default=Recipe.bccd_labels,
                        help="U-Transfer's BCCD cells: shaped by the hand-drawn RBC boxes, or the labeller's")
    args = parser.parse_args()
    publish(main(args.real, args.work, Recipe(single_steps=args.single_steps, transfer_steps=args.transfer_steps,
                                              transfer_n=args.transfer_n,
                                              bccd_labels=args.bccd_labels),
                 args.bundle, args.part), args.out)
