"""`csc-bench`: inference-only and end-to-end speed per backend × precision × batch, model cost, the machine's own
peak, and the verdict against the paper's 25 FPS at 512×512.

Every figure is the result of many runs: warm-up first, then timed blocks until the block means agree within
2 % (or the entry's time budget is spent); latency percentiles come from all timed runs.
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from shlex import quote

import numpy as np

from benchmarks.publish import cpu_name
from runtime.backends import open_runner
from runtime.backends.openvino import openvino_available
from runtime.backends.base import Runner
from runtime.backends.select import ENGINE_SUFFIXES, engine_beside
from runtime.backends.engine_sidecar import EngineSidecar
from runtime.backends.tensorrt import TensorRTRunner, check_runs_here, why_not_runnable
from runtime.backends.graph_cost import graph_cost
from runtime.pipeline.stream import Pipeline, RunOptions
from runtime.data.simulator import SimConfig, SimulatedMicroscope
from runtime.io.sources import DemoSource, MemorySource, Source

TARGET_FPS = 25.0
READY_FRAMES = 16  # distinct demo frames cycled through the frames-ready run (drawn before it starts)
PAPER = {"params": 7.48e6, "flops_stated": 3.09e6, "fps": 25.0, "gpu": "RTX 2060", "size": 512}


class BenchInterrupted(KeyboardInterrupt):
    """Ctrl-C: ``report`` holds the entries measured before it (``interrupted`` set), to be shown and kept."""

    def __init__(self, report: dict):
        super().__init__()
        self.report = report


@dataclass
class BenchOptions:
    batches: tuple[int, ...] = (1,)
    seconds_per_entry: float = 6.0
    end_to_end_frames: int = 150
    threads: int | None = None
    full_frames: int = 4  # 4000×3000 frames of the end-to-end figure at the paper's camera size (0: skip it)


def measure_latency(runner: Runner, batch: int, budget_s: float) -> dict:
    """Latency (ms per batch) percentiles and FPS from adaptive repeated runs on realistic frames."""
    h, w = runner.input_size
    microscope = SimulatedMicroscope(SimConfig(height=h, width=w), seed=0)
    frames = np.stack([microscope.frame(i).image for i in range(batch)])
    for _ in range(5):
        runner.infer(frames)
    times: list[float] = []
    block_means: list[float] = []
    deadline = time.perf_counter() + budget_s
    while True:
        block = []
        for _ in range(10):
            start = time.perf_counter()
            runner.infer(frames)
            block.append(time.perf_counter() - start)
        times += block
        block_means.append(float(np.mean(block)))
        recent = block_means[-3:]
        stable = len(recent) == 3 and (max(recent) - min(recent)) / np.mean(recent) < 0.02
        if (stable and len(times) >= 30) or time.perf_counter() > deadline:
            break
    ms = np.asarray(times) * 1e3
    return {"runs": len(times), "latency_ms": {p: round(float(np.percentile(ms, q)), 2)
                                                for p, q in (("p50", 50), ("p90", 90), ("p99", 99))},
            "fps": round(batch * 1000 / float(np.median(ms)), 2), "stable": bool(stable)}


def measure_end_to_end(runner: Runner, frames: int) -> dict:
    """The whole `csc-run --source demo --no-show` path: capture → infer → count, with per-stage times; and the same
    pipeline on frames drawn before the run, whose capture stage costs nothing: the demo draws every frame (5–6 ms
    of the second core on a 2-core VM), so the first figure measures the simulator beside the pipeline, the second
    the pipeline with no capture cost at all — an upper bound for a camera, whose read() decodes or converts each
    frame on the capture thread. The demo's frames are made at the model's pixel size, so the start-up calibration
    (which they pass unchanged) is left out of a throughput figure."""
    options = RunOptions(max_frames=frames, calibrate=False)
    summary = run_pipeline(DemoSource(size=runner.input_size[0], seed=0), runner, options)
    ready = run_pipeline(ready_source(runner.input_size[0], frames), runner, options)
    return {"end_to_end_fps": summary["fps"], "stages": summary["stages"], "frames": summary["frames"],
            "frames_ready": {"end_to_end_fps": ready["fps"], "stages": ready["stages"], "frames": ready["frames"]}}


def run_pipeline(source: Source, runner: Runner, options: RunOptions) -> dict:
    """The pipeline's summary of one run. The pipeline takes Ctrl-C as the end of a run (a camera's, whose counts so
    far are the result); here it stops the benchmark: the figure of a run cut short is none, and the benchmark went
    on to its next figure and printed the verdict as if nothing had been pressed."""
    summary = Pipeline(source, runner, options=options).run()
    if summary["interrupted"]:
        raise KeyboardInterrupt
    return summary


def ready_source(size: int, frames: int) -> MemorySource:
    """``frames`` demo frames drawn before the run (READY_FRAMES distinct ones, cycled): a source whose capture
    costs nothing, an upper bound for a camera's."""
    drawn = [frame.image for frame, _ in zip(DemoSource(size=size, seed=0).frames(), range(READY_FRAMES))]
    return MemorySource([drawn[i % len(drawn)] for i in range(frames)], name="ready")


