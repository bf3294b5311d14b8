"""Simulated-microscope frame rate on one core (issue target: ≥ 50 frames/s at 512×512, to serve as a camera).

Run: python -m benchmarks.simulator_speed
"""
from __future__ import annotations

import time

import cv2

from runtime.simulator import make_microscope


def measure(frames: int = 100) -> dict:
    cv2.setNumThreads(1)
    out = {}
    for kind in ("rbc", "macrophage", "mixed"):
        microscope = make_microscope(kind, seed=1)
        microscope.frame(0)
        start = time.perf_counter()
        for i in range(frames):
            microscope.frame(i)
        out[f"{kind} frame()"] = round(frames / (time.perf_counter() - start), 1)
    stream = make_microscope("mixed", seed=1).stream()
    next(stream)
    start = time.perf_counter()
    for _ in range(frames):
        next(stream)
    out["mixed stream()"] = round(frames / (time.perf_counter() - start), 1)
    return out


if __name__ == "__main__":
    print({"size": "512x512", "threads": 1, "frames_per_second": measure()})
