"""The runtime counter's two rules on real images, each switched off and the one-cell factor varied, with the
bundled model on the held-out Chula subset and BCCD half (the real-image benchmark's sets and scoring).

- one cell: a clump no larger than `one_cell` × the frame's median single cell is not split (0: off);
- cut cells: parts touching the frame edge are kept down to `cut_cell_fraction` × the minimum area (1: off).

Run: python -m benchmarks.counting_rules [--model runtime/models/default.onnx] [--out benchmarks/results/counting_rules.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.publish import publish
from benchmarks.real_counts import (BCCD_PIXEL_UM, CHULA_EDGE_BAND, CHULA_PIXEL_UM, SUBSET, bccd_half, import_real,
                                    runtime_labeller, score_marks)
from runtime.errors import CscError

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {"both rules (defaults)": {},
            "one cell off": {"one_cell": 0.0},
            "cut cells off": {"cut_cell_fraction": 1.0},
            "both off (the counter before)": {"one_cell": 0.0, "cut_cell_fraction": 1.0},
            "one cell 1.1": {"one_cell": 1.1},
            "one cell 1.35": {"one_cell": 1.35}}


def measure(real: Path, model: Path) -> dict:
    if not real.is_dir():
        raise CscError("the real images are not here", path=real, fix="run beside ../shared/real, or pass --real")
    stems = [image["stem"] for image in json.loads(SUBSET.read_text(encoding="utf-8"))["images"]]
    with tempfile.TemporaryDirectory() as scratch:
        chula, bccd = import_real(real, Path(scratch))
        wbc = {s.stem: s.points["wbc"] for s in bccd.samples if len(s.points.get("wbc", ()))}
        rows = {}
        for name, counting in SETTINGS.items():
            method = runtime_labeller(model, **counting)
            row = {"settings": counting}
            for key, dataset, chosen, pixel, band, extra in (
                    ("chula", chula, stems, CHULA_PIXEL_UM, CHULA_EDGE_BAND, None),
                    ("bccd", bccd, bccd_half(bccd, "eval"), BCCD_PIXEL_UM, 0.0, wbc)):
                summary = score_marks(dataset, chosen, method, pixel, band, extra).summary
                row[key] = {"ratio": summary["count_accuracy"]["rbc"], "f1": summary["instances"]["rbc"]["f1"]}
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
