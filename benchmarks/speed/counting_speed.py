"""Cost of counting per frame (issue #24): 512×512 frames, a 4000×3000 frame of ~2 000 cells on one and on two
cores, its peak memory above the frame, the same frame with one class only (RBCs) on one and two cores, a dense
4000×3000 frame (half of it large separate cells) and a confluent 4000×3000 sheet of touching cells.

Each figure is the best of several passes (the machine's noise only ever adds time) as wall time, beside the
thread's CPU time: on a machine shared with other work, CPU time is what one core spends. Memory is measured in a
fresh process per case (the peak RSS while counting — VmHWM, reset once the class map is made — minus the RSS with
the class map loaded), so that one case's heap does not hide another's.

Run: python -m benchmarks.speed.counting_speed [--frames 50] [--repeats 5] [--out benchmarks/results/counting_speed.json]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from benchmarks.publish import machine, publish
from runtime.counting.counter import CellCounter, CountingConfig
from runtime.pipeline.overlay import OverlayRenderer
from runtime.data.simulator import SimConfig, SimulatedMicroscope, make_microscope

FULL = (3000, 4000)  # the paper's camera (§2.3)


def best_of(repeats: int, work: Callable[[], object]) -> dict[str, float]:
    """Best wall and thread-CPU milliseconds of ``repeats`` runs of ``work`` (after one warm-up run)."""
    work()
    wall, cpu = float("inf"), float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.thread_time()
        work()
        wall, cpu = min(wall, time.perf_counter() - start), min(cpu, time.thread_time() - start_cpu)
    return {"wall_ms": round(wall * 1e3, 2), "cpu_ms": round(cpu * 1e3, 2)}


def small_frames(frames: int, repeats: int, size: int = 512) -> dict:
    cv2.setNumThreads(1)
    sim = [make_microscope("mixed", size=size, seed=7).frame(i) for i in range(frames)]
    renderer = OverlayRenderer()
    out = {}
    for split in (False, True):
        counter = CellCounter(CountingConfig(split_touching=split))
        count = best_of(repeats, lambda: [counter.count(f.semantic) for f in sim])
        results = [counter.count(f.semantic) for f in sim]
        both = best_of(repeats, lambda: [renderer.render(f.image, f.semantic, r.counts, fps=30.0)
                                         for f, r in zip(sim, results)])
        out["split_on" if split else "split_off"] = {
            "count": round(count["wall_ms"] / frames, 3), "count_cpu": round(count["cpu_ms"] / frames, 3),
            "count+overlay": round((count["wall_ms"] + both["wall_ms"]) / frames, 3)}
    return {"frame": f"{size}x{size} mixed", "frames": frames, "ms_per_frame": out}


def full_frame() -> np.ndarray:
    """The class map of a simulated 4000×3000 mixed frame (seed 3: about 1 800 RBCs and 230 macrophages)."""
    return SimulatedMicroscope(SimConfig(mode="mixed", height=FULL[0], width=FULL[1]), seed=3).frame(0).semantic


def one_class_frame() -> np.ndarray:
    """The full frame with its macrophages cleared: one class of about 1 800 RBCs, as a smear of red cells gives,
    where counting the classes at once leaves the second core idle."""
    class_map = full_frame()
    class_map[class_map != 1] = 0
    return class_map


def dense_frame() -> np.ndarray:
    """A 4000×3000 class map half covered by large separate cells (discs of radius 50 px, 130 px apart, none
    touching): the case where a list of the foreground's pixels costs most and saves nothing."""
    class_map = np.zeros(FULL, np.uint8)
    for y in range(60, FULL[0] - 50, 130):
        for x in range(60, FULL[1] - 50, 130):
            cv2.circle(class_map, (x, y), 50, 1, -1)
    return class_map


def confluent_sheet() -> np.ndarray:
    """A 4000×3000 class map covered by touching RBC discs (hexagonal packing, 12 px apart, radius 6): one clump
    of about 90 000 cells, the worst case of the splitter."""
    class_map = np.zeros(FULL, np.uint8)
    step, radius = 12, 6
    for row, y in enumerate(range(radius, FULL[0] - radius, int(step * 0.87))):
        for x in range(radius + (step // 2) * (row % 2), FULL[1] - radius, step):
            cv2.circle(class_map, (x, y), radius, 1, -1)
    return class_map


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS: now; VmHWM: the peak since the last reset)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1e3
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    """Make VmHWM start again from the current RSS (Linux ≥ 4.0), so making the class map is not counted."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def _measure_case(case: str, threads: int, repeats: int, queue) -> None:
    """In a fresh process: count one case, timing it and its peak RSS above the loaded class map."""
    cv2.setNumThreads(1)
    class_map = {"full": full_frame, "one_class": one_class_frame, "dense": dense_frame,
                 "confluent": confluent_sheet}[case]()
    counter = CellCounter(workers=threads)
    _reset_peak()
    baseline = _status_mb("VmRSS")
    start = time.perf_counter()
    result = counter.count(class_map)
    first = time.perf_counter() - start
    peak = _status_mb("VmHWM")
    timing = best_of(repeats, lambda: counter.count(class_map)) if repeats else {"wall_ms": round(first * 1e3, 1)}
    if threads > 1:
        timing.pop("cpu_ms", None)  # the calling thread's CPU time leaves the workers' out
    queue.put({"counts": result.counts, "cells": len(result.cells), **timing,
               "peak_rss_above_frame_mb": round(peak - baseline, 1), "threads": threads})


def large_case(case: str, threads: int, repeats: int) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_measure_case, args=(case, threads, repeats, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def measure(frames: int = 50, repeats: int = 5) -> dict:
    return {
        "machine": machine(), "load_average_at_start": os.getloadavg()[0],
        "512": small_frames(frames, repeats),
        "4000x3000": {f"{threads}_thread{'s' if threads > 1 else ''}": large_case("full", threads, repeats)
                      for threads in (1, 2)},
        "4000x3000_one_class": {f"{threads}_thread{'s' if threads > 1 else ''}":
                                large_case("one_class", threads, repeats) for threads in (1, 2)},
        "dense_4000x3000": large_case("dense", 1, repeats),
        # A single timed run: the sheet takes seconds, and its memory is the question.
        "confluent_4000x3000": large_case("confluent", 1, 0),
        "notes": "wall_ms and cpu_ms (the calling thread's): best of the passes; threads: CellCounter(workers=N), "
                 "the classes of the frame counted at once and each class's components split in runs at once; "
                 "OpenCV's own parallel loops off (cv2.setNumThreads(1))",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5, help="passes over the frames; the best one counts")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    publish(measure(args.frames, args.repeats), args.out)
