"""`--backend auto|trt|openvino|ort`: which runner serves a model file, and why."""
from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from functools import lru_cache
from pathlib import Path
from shlex import quote

import numpy as np

from runtime.backends.base import Runner
from runtime.errors import CscError

BACKENDS = ("auto", "trt", "openvino", "ort")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
# `auto`'s trial of the two CPU backends (`cpu_trial`): frames timed per backend after WARM_UP calls, about 0.2 s
# each for the bundled model here; the trial, OpenVINO's compilation included, adds 1.5–2.2 s to a run's start
# here (ad hoc).
TRIAL_FRAMES = 8  # even: timed in two halves
WARM_UP = 2


def engine_beside(model: Path) -> Path | None:
    """A TensorRT engine next to an ONNX file (same name, an engine suffix), if there is one."""
    return next((model.with_suffix(s) for s in ENGINE_SUFFIXES if model.with_suffix(s).is_file()), None)


def open_runner(model: str | Path, backend: str = "auto", threads: int | None = None,
                cuda_graph: bool = False) -> tuple[Runner, str]:
    """An (inactive) runner for ``model`` and a sentence saying why it was chosen."""
    model = Path(model)
    is_engine = model.suffix.lower() in ENGINE_SUFFIXES
    if backend not in BACKENDS:
        raise CscError(f"unknown backend {backend!r}", fix=f"use {', '.join(BACKENDS)}")
    if backend in ("ort", "openvino") and is_engine:
        raise CscError(f"{'ONNX Runtime' if backend == 'ort' else 'OpenVINO'} cannot run a TensorRT engine", path=model,
                       fix="pass the .onnx file, or --backend trt")
    if is_engine or backend == "trt":
        if not is_engine:
            beside = engine_beside(model)
            raise CscError("--backend trt needs an engine file", path=model,
                           fix=f"pass the one beside it: --model {quote(str(beside))}" if beside else
                           f"build one: csc-export build-engine {quote(str(model))} "
                           f"--out {quote(str(model.with_suffix('.engine')))}")
        from runtime.backends.tensorrt import TensorRTRunner

        return TensorRTRunner(model, cuda_graph=cuda_graph), "a TensorRT engine was given"
    from runtime.backends.onnxruntime import OnnxRuntimeRunner
    from runtime.backends.openvino import OpenVinoRunner, openvino_available

    if backend == "openvino":
        return OpenVinoRunner(model, threads), "OpenVINO (asked for)"
    if backend == "ort":
        return OnnxRuntimeRunner(model, threads), "ONNX Runtime (asked for)"
    engine = engine_beside(model)
    why_not = "no TensorRT engine beside the model"
    if engine is not None:
        from runtime.backends.tensorrt import TensorRTRunner, why_not_runnable

        problem = why_not_runnable(engine, model)
        if problem is None:
            return TensorRTRunner(engine, cuda_graph=cuda_graph), f"found {engine.name} beside the model, and it runs here"
        why_not = f"{engine.name} exists but {problem}"
    if ort_has_gpu():
        return OnnxRuntimeRunner(model, threads), f"ONNX Runtime on the GPU ({why_not})"
    if not openvino_available():
        return OnnxRuntimeRunner(model, threads), f"ONNX Runtime ({why_not}; OpenVINO not installed)"
    rates = cpu_trial(model, threads)
    if "openvino" not in rates:
        return OnnxRuntimeRunner(model, threads), f"ONNX Runtime ({why_not}; OpenVINO {rates['why_not_openvino']})"
    names = {"openvino": "OpenVINO", "ort": "ONNX Runtime"}
    faster, slower = ("openvino", "ort") if rates["openvino"] >= rates["ort"] else ("ort", "openvino")
    kind = OpenVinoRunner if faster == "openvino" else OnnxRuntimeRunner
    return kind(model, threads), (f"{names[faster]}, the faster CPU backend here: {rates[faster]:.0f} FPS against "
                                  f"{names[slower]}'s {rates[slower]:.0f} in a trial of {TRIAL_FRAMES} frames each "
                                  f"({why_not})")


def same_backend(runner: Runner, asked: str) -> str:
    """The ``--backend`` that opens ``runner``'s CPU backend again (``asked`` for any other): a second runner beside
    a live one (`csc-serve`'s uploads) skips `auto`'s trial, which would time the backends on cores the run holds
    and could pick the other one."""
    return {"onnxruntime": "ort", "openvino": "openvino"}.get(runner.name, asked)


def cpu_trial(model: Path, threads: int | None) -> dict:
    """Frames per second of OpenVINO and ONNX Runtime on this model here (``openvino``, ``ort``), or ONNX Runtime's
    and why OpenVINO cannot serve the model (``why_not_openvino``). Neither is the faster CPU backend everywhere:
    OpenVINO ran the bundled model 1.31–1.44× as fast as ONNX Runtime on the VM of issue #24 and
    `bench_cpu_backends.json`, and 0.67× on an AMD EPYC (AVX2) VM (`bench_cpu_backends_epyc.json`). Measured
    once per model file and thread count in a process."""
    stat = model.stat() if model.is_file() else None
    with _TRIAL_LOCK:  # two threads opening runners at once would each time the backends under the other's load
        return dict(_trial(str(model), stat and (stat.st_size, stat.st_mtime_ns), threads))


_TRIAL_LOCK = threading.Lock()


@lru_cache(maxsize=8)
def _trial(model: str, signature: tuple | None, threads: int | None) -> tuple[tuple[str, object], ...]:
    """`cpu_trial`'s measurement; ``signature`` (the file's size and time) only keys the cache, so that a model
    exported again under the same name is measured again."""
    from runtime.backends.onnxruntime import OnnxRuntimeRunner
    from runtime.backends.openvino import OpenVinoRunner

    rates: dict[str, object] = {}
    with ExitStack() as open_runners:
        runners = {"ort": open_runners.enter_context(OnnxRuntimeRunner(model, threads))}
        try:
            openvino = open_runners.enter_context(OpenVinoRunner(model, threads))
            openvino.infer(_grey_frames(openvino))  # a graph it compiles but cannot run fails here, not in the run
            runners["openvino"] = openvino
        except (CscError, RuntimeError) as err:
            rates["why_not_openvino"] = f"cannot serve it: {err.reason if isinstance(err, CscError) else err}"
        frames = {name: _grey_frames(runner) for name, runner in runners.items()}
        seconds = dict.fromkeys(runners, 0.0)
        for name, runner in runners.items():
            for _ in range(WARM_UP):
                runner.infer(frames[name])
        # In two alternating halves: this VM's speed drifts by tens of percent within seconds.
        for _ in range(2):
            for name, runner in runners.items():
                start = time.perf_counter()
                for _ in range(TRIAL_FRAMES // 2):
                    runner.infer(frames[name])
                seconds[name] += time.perf_counter() - start
        for name, runner in runners.items():
            rates[name] = TRIAL_FRAMES * runner.min_batch / seconds[name]
    return tuple(rates.items())


def _grey_frames(runner: Runner) -> np.ndarray:
    """A batch of mid-grey frames of the runner's input: a network's time does not depend on what it sees."""
    return np.full((runner.min_batch, *runner.input_size, 3), 128, np.uint8)


def ort_has_gpu() -> bool:
    """Whether the installed onnxruntime has the CUDA provider (onnxruntime-gpu): then it, not a CPU backend, runs."""
    import onnxruntime as ort

    from runtime.backends.onnxruntime import GPU_PROVIDERS

    return any(p in ort.get_available_providers() for p in GPU_PROVIDERS)
