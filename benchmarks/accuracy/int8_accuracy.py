"""What INT8 costs in accuracy: mIoU and count accuracy of exported ONNX models through ONNX Runtime on the same
held-out simulated mixed frames.

With ``--quantize``, the first (FP32, fused) model is also quantized here with the exporter's own INT8 pass
(export/precision.py: QDQ, calibrated on simulated mixed frames of another seed) and evaluated beside it, so the
result needs no checkpoint — the bundled model ships without one.

Run: python -m benchmarks.accuracy.int8_accuracy runtime/models/default.onnx --quantize --out benchmarks/results/int8_accuracy.json
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.publish import publish
from runtime.backends.onnxruntime import OnnxRuntimeRunner
from runtime.counting.metrics import CountTally
from runtime.counting.counter import CellCounter
from runtime.data.simulator import SimConfig, SimulatedMicroscope
from trainer.metrics import confusion_matrix, fwiou, miou

EVAL_SEED, CALIB_SEED, CALIB_FRAMES = 99, 7, 32


def evaluate_onnx(path: str | Path, n: int = 30, seed: int = EVAL_SEED) -> dict:
    with OnnxRuntimeRunner(path) as runner:
        h, w = runner.input_size
        microscope = SimulatedMicroscope(SimConfig(height=h, width=w), seed=seed)
        cm = np.zeros((3, 3), np.int64)
        counter, tally = CellCounter(), CountTally(("rbc", "macrophage"))
        for i in range(n):
            frame = microscope.frame(i)
            pred = runner.infer(frame.image[None])[0]
            cm += confusion_matrix(pred, frame.semantic, 3)
            tally.add(counter.count(pred).counts, frame.counts)
        return {"model": str(path), "precision": runner.metadata.precision, "miou": round(miou(cm), 4),
                "fwiou": round(fwiou(cm), 4), "count_accuracy": tally.summary()["count_accuracy"]}


def quantize(fp32: Path, out: Path) -> Path:
    """INT8 QDQ copy of a fused FP32 ONNX file, calibrated on simulated mixed frames (seed CALIB_SEED), with the
    metadata saying int8."""
    import onnx

    from export.checks import metadata_of
    from export.onnx_export import _write_metadata
    from export.precision import quantize_int8
    from runtime.io.imageio import write_image

    graph = onnx.load(str(fp32))
    meta = metadata_of(graph, fp32)
    h, w = meta.input_size
    microscope = SimulatedMicroscope(SimConfig(height=h, width=w), seed=CALIB_SEED)
    with tempfile.TemporaryDirectory() as calib:
        for i in range(CALIB_FRAMES):
            write_image(Path(calib) / f"{i:03d}.png", microscope.frame(i).image)
        quantized = quantize_int8(graph, calib, meta)
    meta.precision = "int8"
    _write_metadata(quantized, meta)
    onnx.save(quantized, out)
    return out


def main(models: list[str], n: int = 30, quantize_first: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(m) for m in models]
        if quantize_first:
            paths.insert(1, quantize(paths[0], Path(tmp) / f"{paths[0].stem}_int8.onnx"))
        results = [evaluate_onnx(p, n) for p in paths]
    if quantize_first:
        results[1]["model"] = (f"{models[0]} quantized by export/precision.py (calibration: {CALIB_FRAMES} simulated "
                                f"mixed frames, seed {CALIB_SEED})")
    return {"frames": n, "seed": EVAL_SEED, "results": results}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--quantize", action="store_true", help="also quantize the first model to INT8 and evaluate it")
    parser.add_argument("--out", type=Path, help="write the JSON here too (benchmarks/results/)")
    args = parser.parse_args()
    publish(main(args.models, args.n, args.quantize), args.out)
