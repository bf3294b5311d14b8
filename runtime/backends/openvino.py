"""OpenVINO runner: the second CPU backend — for Intel NUCs and industrial PCs beside a microscope — on the same
fused ONNX graph as ONNX Runtime (OpenVINO reads ONNX directly; no conversion step, no second artefact).

Issue #24 measured 94.8–102.7 FPS against ONNX Runtime's 66.2–71.1 on one thread of its VM; on an AMD EPYC VM it
was the slower (0.67×, `benchmarks/results/bench_cpu_backends_epyc.json`), so `--backend auto` times both
(`runtime.backends.select.cpu_trial`); `csc-bench` measures both in one run. Only fused graphs (uint8 frames in, class map out) are served: an unfused export needs
the host-side pre- and post-processing that the ONNX Runtime runner keeps for it.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from runtime.backends.base import Runner
from runtime.errors import CscError
from runtime.backends.model_meta import ModelMetadata, load_onnx

INSTALL = "pip install 'auto-csc[openvino]' (or --backend ort)"


def openvino_available() -> bool:
    """Whether the openvino package is installed here (`--backend auto` then times it against ONNX Runtime)."""
    return importlib.util.find_spec("openvino") is not None


class OpenVinoRunner(Runner):
    name = "openvino"

    def __init__(self, model: str | Path, threads: int | None = None):
        super().__init__()
        self.model = Path(model)
        # As for ONNX Runtime: all cores but one, left to the pipeline's capture and counting threads.
        self.threads = threads or max(1, (os.cpu_count() or 2) - 1)
        self._request = None

    def activate(self) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise CscError("OpenVINO is not installed", fix=INSTALL) from None
        if not self.model.is_file():
            raise CscError("model file not found", path=self.model, fix="pass --model PATH to an exported .onnx file")
        props = {p.key: p.value for p in load_onnx(self.model, external_data=False).metadata_props}
        self.metadata = ModelMetadata.from_props(props, str(self.model))
        if not self.metadata.fused:
            raise CscError("OpenVINO serves fused exports only (uint8 frames in, class map out)", path=self.model,
                           fix="re-export without --no-fuse, or use --backend ort")
        if self.metadata.note:
            self.notes.append(self.metadata.note)
        try:
            compiled = ov.Core().compile_model(str(self.model), "CPU", {"INFERENCE_NUM_THREADS": self.threads,
                                                                       "PERFORMANCE_HINT": "LATENCY"})
        except RuntimeError as err:
            raise CscError(f"OpenVINO cannot load the model: {str(err).strip().splitlines()[0]}", path=self.model,
                           fix="re-export it with `csc-export onnx`, or use --backend ort") from None
        self._request = compiled.create_infer_request()
        self._output = compiled.output(0)
        self.detail = f"OpenVINO {ov.__version__} CPU, {self.threads} threads, {self.metadata.precision}"
        self.host_threads = self.threads

    def deactivate(self) -> None:
        self._request = None
        self.host_threads = 0

    def infer(self, frames: np.ndarray) -> np.ndarray:
        self.check_frames(frames)
        return self.in_batches(frames, self._run)

    def _run(self, frames: np.ndarray) -> np.ndarray:
        # The request's output tensor is reused by the next call: copy it out.
        return np.array(self._request.infer({0: frames})[self._output], copy=True)