def peak_gflops(threads: int, seconds: float = 2.0) -> float:
    """This machine's measured peak for dense float32 work through ONNX Runtime (a large MatMul)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    n = 1024
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "peak",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    feed = {"a": a, "b": a}
    session.run(None, feed)
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        session.run(None, feed)
        best = min(best, time.perf_counter() - start)
    return round(2 * n**3 / best / 1e9, 1)


def model_cost(model: Path) -> dict:
    """Parameters and FLOPs of a model, counted from its ONNX graph (for an engine: the ONNX file it was built from,
    where that is still here)."""
    source = model
    if model.suffix.lower() in ENGINE_SUFFIXES:
        source = EngineSidecar.read(model).onnx_path(model)
    return graph_cost(source) if source is not None and source.suffix == ".onnx" else {"params": None, "flops": None}


def runners_for(model: Path, backend: str, threads: int | None) -> tuple[list[tuple[Runner, str]], list[str]]:
    """The runners to measure for one model, and why a TensorRT row is missing. With ``auto``, an ONNX file runs on
    ONNX Runtime, on OpenVINO where it is installed (the two CPU backends side by side, in one run), and on TensorRT
    where an engine built from that very file (its sidecar's sha256) sits beside it and this machine can run it."""
    if backend != "auto" or model.suffix.lower() in ENGINE_SUFFIXES:
        runner, reason = open_runner(model, backend, threads)
        if isinstance(runner, TensorRTRunner):  # its activation checks this too, once the models before it ran
            check_runs_here(model, EngineSidecar.read(model))
        return [(runner, reason)], []
    runners = [open_runner(model, "ort", threads)]
    if openvino_available():
        runners.append(open_runner(model, "openvino", threads))
    engine = engine_beside(model)
    if engine is None:
        return runners, [f"{model.name}: no TensorRT row — no engine beside it "
                         f"(csc-export build-engine {quote(str(model))} "
                         f"--out {quote(str(model.with_suffix('.engine')))})"]
    problem = why_not_runnable(engine, model)
    if problem is not None:
        return runners, [f"{model.name}: no TensorRT row — {engine.name} cannot run on this machine: {problem}"]
    return runners + [(TensorRTRunner(engine), f"{engine.name} beside the model")], []


FULL_FRAME = (3000, 4000)  # the paper's camera, §2.3


def full_size_frames(count: int) -> list[np.ndarray]:
    """``count`` 4000×3000 frames for the end-to-end figure: two simulated frames, repeated (simulating one takes
    seconds, far longer than counting it, and a real camera hands frames over ready)."""
    microscope = SimulatedMicroscope(SimConfig(height=FULL_FRAME[0], width=FULL_FRAME[1]), seed=3)
    made = [microscope.frame(i).image for i in range(min(count, 2))]
    return [made[i % len(made)] for i in range(count)]


def measure_full_frames(runner: Runner, frames: list[np.ndarray]) -> dict:
    """The pipeline on 4000×3000 frames (tiled through the model at its input size, counted whole), with per-stage
    times; the frames are made at the model's pixel size, so calibration is left out as above."""
    summary = run_pipeline(MemorySource(frames, name="4000x3000"), runner, RunOptions(calibrate=False, queue_size=2))
    post = summary["stages"].get("post", {})
    return {"end_to_end_fps": summary["fps"], "frames": summary["frames"], "post_ms": post.get("mean_ms"),
            "post_ms_per_megapixel": round(post["mean_ms"] / 12.0, 2) if post else None,
            "infer_ms": summary["stages"].get("infer", {}).get("mean_ms")}


def run_bench(models: list[Path], backend: str = "auto", options: BenchOptions | None = None, progress=None) -> dict:
    """Each model × runner × batch measured; model cost per model, and the CPU's peak for CPU entries (ONNX Runtime,
    OpenVINO; measured once per thread count and shared by every CPU runner of a run), so "% of peak" holds when
    architectures or sizes are mixed."""
    options = options or BenchOptions()
    results, notes = [], []
    # Every model is read and its runners chosen first: a missing or foreign file, an engine this machine cannot
    # run or a backend that cannot run a model is an error before any figure is measured.
    costs = {str(model): model_cost(model) for model in models}
    chosen = [runners_for(model, backend, options.threads) for model in models]
    full = full_size_frames(options.full_frames) if options.full_frames else []
    peaks: dict[int, float] = {}

    def report(interrupted: bool = False) -> dict:
        return {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "system": platform.platform()},
                "models": costs, "peak_gflops": next(iter(peaks.values()), None), "target_fps": TARGET_FPS,
                "paper": PAPER, "results": results, "not_measured": notes,
                **({"interrupted": True} if interrupted else {})}

    try:
        for model, (runners, missing) in zip(models, chosen):
            cost = costs[str(model)]
            notes += missing
            for runner, reason in runners:
                with runner:
                    meta = runner.metadata
                    peak = None
                    if runner.host_threads:  # a CPU backend (ONNX Runtime, OpenVINO): its share of the CPU's peak
                        peak = peaks.get(runner.threads) or peaks.setdefault(runner.threads,
                                                                             peak_gflops(runner.threads))
                    fitting = [b for b in options.batches if runner.min_batch <= b <= (runner.max_batch or b)]
                    batches = fitting or [runner.min_batch]
                    # The end-to-end runs stand beside batch 1's figures (the pipeline counts frame by frame); without
                    # a batch 1 they were measured, minutes at 4000×3000, and dropped.
                    e2e = measure_end_to_end(runner, options.end_to_end_frames) if 1 in batches else None
                    e2e_full = measure_full_frames(runner, full) if full and e2e else None
                    if e2e is None:
                        notes.append(f"{model.name} on {runner.name}: no end-to-end run — it stands beside batch 1, "
                                     f"not among the batches measured ({', '.join(map(str, batches))})")
                    for batch in batches:
                        if progress:
                            progress(f"{model.name} {runner.name} {meta.precision} batch {batch}")
                        lat = measure_latency(runner, batch, options.seconds_per_entry)
                        entry = {"model": str(model), "arch": meta.arch, "backend": runner.name,
                                 "detail": runner.detail, "precision": meta.precision, "batch": batch,
                                 "fps": lat["fps"], "latency_ms": lat["latency_ms"], "runs": lat["runs"],
                                 "stable": lat["stable"], "size": list(meta.input_size), "params": cost["params"],
                                 "flops": cost["flops"], "peak_gflops": peak,
                                 "end_to_end_fps": e2e["end_to_end_fps"] if batch == 1 else None,
                                 "stages": e2e["stages"] if batch == 1 else None,
                                 "end_to_end_frames_ready": e2e["frames_ready"] if batch == 1 else None,
                                 "why_backend": reason}
                        post = (e2e["stages"] or {}).get("post") if batch == 1 else None
                        if post:  # counting (and the run's per-frame bookkeeping) beside inference, per frame, per MP
                            megapixels = meta.input_size[0] * meta.input_size[1] / 1e6
                            entry["post_ms"] = post["mean_ms"]
                            entry["post_ms_per_megapixel"] = round(post["mean_ms"] / megapixels, 2)
                        if e2e_full and batch == 1:
                            entry["end_to_end_4000x3000"] = e2e_full
                        if cost["flops"] and peak:
                            ceiling = peak * 1e9 / cost["flops"]
                            entry["fps_ceiling"] = round(ceiling, 1)
                            entry["fraction_of_peak"] = round(lat["fps"] / ceiling, 3)
                        entry["meets_25fps"] = bool((entry["end_to_end_fps"] or entry["fps"]) >= TARGET_FPS)
                        results.append(entry)
    except KeyboardInterrupt:
        raise BenchInterrupted(report(interrupted=True)) from None
    return report()


