"""Simulated-microscope frame rate on one core (issue target: ≥ 50 frames/s at 512×512, to serve as a camera).

Run it on a quiet machine: python -m benchmarks.speed.simulator_speed [--frames 100] [--out benchmarks/results/simulator_speed.json]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2

from benchmarks.publish import machine, publish
from runtime.data.simulator import make_microscope


def measure(frames: int = 100, size: int = 512) -> dict:
    cv2.setNumThreads(1)
    rates = {}
    for kind in ("rbc", "macrophage", "mixed"):
        microscope = make_microscope(kind, size=size, seed=1)
        microscope.frame(0)
        start = time.perf_counter()
        for i in range(frames):
            microscope.frame(i)
        rates[f"{kind} frame()"] = round(frames / (time.perf_counter() - start), 1)
    stream = make_microscope("mixed", size=size, seed=1).stream()
    next(stream)
    start = time.perf_counter()
    for _ in range(frames):
        next(stream)
    rates["mixed stream()"] = round(frames / (time.perf_counter() - start), 1)
    return {"machine": machine(), "size": f"{size}x{size}", "frames": frames, "threads": 1, "frames_per_second": rates}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100, help="frames per kind")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    publish(measure(args.frames), args.out)
