"""ONNX Runtime runner: the embedded default that works on any machine (CPU), and on an NVIDIA GPU through the CUDA
execution provider when the installed package is onnxruntime-gpu."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from runtime.backends.base import Runner
from runtime.errors import CscError
from runtime.backends.model_meta import ModelMetadata


# The GPU provider tried first when present (onnxruntime-gpu). The TensorRT provider is left out on purpose: it
# builds its own engines at session start (minutes); `csc-export build-engine` and the TensorRT runner do that once.
GPU_PROVIDERS = ("CUDAExecutionProvider",)


def choose_providers(available: list[str], requested: list[str] | None = None) -> list[str]:
    """The execution providers to ask for, best first, CPU always last as the fallback: ``requested`` ones that are
    available, or by default the CUDA provider when the installed onnxruntime has it."""
    wanted = requested if requested is not None else list(GPU_PROVIDERS)
    return [p for p in wanted if p in available and p != "CPUExecutionProvider"] + ["CPUExecutionProvider"]


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"

    def __init__(self, model: str | Path, threads: int | None = None, providers: list[str] | None = None):
        super().__init__()
        self.model = Path(model)
        # Default: all cores but one, which is left to the capture and counting threads of the pipeline.
        self.threads = threads or max(1, (os.cpu_count() or 2) - 1)
        self.requested = providers  # None: choose_providers() decides
        self.session = None

    def activate(self) -> None:
        import onnxruntime as ort

        if not self.model.is_file():
            raise CscError("model file not found", path=self.model, fix="pass --model PATH to an exported .onnx file")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = choose_providers(ort.get_available_providers(), self.requested)
        try:
            self.session = ort.InferenceSession(str(self.model), options, providers=providers)
        except Exception as err:  # ORT raises its own Fail/InvalidGraph types
            raise CscError(f"ONNX Runtime cannot load the model: {str(err).splitlines()[0]}", path=self.model,
                           fix="re-export it with `csc-export onnx`") from None
        self.metadata = ModelMetadata.from_props(self.session.get_modelmeta().custom_metadata_map, str(self.model))
        if self.metadata.note:
            self.notes.append(self.metadata.note)
        self._input = self.session.get_inputs()[0].name
        self._outputs = [o.name for o in self.session.get_outputs()]
        self.detail = f"{', '.join(self.session.get_providers())}, {self.threads} threads, {self.metadata.precision}"
        self.host_threads = self.threads if self.session.get_providers()[0] == "CPUExecutionProvider" else 0

    def deactivate(self) -> None:
        self.session = None
        self.host_threads = 0

    def infer(self, frames: np.ndarray) -> np.ndarray:
        self.check_frames(frames)
        return self.in_batches(frames, self._run)

    def _run(self, frames: np.ndarray) -> np.ndarray:
        meta = self.metadata
        if meta.fused:
            return self.session.run(self._outputs[:1], {self._input: frames})[0]
        # An unfused (`--no-fuse`) graph: the host does what the fused graph would.
        rgb = frames[..., ::-1].astype(np.float32) / 255.0
        x = ((rgb - np.asarray(meta.normalisation["mean_rgb"], np.float32)) /
             np.asarray(meta.normalisation["std_rgb"], np.float32)).transpose(0, 3, 1, 2)
        logits = self.session.run(self._outputs[:1], {self._input: np.ascontiguousarray(x)})[0]
        return logits.argmax(1).astype(np.uint8)