def render_markdown(report: dict) -> str:
    lines = [f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores; measured peak "
             f"{report['peak_gflops']} GFLOP/s (float32 MatMul through ONNX Runtime).", ""]
    for model, cost in report["models"].items():
        if cost["flops"]:
            lines.append(f"- {Path(model).name}: {cost['params']:,} parameters, {cost['flops'] / 1e9:.2f} GFLOPs per "
                         f"frame at its input size")
    lines += ["", "(Paper: 7.48 M parameters; its \"3.09M FLOPs\" cannot hold for a VGG16 encoder at 512×512.)", "",
              "| model | backend | precision | batch | FPS (inference) | p50 / p90 / p99 ms | end-to-end FPS | "
              "end-to-end FPS, frames ready | post-processing ms (per MP) | 4000×3000 end-to-end FPS (post ms) | "
              "ceiling FPS | % of peak | ≥ 25 FPS |",
              "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in report["results"]:
        lat = r["latency_ms"]
        peak = f"{100 * r['fraction_of_peak']:.0f} %" if "fraction_of_peak" in r else "—"
        post = f"{r['post_ms']} ({r['post_ms_per_megapixel']})" if "post_ms" in r else "—"
        full = r.get("end_to_end_4000x3000")
        full = f"{full['end_to_end_fps']} ({full['post_ms']})" if full else "—"
        ready = (r.get("end_to_end_frames_ready") or {}).get("end_to_end_fps", "—")
        lines.append(f"| {Path(r['model']).name} ({r['arch']}) | {r['backend']} | {r['precision']} | {r['batch']} | "
                     f"{r['fps']} | {lat['p50']} / {lat['p90']} / {lat['p99']} | {r['end_to_end_fps'] or '—'} | "
                     f"{ready} | {post} | {full} | {r.get('fps_ceiling', '—')} | {peak} | "
                     f"{'yes' if r['meets_25fps'] else 'no'} |")
    lines += [""] + [f"Not measured: {note}" for note in report["not_measured"]]
    if report.get("interrupted"):
        lines.append("Interrupted (Ctrl-C): only the rows measured before it.")
    return "\n".join(lines).rstrip() + "\n"


def render_chart(report: dict, path: Path) -> None:
    """Bars of inference and end-to-end FPS per entry with the 25 FPS line, drawn with OpenCV (no plotting
    library needed on an edge box)."""
    import cv2

    from runtime.io.imageio import write_image

    entries = report["results"]
    width, height, left, bottom = max(480, 150 * len(entries) + 120), 420, 70, 90
    image = np.full((height, width, 3), 255, np.uint8)
    top = max([TARGET_FPS * 1.2] + [max(e["fps"], e["end_to_end_fps"] or 0) for e in entries]) * 1.1
    scale = (height - bottom - 30) / top

    def y(v: float) -> int:
        return int(height - bottom - v * scale)

    cv2.line(image, (left, y(0)), (width - 20, y(0)), (0, 0, 0), 1)
    for i, e in enumerate(entries):
        x = left + 20 + i * 150
        for j, (value, colour) in enumerate(((e["fps"], (200, 120, 40)), (e["end_to_end_fps"], (60, 160, 60)))):
            if value is None:  # end-to-end runs at batch 1 only
                continue
            cv2.rectangle(image, (x + j * 50, y(value)), (x + j * 50 + 44, y(0)), colour, -1)
            cv2.putText(image, f"{value:.0f}", (x + j * 50 + 4, y(value) - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
        label = f"{e['arch']} {e['precision']} b{e['batch']}"
        cv2.putText(image, label, (x - 5, height - bottom + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        cv2.putText(image, e["backend"], (x - 5, height - bottom + 38), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (80, 80, 80), 1)
    cv2.line(image, (left, y(TARGET_FPS)), (width - 20, y(TARGET_FPS)), (0, 0, 220), 2)
    cv2.putText(image, "25 FPS (paper, RTX 2060)", (left + 5, y(TARGET_FPS) - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 220), 1)
    cv2.putText(image, "FPS: blue = inference only, green = end-to-end (csc-run --source demo)", (10, 20),
                cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    write_image(path, image)
