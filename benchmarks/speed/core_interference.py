"""How much inference slows when the other core works: the ceiling of the end-to-end ratio on this machine.

`benchmarks.speed.e2e_ratio` compares the pipeline with inference alone. On two cores the pipeline must use the
second core (drawing the demo's frames, counting them), and cores share caches, memory bandwidth and, on a
virtual machine, whatever the host shares between them. This script measures inference alone (the same runner:
ONNX Runtime, one thread, the bundled model, a 512×512 demo frame) while the other core is idle, while another
*process* spins on it (a busy loop that touches no memory), while another process does the pipeline's
second-core work (draws demo frames and counts them, as the capture and counting stages do), and while a *thread*
of the inference's own process does that work, as in the pipeline. A process shares no GIL, so what it costs is
lost below Python (caches, memory, the host); what the thread costs beyond it is the GIL's share. Conditions are
interleaved over --rounds, and the medians compared.

Run: python -m benchmarks.speed.core_interference [--rounds 6] [--frames 200] [--out benchmarks/results/core_interference.json]
"""
from __future__ import annotations

import argparse
import multiprocessing
import statistics
import threading
import time
from pathlib import Path

from benchmarks.publish import machine, publish

CONDITIONS = ("idle", "spin", "pipeline_work", "pipeline_work_thread")


def _spin(stop) -> None:
    """A busy loop on one core that keeps to registers and the first cache level."""
    while not stop.is_set():
        for _ in range(100_000):
            pass


def _pipeline_work(stop) -> None:
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


def _worker(name: str, ctx, stop) -> multiprocessing.Process | threading.Thread | None:
    """What runs beside inference in a condition: nothing, a process, or (the pipeline's case) a thread of this
    process, which shares the GIL with the inference loop."""
    if name == "idle":
        return None
    if name == "pipeline_work_thread":
        return threading.Thread(target=_pipeline_work, args=(stop,), daemon=True)
    return ctx.Process(target=_spin if name == "spin" else _pipeline_work, args=(stop,), daemon=True)


def inference_fps(runner, frame, frames: int) -> float:
    for _ in range(3):
        runner.infer(frame)
    start = time.perf_counter()
    for _ in range(frames):
        runner.infer(frame)
    return frames / (time.perf_counter() - start)


def measure(rounds: int = 6, frames: int = 200) -> dict:
    from runtime.backends.onnxruntime import OnnxRuntimeRunner
    from runtime.cli.run import DEFAULT_MODEL
    from runtime.data.simulator import make_microscope

    ctx = multiprocessing.get_context("spawn")
    frame = make_microscope("mixed").frame(0).image[None]
    fps: dict[str, list[float]] = {name: [] for name in CONDITIONS}
    with OnnxRuntimeRunner(DEFAULT_MODEL, threads=1) as runner:
        for _ in range(rounds):
            for name in CONDITIONS:
                stop = threading.Event() if name == "pipeline_work_thread" else ctx.Event()
                worker = _worker(name, ctx, stop)
                if worker is not None:
                    worker.start()
                    time.sleep(2.0)  # the worker's imports and first frames are behind it
                try:
                    fps[name].append(round(inference_fps(runner, frame, frames), 1))
                finally:
                    stop.set()
                    if worker is not None:
                        worker.join(10)
        detail = runner.detail
    median = {name: statistics.median(values) for name, values in fps.items()}
    return {"machine": machine(), "runner": detail, "frames_per_measurement": frames, "rounds": rounds,
            "inference_fps": fps, "median_fps": {k: round(v, 1) for k, v in median.items()},
            "ratio_to_idle": {k: round(median[k] / median["idle"], 3) for k in CONDITIONS[1:]},
            "notes": "inference alone on one core; beside it nothing, another process spinning or doing the "
                     "pipeline's second-core work (demo frames drawn, blank check, counted with splitting), or a "
                     "thread of the same process doing that work (the GIL shared, as in the pipeline)"}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    publish(measure(args.rounds, args.frames), args.out)
