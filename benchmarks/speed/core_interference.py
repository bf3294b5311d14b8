"""How much inference slows when the other core works: the ceiling of the end-to-end ratio on this machine.

`benchmarks.speed.e2e_ratio` compares the pipeline with inference alone. On two cores the pipeline must use the
second core (drawing the demo's frames, counting them), and cores share caches, memory bandwidth and, on a
virtual machine, whatever the host shares between them. This script measures inference alone (the same runner:
ONNX Runtime, one thread, the bundled model, a 512×512 demo frame) while the other core is idle, while another
*process* spins on it (a busy loop that touches no memory), while another process does the pipeline's
second-core work (draws demo frames and counts them, as the capture and counting stages do), and while a *thread*
of the inference's own process does that work, as in the pipeline. A process shares no GIL, so what it costs is
lost below Python (caches, memory, the host); what the thread costs beyond it is the GIL's share.

This VM's speed drifts by tens of percent within seconds, so each round measures every condition once, in an order
rotated from round to round, and the result is the median over rounds of each condition's ratio to that round's
idle measurement (as `e2e_ratio` compares within a sandwich).

Run: python -m benchmarks.speed.core_interference [--rounds 12] [--frames 200] [--out benchmarks/results/core_interference.json]
"""
from __future__ import annotations

import argparse
import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path

from benchmarks.publish import machine, publish
from benchmarks.speed.e2e_ratio import inference_fps

CONDITIONS = ("idle", "spin", "pipeline_work", "pipeline_work_thread")
WARMUP_S = 2.0  # a worker's first frames are behind it before inference is measured
# A spawned worker imports its module first: on a loaded machine that took longer than the warm-up, and a worker
# that had already failed still looked alive. Its work is waited for (up to this long) before the warm-up starts.
START_TIMEOUT_S = 120.0
Stop = threading.Event | ProcessEvent


def _spin(stop: Stop) -> None:
    """A busy loop on one core that keeps to registers and the first cache level."""
    while not stop.is_set():
        for _ in range(100_000):
            pass


def _pipeline_work(stop: Stop) -> None:
    """The second core's share of `csc-run --source demo`: draw a frame (no maps, as the demo camera does), check
    it for blankness, count a class map (the simulator's own maps of 20 frames, in turn, for the model's)."""
    import itertools

    import cv2

    from runtime.counting.blank import is_blank
    from runtime.counting.counter import CellCounter
    from runtime.data.simulator import make_microscope

    cv2.setNumThreads(1)
    counter = CellCounter()
    microscope = make_microscope("mixed", seed=0)
    class_maps = itertools.cycle([microscope.frame(i).semantic for i in range(20)])
    stream = microscope.stream(maps=False)
    while not stop.is_set():
        is_blank(next(stream).image)
        counter.count(next(class_maps))


def _started(work: Callable[[Stop], None], started: Stop, stop: Stop) -> None:
    """``work`` until ``stop``, saying first that it got this far (its imports done)."""
    started.set()
    work(stop)


def _worker(name: str, ctx: SpawnContext, stop: Stop, started: Stop) -> BaseProcess | threading.Thread | None:
    """What runs beside inference in a condition: nothing, a process, or (the pipeline's case) a thread of this
    process, which shares the GIL with the inference loop; each sets ``started`` as its work begins."""
    if name == "idle":
        return None
    if name == "pipeline_work_thread":
        return threading.Thread(target=_started, args=(_pipeline_work, started, stop), daemon=True)
    work = _spin if name == "spin" else _pipeline_work
    return ctx.Process(target=_started, args=(work, started, stop), daemon=True)


def _measured_beside(name: str, ctx: SpawnContext, measure_once: Callable[[], float]) -> float:
    """One inference measurement with the condition's worker running beside it for all of it; a worker that died
    (an import error, an exception) fails the run rather than pass for an idle core."""
    in_thread = name == "pipeline_work_thread"
    stop, started = (threading.Event(), threading.Event()) if in_thread else (ctx.Event(), ctx.Event())
    worker = _worker(name, ctx, stop, started)
    try:
        if worker is not None:
            worker.start()
            waited = 0.0
            while not started.wait(0.5):  # a worker that died in its imports says so at once, not after the timeout
                waited += 0.5
                if not worker.is_alive() or waited >= START_TIMEOUT_S:
                    raise RuntimeError(f"the {name} worker stopped before its work began"
                                       if not worker.is_alive() else
                                       f"the {name} worker did not start its work within {START_TIMEOUT_S:.0f} s")
            time.sleep(WARMUP_S)
        fps = measure_once()
        if worker is not None and not worker.is_alive():
            raise RuntimeError(f"the {name} worker stopped before the measurement ended")
        return fps
    finally:
        stop.set()
        if worker is not None:
            worker.join(10)
            if isinstance(worker, BaseProcess) and worker.is_alive():
                worker.terminate()
                worker.join()


def measure(rounds: int = 12, frames: int = 200) -> dict:
    """Inference FPS under each condition, ``rounds`` times in rotated order, and each condition's median ratio
    to the same round's idle measurement."""
    from runtime.backends.onnxruntime import OnnxRuntimeRunner
    from runtime.cli.run import DEFAULT_MODEL
    from runtime.data.simulator import make_microscope

    ctx = multiprocessing.get_context("spawn")
    frame = make_microscope("mixed").frame(0).image[None]
    fps: dict[str, list[float]] = {name: [] for name in CONDITIONS}
    with OnnxRuntimeRunner(DEFAULT_MODEL, threads=1) as runner:
        for i in range(rounds):
            for name in CONDITIONS[i % len(CONDITIONS):] + CONDITIONS[:i % len(CONDITIONS)]:
                fps[name].append(round(_measured_beside(name, ctx, lambda: inference_fps(runner, frame, frames)), 1))
        detail = runner.detail
    ratios = {name: [round(a / b, 3) for a, b in zip(fps[name], fps["idle"])] for name in CONDITIONS[1:]}
    return {"machine": machine(), "runner": detail, "frames_per_measurement": frames, "rounds": rounds,
            "inference_fps": fps, "median_fps": {k: round(statistics.median(v), 1) for k, v in fps.items()},
            "ratios_to_idle_by_round": ratios,
            "median_ratio_to_idle": {k: round(statistics.median(v), 3) for k, v in ratios.items()},
            "notes": "inference alone on one core; beside it nothing, another process spinning or doing the "
                     "pipeline's second-core work (demo frames drawn, blank check, counted with splitting), or a "
                     "thread of the same process doing that work (the GIL shared, as in the pipeline); ratios "
                     "within each round, conditions in rotated order"}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    publish(measure(args.rounds, args.frames), args.out)
