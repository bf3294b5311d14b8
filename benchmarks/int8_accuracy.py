"""What INT8 costs in accuracy: mIoU and count accuracy of exported ONNX models (e.g. fp32 and int8 of one
checkpoint) through ONNX Runtime on the same held-out simulated mixed frames.

Run: python -m benchmarks.int8_accuracy model_fp32.onnx model_int8.onnx [--n 30]
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from runtime.backends.onnxruntime import OnnxRuntimeRunner
from runtime.count_metrics import CountTally
from runtime.counting import CellCounter
from runtime.simulator import SimConfig, SimulatedMicroscope
from trainer.metrics import confusion_matrix, fwiou, miou


def evaluate_onnx(path: str, n: int = 30, seed: int = 99) -> dict:
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
        return {"model": path, "precision": runner.metadata.precision, "miou": round(miou(cm), 4),
                "fwiou": round(fwiou(cm), 4), "count_accuracy": tally.summary()["count_accuracy"]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--n", type=int, default=30)
    args = parser.parse_args()
    print(json.dumps([evaluate_onnx(m, args.n) for m in args.models], indent=2))
