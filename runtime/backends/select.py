"""`--backend auto|trt|ort`: which runner serves a model file, and why."""
from __future__ import annotations

from pathlib import Path

from runtime.backends.base import Runner
from runtime.errors import CscError

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def open_runner(model: str | Path, backend: str = "auto", threads: int | None = None) -> tuple[Runner, str]:
    """An (inactive) runner for ``model`` and a sentence saying why it was chosen."""
    model = Path(model)
    is_engine = model.suffix.lower() in ENGINE_SUFFIXES
    if backend not in ("auto", "trt", "ort"):
        raise CscError(f"unknown backend {backend!r}", fix="use auto, trt or ort")
    if backend == "ort" and is_engine:
        raise CscError("ONNX Runtime cannot run a TensorRT engine", path=model, fix="pass the .onnx file, or --backend trt")
    if is_engine or backend == "trt":
        if not is_engine:
            raise CscError("--backend trt needs an engine file", path=model,
                           fix=f"build one: csc-export build-engine {model} --out {model.with_suffix('.engine')}")
        from runtime.backends.tensorrt import TensorRTRunner

        return TensorRTRunner(model), "a TensorRT engine was given"
    from runtime.backends.onnxruntime import OnnxRuntimeRunner

    engine = next((model.with_suffix(s) for s in ENGINE_SUFFIXES if model.with_suffix(s).is_file()), None)
    if backend == "auto" and engine is not None:
        try:
            from runtime.gpu import gpu_info, import_tensorrt

            import_tensorrt()
            gpu_info()
            from runtime.backends.tensorrt import TensorRTRunner

            return TensorRTRunner(engine), f"found {engine.name} beside the model and a GPU with TensorRT"
        except CscError as err:
            return OnnxRuntimeRunner(model, threads), f"ONNX Runtime on the CPU ({engine.name} exists but {err.reason})"
    reason = "asked for" if backend == "ort" else "no TensorRT engine beside the model"
    return OnnxRuntimeRunner(model, threads), f"ONNX Runtime ({reason})"
