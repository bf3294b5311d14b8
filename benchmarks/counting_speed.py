"""Per-frame cost of counting + overlay on one core (issue target: ≤ 3 ms at 512×512 with splitting off).

Best of several passes over the same frames: the machine's noise only ever adds time. Run it on a quiet machine.

Run: python -m benchmarks.counting_speed [--frames 50] [--repeats 5] [--out benchmarks/results/counting_speed.json]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2

from benchmarks.publish import machine, publish
from runtime.counting import CellCounter, CountingConfig
from runtime.overlay import OverlayRenderer
from runtime.simulator import make_microscope


def measure(frames: int = 50, repeats: int = 5, size: int = 512) -> dict:
    cv2.setNumThreads(1)
    sim = [make_microscope("mixed", size=size, seed=7).frame(i) for i in range(frames)]
    renderer = OverlayRenderer()
    out = {}
    for split in (False, True):
        counter = CellCounter(CountingConfig(split_touching=split))
        best = {"count": float("inf"), "count+overlay": float("inf")}
        for _ in range(repeats):
            start = time.perf_counter()
            results = [counter.count(f.semantic) for f in sim]
            mid = time.perf_counter()
            for f, r in zip(sim, results):
                renderer.render(f.image, f.semantic, r.counts, fps=30.0)
            end = time.perf_counter()
            best["count"] = min(best["count"], (mid - start) / frames * 1e3)
            best["count+overlay"] = min(best["count+overlay"], (end - start) / frames * 1e3)
        out["split_on" if split else "split_off"] = {k: round(v, 3) for k, v in best.items()}
    return {"machine": machine(), "frame": f"{size}x{size} mixed", "frames": frames, "repeats": repeats, "threads": 1,
            "ms_per_frame": out}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5, help="passes over the frames; the best one counts")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    publish(measure(args.frames, args.repeats), args.out)
