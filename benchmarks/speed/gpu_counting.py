"""The torch counter (`runtime.counting.gpu.TorchCellCounter`) on a 4000×3000 simulator class map, against the CPU
counter (`CellCounter`) in the same run: time per frame and whether counts and cell tables are the same; then the
same comparison on 512×512 frames (how many of them differ).

On cuda when torch sees a GPU (the class map handed over as a tensor already on the device, as a model's argmax
would be; the clock stops after a synchronisation), else on torch's CPU, which says nothing about GPU speed.
The issue's target (#24): ≤ 5 ms for a 4000×3000 class map on a GPU, same counts as the CPU counter.

Run: python -m benchmarks.speed.gpu_counting [--repeats 5] [--frames 20] [--out benchmarks/results/gpu_counting_<gpu>.json]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.publish import machine, publish
from runtime.counting.counter import CellCounter, CountingConfig
from runtime.data.simulator import SimConfig, SimulatedMicroscope, make_microscope



def _best_ms(run, repeats: int, sync) -> float:
    run()  # warm-up: allocations, kernels, per-shape buffers
    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        run()
        sync()
        best = min(best, time.perf_counter() - start)
    return round(best * 1e3, 2)


def _same(a, b) -> bool:
    return a.counts == b.counts and a.cells.tobytes() == b.cells.tobytes()


def measure(repeats: int = 5, frames: int = 20, height: int = 3000, width: int = 4000) -> dict:
    import torch

    from runtime.counting.gpu import TorchCellCounter

    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    semantic = SimulatedMicroscope(SimConfig(mode="mixed", height=height, width=width), seed=3).frame(0).semantic
    on_device = torch.from_numpy(semantic).to(device)
    full = {}
    for split in (False, True):
        config = CountingConfig(split_touching=split)
        cpu, gpu = CellCounter(config), TorchCellCounter(config, device=device)
        expected, got = cpu.count(semantic), gpu.count(on_device)
        full["split_on" if split else "split_off"] = {
            "torch_ms": _best_ms(lambda: gpu.count(on_device), repeats, sync),
            "cpu_counter_ms": _best_ms(lambda: cpu.count(semantic), repeats, lambda: None),
            "counts": got.counts, "cpu_counts": expected.counts, "same_table": _same(expected, got),
            "host_fallbacks": gpu.host_fallbacks,
        }
    differing = {}
    for split in (False, True):
        config = CountingConfig(split_touching=split)
        cpu, gpu = CellCounter(config), TorchCellCounter(config, device=device)
        sims = [make_microscope("mixed", size=512, seed=seed).frame(0).semantic for seed in range(frames)]
        differing["split_on" if split else "split_off"] = sum(
            not _same(cpu.count(s), gpu.count(torch.from_numpy(s).to(device))) for s in sims)
    return {
        "machine": machine(),
        "device": torch.cuda.get_device_name() if device == "cuda" else "torch CPU (no GPU): not a GPU figure",
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "frame": f"{width}x{height} mixed, SimulatedMicroscope seed 3, frame 0",
        "cells": int(sum(expected.counts.values())),
        "repeats": repeats, "best_of_repeats": full,
        "frames_512_compared": frames, "frames_512_differing": differing,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes after a warm-up; the best one counts")
    parser.add_argument("--frames", type=int, default=20, help="512×512 frames compared with the CPU counter")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    publish(measure(args.repeats, args.frames), args.out)
