"""The runtime counter's two rules on real images, each switched off and the one-cell factor varied, with the
bundled model on the held-out Chula subset and BCCD half (the real-image benchmark's sets and scoring).

- one cell: a clump no larger than `one_cell` × the frame's median single cell is not split (0: off);
- cut cells: parts touching the frame edge are kept down to `cut_cell_fraction` × the minimum area (1: off).

Run: python -m benchmarks.accuracy.counting_rules [--model runtime/models/default.onnx] [--out benchmarks/results/counting_rules.json]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.publish import publish
from benchmarks.real.real_counts import real_sets, runtime_labeller

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {"both rules (defaults)": {},
            "one cell off": {"one_cell": 0.0},
            "cut cells off": {"cut_cell_fraction": 1.0},
            "both off (the counter before)": {"one_cell": 0.0, "cut_cell_fraction": 1.0},
            "one cell 1.1": {"one_cell": 1.1},
            "one cell 1.35": {"one_cell": 1.35}}


def measure(real: Path, model: Path) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        sets = real_sets(real, Path(scratch))
        rows = {}
        for name, counting in SETTINGS.items():
            row = {"settings": counting}
            for key, result in sets.score(runtime_labeller(model, **counting)).items():
                row[key] = {"ratio": result.summary["count_accuracy"]["rbc"],
                            "f1": result.summary["instances"]["rbc"]["f1"]}
            rows[name] = row
            print(f"{name}: Chula {row['chula']['ratio']} / F1 {row['chula']['f1']}; "
                  f"BCCD {row['bccd']['ratio']} / F1 {row['bccd']['f1']}", flush=True)
    return {"model": str(model.relative_to(ROOT) if model.is_relative_to(ROOT) else model), "settings": rows}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, default=ROOT.parent / "shared" / "real")
    parser.add_argument("--model", type=Path, default=ROOT / "runtime" / "models" / "default.onnx")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    publish(measure(args.real, args.model.resolve()), args.out)
