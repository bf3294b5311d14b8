"""Cost of calibrating the pixel size where none is given (`csc-run` without --pixel-size), at 512×512 and 4000×3000.

A run calibrates once, on its first three frames, before it counts one: that start weighs in a short run's whole
end-to-end rate (issue #24), and on the paper's 4000×3000 camera it took minutes. Per frame size, on three
simulated mixed frames: the classical measure of the frames (`cell_diameters`); inside it, the flattening blur (σ
= the frame's side ÷ 8) as OpenCV's full-size Gaussian, which it was, and as `wide_gaussian`, which it is, timed in
the same run on the same frame with their largest difference; and the whole calibration with the bundled model
(ONNX Runtime, one thread) and how many times it segmented the frame. OpenCV on one thread; each figure the best
of --repeats passes (one pass for OpenCV's blur at 4000×3000, some 20 s).

Run: python -m benchmarks.speed.calibration_speed [--repeats 5] [--out benchmarks/results/calibration_speed.json]
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from benchmarks.publish import machine, publish
from runtime.backends.onnxruntime import OnnxRuntimeRunner
from runtime.cli.run import DEFAULT_MODEL
from runtime.counting.calibration import calibrate, cell_diameters
from runtime.data.energy import wide_gaussian
from runtime.data.modality import as_grey
from runtime.data.simulator import SimConfig, SimulatedMicroscope
from runtime.pipeline.stream import Segmenter

SIZES = {"512x512": (512, 512), "4000x3000": (3000, 4000)}


def best_ms(repeats: int, work: Callable[[], object]) -> tuple[float, object]:
    """Best wall milliseconds of ``repeats`` runs of ``work``, and what the last run returned."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - start)
    return round(best * 1e3, 2), result


def measure_size(runner: OnnxRuntimeRunner, shape: tuple[int, int], repeats: int) -> dict:
    microscope = SimulatedMicroscope(SimConfig(mode="mixed", height=shape[0], width=shape[1]), seed=3)
    frames = [microscope.frame(i).image for i in range(3)]
    # The grey image the flattening blurs, as `cell_diameters` (`_stained_diameters`) makes it.
    grey = cv2.GaussianBlur(as_grey(frames[0]), (0, 0), 1.0).astype(np.float32)
    sigma = min(shape) / 8
    blur_repeats = 1 if shape[0] * shape[1] > 4e6 else repeats
    opencv, exact = best_ms(blur_repeats, lambda: cv2.GaussianBlur(grey, (0, 0), sigma))
    shrunk, copy = best_ms(repeats, lambda: wide_gaussian(grey, sigma))
    difference = float(np.abs(copy - exact).max())
    zooms: list[float] = []

    def segment(frame: np.ndarray, zoom: float) -> np.ndarray:
        zooms.append(zoom)
        return Segmenter(runner, zoom=zoom).segment(frame)

    found = calibrate(frames, runner.metadata, segment)
    segmentations = len(zooms)
    return {
        "frames": 3,
        "flattening_blur_ms": {"opencv_full_size": opencv, "wide_gaussian": shrunk,
                               "ratio": round(opencv / shrunk, 1), "largest_difference_grey": round(difference, 4)},
        "cell_diameters_ms_3_frames": best_ms(repeats, lambda: [cell_diameters(f) for f in frames])[0],
        "calibrate_ms": best_ms(repeats, lambda: calibrate(frames, runner.metadata, segment))[0],
        "segmentations": segmentations,
        "calibration": found.describe(),
    }


def measure(repeats: int = 5) -> dict:
    cv2.setNumThreads(1)
    with OnnxRuntimeRunner(DEFAULT_MODEL, threads=1) as runner:
        runner.infer(np.zeros((1, *runner.input_size, 3), np.uint8))  # the session's first call allocates
        sizes = {name: measure_size(runner, shape, repeats) for name, shape in SIZES.items()}
    return {"machine": machine(), "opencv_threads": 1, "runner": "ONNX Runtime CPU, 1 thread, bundled model",
            "frames": "SimulatedMicroscope mixed, seed 3, frames 0-2", "sizes": sizes}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    publish(measure(args.repeats), args.out)
