"""The paper's Tables 2 and 3 at CPU scale: U-Base vs U-Single vs U-Transfer on one held-out mixed set.

One command: simulate data → auto-label the single-kind sets → train the three regimes → evaluate all three on
the same held-out simulated mixed set → a markdown table and JSON. Scaled down to finish in < 40 minutes on a
2-core CPU (what is scaled is written into the report): the light U-Net, 256 px crops, ~1.2 k steps instead of
35 k iterations, 120 + 2 × 100 images instead of 600 + 2 × 1000.

Run: python -m benchmarks.real.experiment --out runs/experiment   (then copy experiment.md and .json to benchmarks/results/)
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

from runtime.data.dataset import open_dataset
from runtime.io.imageio import write_text
from runtime.data.synthesize import synthesize_dataset
from trainer.autolabel import AutoLabelConfig
from trainer.checkpoint import model_from_checkpoint
from trainer.evaluate import evaluate
from trainer.labelling import label_folder
from trainer.models import get_arch
from trainer.regimes import run_base, run_single, run_transfer
from trainer.train import TrainConfig

PAPER = {"U-Base": (80.47, 95.08, 0.8869, 93.35, 101.48), "U-Single": (71.33, 92.69, 0.8234, None, None),
         "U-Transfer": (79.73, 94.85, 0.8812, 93.45, 99.01)}


@dataclass
class Scale:
    arch: str = "light-unet"
    size: int = 256
    mixed: int = 120
    single: int = 100
    test: int = 30
    base_steps: int = 1200
    single_steps: int = 1200
    transfer_steps: int = 400
    transfer_n: int = 50
    val_every: int = 200


def run(out: Path, scale: Scale, seed: int = 0) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    data = out / "data"
    mixed = synthesize_dataset("mixed", scale.mixed, data / "mixed", seed=seed + 1)
    test = synthesize_dataset("mixed", scale.test, data / "test", seed=seed + 99)
    labelled = {}
    for kind in ("rbc", "macrophage"):
        raw = synthesize_dataset(kind, scale.single, data / f"{kind}-raw", seed=seed + 2)
        labelled[kind] = data / f"{kind}-auto"
        label_folder(raw / "images", labelled[kind], AutoLabelConfig(kind=kind), overwrite=True)
    common = dict(arch=scale.arch, size=scale.size, seed=seed, device="cpu", val_every=scale.val_every)
    runs = out / "runs"
    run_base(mixed, runs / "base", TrainConfig(regime="U-Base", steps=scale.base_steps, **common))
    run_single(labelled["rbc"], labelled["macrophage"], runs / "single",
               TrainConfig(regime="U-Single", steps=scale.single_steps, **common))
    run_transfer(runs / "single" / "best.pt", mixed, scale.transfer_n, runs / "transfer",
                 TrainConfig(regime="U-Transfer", steps=scale.transfer_steps, lr=5e-4, **common))
    test_set = open_dataset(test)
    rows = {}
    for regime, folder in (("U-Base", "base"), ("U-Single", "single"), ("U-Transfer", "transfer")):
        model, meta = model_from_checkpoint(runs / folder / "best.pt")
        import torch

        metrics = evaluate(model, (test_set.load(i) for i in range(len(test_set))), get_arch(meta["arch"]).stride,
                           torch.device("cpu"), pixel_size_um=test_set.pixel_size_um)
        rows[regime] = metrics
    report = {"scale": scale.__dict__, "seed": seed, "minutes": round((time.perf_counter() - began) / 60, 1),
              "test_images": scale.test, "results": rows, "paper": PAPER}
    write_text(out / "experiment.json", json.dumps(report, indent=2) + "\n")
    write_text(out / "experiment.md", render(report))
    return report


def render(report: dict) -> str:
    lines = ["| regime | mIoU % | FWIoU % | Dice | RBC count % | macrophage count % | paper mIoU / FWIoU / Dice / RBC / mac |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for regime, m in report["results"].items():
        acc = m.get("counts", {}).get("count_accuracy", {})
        paper = " / ".join("—" if v is None else f"{v}" for v in report["paper"][regime])
        lines.append(f"| {regime} | {100 * m['miou']:.2f} | {100 * m['fwiou']:.2f} | {m['dice']:.4f} | "
                     f"{100 * acc.get('rbc', 0):.2f} | {100 * acc.get('macrophage', 0):.2f} | {paper} |")
    s = report["scale"]
    lines.append("")
    lines.append(f"Scaled down for a 2-core CPU: {s['arch']}, {s['size']} px crops, steps base/single/transfer "
                 f"{s['base_steps']}/{s['single_steps']}/{s['transfer_steps']}, {s['mixed']} labelled mixed images "
                 f"(75/12.5/12.5 % split), {s['single']} auto-labelled images per single kind, U-Transfer on "
                 f"{s['transfer_n']} mixed images; all three evaluated on the same {report['test_images']} held-out "
                 f"simulated mixed 512×512 images; {report['minutes']} min in all.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/experiment"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a few steps only, to check the pipeline")
    args = parser.parse_args()
    scale = Scale(mixed=12, single=8, test=4, base_steps=4, single_steps=4, transfer_steps=2, transfer_n=4,
                  val_every=2) if args.quick else Scale()
    print(render(run(args.out, scale, args.seed)))
