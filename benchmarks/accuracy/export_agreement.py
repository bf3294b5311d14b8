"""How closely each exported precision follows the PyTorch model: a checkpoint exported at FP32, FP16 and INT8 by
`csc-export onnx`, each compared through ONNX Runtime with the FP32 PyTorch model by the export check itself
(export/checks.py: class-map agreement and max logit difference on simulated mixed frames, or --images).

Run: python -m benchmarks.accuracy.export_agreement RUN/best.pt --out benchmarks/results/export_agreement.json
(INT8 is calibrated on --calib DIR, default: 32 simulated mixed frames, seed 7.)
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.publish import publish
from export.checks import AGREEMENT_THRESHOLD, run_checks
from export.onnx_export import ExportOptions, export_onnx
from runtime.backends.engine_sidecar import sha256
from runtime.backends.model_meta import PRECISIONS

CALIB_SEED, CALIB_FRAMES = 7, 32


def measure(checkpoint: Path, size: int = 512, calib: Path | None = None, images: Path | None = None) -> dict:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if calib is None:
            from runtime.data.synthesize import synthesize_dataset

            calib = synthesize_dataset("mixed", CALIB_FRAMES, Path(tmp) / "calib", seed=CALIB_SEED, size=size) / "images"
        for precision in PRECISIONS:
            out = Path(tmp) / f"{precision}.onnx"
            export_onnx(checkpoint, out, ExportOptions(size=size, precision=precision),
                        calib=calib if precision == "int8" else None)
            report = run_checks(out, checkpoint, images)
            results.append({"precision": precision, "agreement": round(report.agreement, 6),
                            "max_logit_diff": float(f"{report.max_logit_diff:.3g}"),
                            "threshold": AGREEMENT_THRESHOLD[precision], "passes": report.ok})
    return {"checkpoint": f"{checkpoint} sha256:{sha256(checkpoint)[:16]}", "size": size,
            "frames": str(images) if images else "simulated mixed (export/checks.py check_frames)",
            "results": results}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--calib", type=Path, help="calibration images for INT8 (default: simulated)")
    parser.add_argument("--images", type=Path, help="real images to compare on (default: simulated frames)")
    parser.add_argument("--out", type=Path, help="write the JSON here too (benchmarks/results/)")
    args = parser.parse_args()
    publish(measure(args.checkpoint, args.size, args.calib, args.images), args.out)
