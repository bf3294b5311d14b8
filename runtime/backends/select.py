"""`--backend auto|trt|openvino|ort`: which runner serves a model file, and why."""
from __future__ import annotations

from pathlib import Path

from runtime.backends.base import Runner
from runtime.errors import CscError

BACKENDS = ("auto", "trt", "openvino", "ort")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


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
            raise CscError("--backend trt needs an engine file", path=model,
                           fix=f"build one: csc-export build-engine {model} --out {model.with_suffix('.engine')}")
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

        problem = why_not_runnable(engine)
        if problem is None:
            return TensorRTRunner(engine, cuda_graph=cuda_graph), f"found {engine.name} beside the model, and it runs here"
        why_not = f"{engine.name} exists but {problem}"
    if ort_has_gpu():
        return OnnxRuntimeRunner(model, threads), f"ONNX Runtime on the GPU ({why_not})"
    if openvino_available():
        return OpenVinoRunner(model, threads), f"OpenVINO, the fastest CPU backend installed ({why_not})"
    return OnnxRuntimeRunner(model, threads), f"ONNX Runtime ({why_not}; OpenVINO, faster on a CPU, not installed)"


def ort_has_gpu() -> bool:
    """Whether the installed onnxruntime has the CUDA provider (onnxruntime-gpu): then it, not a CPU backend, runs."""
    import onnxruntime as ort

    from runtime.backends.onnxruntime import GPU_PROVIDERS

    return any(p in ort.get_available_providers() for p in GPU_PROVIDERS)
