"""TensorRT runner: engine checked against its sidecar, then `execute_async_v3` on CUDA streams.

Device memory, pinned host buffers and streams come from NVIDIA's cuda-python (``cuda.bindings.runtime``) and are
allocated once per slot. Two slots, each with its own stream, execution context and buffers, keep two frames in
flight: while one slot's copies and kernels run, the pipeline post-processes the other's result. Optionally the
enqueue (H2D copy, kernels, D2H copy) is captured once as a CUDA graph and replayed.

Not run in this project's CI (no GPU there); its API use is checked against the TensorRT bindings that do install.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends.base import Runner
from runtime.engine_sidecar import EngineSidecar
from runtime.errors import CscError
from runtime.model_meta import ModelMetadata

from runtime.gpu import cudart as _cudart
from runtime.gpu import gpu_info, import_tensorrt


def _ok(result: Any, what: str) -> Any:
    """cuda-python returns (error, *values): raise on error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise CscError(f"CUDA {what} failed: {getattr(err, 'name', err)}", fix="check the GPU driver and free memory")
    return values[0] if len(values) == 1 else (values or None)


@dataclass
class _Slot:
    context: Any
    stream: int
    host_in: np.ndarray
    host_out: np.ndarray
    dev_in: int
    dev_out: int
    host_in_ptr: int
    host_out_ptr: int
    n: int = 0
    graph_exec: Any = None
    graph_batch: int = 0


class TensorRTRunner(Runner):
    name = "tensorrt"

    def __init__(self, engine: str | Path, slots: int = 2, cuda_graph: bool = False):
        super().__init__()
        self.engine_path = Path(engine)
        self.n_slots = slots
        self.cuda_graph = cuda_graph
        self._slots: list[_Slot] = []
        self._next = 0

    def activate(self) -> None:
        trt = import_tensorrt()
        if not self.engine_path.is_file():
            raise CscError("engine file not found", path=self.engine_path,
                           fix="build one with `csc-export build-engine MODEL.onnx --out ENGINE`")
        sidecar = EngineSidecar.read(self.engine_path)
        gpu_name, capability = gpu_info()
        sidecar.check_matches(self.engine_path, str(trt.__version__), gpu_name, capability)
        self.metadata = ModelMetadata(**{**sidecar.model, "input_size": tuple(sidecar.model["input_size"])})
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(logger)
        engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if engine is None:
            raise CscError("TensorRT could not deserialise the engine (truncated, or from another version)",
                           path=self.engine_path, fix=f"rebuild it: {sidecar.rebuild_command(self.engine_path)}")
        self._engine = engine  # execution contexts need their engine alive
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._input, self._output = inputs[0], outputs[0]
        shape = tuple(engine.get_tensor_shape(self._input))
        self._dynamic = shape[0] < 0
        self._max_batch = (tuple(engine.get_tensor_profile_shape(self._input, 0)[2])[0] if self._dynamic else shape[0])
        h, w = self.metadata.input_size
        self._slots = [self._make_slot(engine, h, w) for _ in range(self.n_slots)]
        self.detail = f"TensorRT {trt.__version__} on {gpu_name} (sm {capability}), {self.metadata.precision}, " \
                      f"{self.n_slots} streams{', CUDA graphs' if self.cuda_graph else ''}"

    def _make_slot(self, engine, h: int, w: int) -> _Slot:
        cudart = _cudart()
        n = self._max_batch
        in_bytes, out_bytes = n * h * w * 3, n * h * w
        host_in_ptr = _ok(cudart.cudaMallocHost(in_bytes), "pinned allocation")
        host_out_ptr = _ok(cudart.cudaMallocHost(out_bytes), "pinned allocation")
        host_in = np.ctypeslib.as_array((ctypes.c_uint8 * in_bytes).from_address(host_in_ptr)).reshape(n, h, w, 3)
        host_out = np.ctypeslib.as_array((ctypes.c_uint8 * out_bytes).from_address(host_out_ptr)).reshape(n, h, w)
        dev_in = _ok(cudart.cudaMalloc(in_bytes), "device allocation")
        dev_out = _ok(cudart.cudaMalloc(out_bytes), "device allocation")
        stream = _ok(cudart.cudaStreamCreate(), "stream creation")
        context = engine.create_execution_context()
        context.set_tensor_address(self._input, int(dev_in))
        context.set_tensor_address(self._output, int(dev_out))
        return _Slot(context, stream, host_in, host_out, dev_in, dev_out, host_in_ptr, host_out_ptr)

    def deactivate(self) -> None:
        cudart = _cudart() if self._slots else None
        for slot in self._slots:
            if slot.graph_exec is not None:
                cudart.cudaGraphExecDestroy(slot.graph_exec)
            cudart.cudaStreamDestroy(slot.stream)
            for ptr in (slot.dev_in, slot.dev_out):
                cudart.cudaFree(ptr)
            for ptr in (slot.host_in_ptr, slot.host_out_ptr):
                cudart.cudaFreeHost(ptr)
        self._slots = []

    def infer(self, frames: np.ndarray) -> np.ndarray:
        return self.collect(self.submit(frames))

    def submit(self, frames: np.ndarray) -> _Slot:
        self.check_frames(frames)
        limit = self._max_batch
        if len(frames) > limit:
            raise CscError(f"batch of {len(frames)} exceeds the engine's maximum {limit}",
                           fix="rebuild the engine with a larger --max-batch")
        cudart = _cudart()
        slot = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        n = len(frames)
        slot.n = n
        np.copyto(slot.host_in[:n], frames)
        if self.cuda_graph and slot.graph_exec is not None and slot.graph_batch == n:
            _ok(cudart.cudaGraphLaunch(slot.graph_exec, slot.stream), "graph launch")
            return slot
        if self._dynamic:
            slot.context.set_input_shape(self._input, (n, *frames.shape[1:]))
        if self.cuda_graph:
            _ok(cudart.cudaStreamBeginCapture(slot.stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal),
                "stream capture")
        self._enqueue(cudart, slot, n)
        if self.cuda_graph:
            graph = _ok(cudart.cudaStreamEndCapture(slot.stream), "end capture")
            if slot.graph_exec is not None:
                cudart.cudaGraphExecDestroy(slot.graph_exec)
            slot.graph_exec = _ok(cudart.cudaGraphInstantiate(graph, 0), "graph instantiate")
            slot.graph_batch = n
            cudart.cudaGraphDestroy(graph)
            _ok(cudart.cudaGraphLaunch(slot.graph_exec, slot.stream), "graph launch")
        return slot

    def collect(self, slot: _Slot) -> np.ndarray:
        _ok(_cudart().cudaStreamSynchronize(slot.stream), "stream synchronize")
        return slot.host_out[: slot.n].copy()

    def _enqueue(self, cudart, slot: _Slot, n: int) -> None:
        kind = cudart.cudaMemcpyKind
        nbytes_in = n * slot.host_in[0].nbytes
        nbytes_out = n * slot.host_out[0].nbytes
        _ok(cudart.cudaMemcpyAsync(slot.dev_in, slot.host_in_ptr, nbytes_in, kind.cudaMemcpyHostToDevice, slot.stream), "H2D copy")
        if not slot.context.execute_async_v3(slot.stream):
            raise CscError("TensorRT execute_async_v3 failed", path=self.engine_path)
        _ok(cudart.cudaMemcpyAsync(slot.host_out_ptr, slot.dev_out, nbytes_out, kind.cudaMemcpyDeviceToHost, slot.stream), "D2H copy")
