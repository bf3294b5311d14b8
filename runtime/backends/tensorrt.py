"""TensorRT runner (full TensorRT or TensorRT-RTX, as the engine's sidecar says): the engine is checked against its
sidecar and this GPU, then read like Polygraphy's TrtRunner reads it — every input and output bound by name with
the dtype and shape the engine declares, the batch range taken from the engine's profile — and run with
``execute_async_v3`` on CUDA streams.

Device memory, pinned host buffers and streams come from NVIDIA's cuda-python (``cuda.bindings.runtime``) and are
allocated once per slot. Two slots, each with its own stream, execution context and buffers, keep two batches in
flight: while one slot's copies and kernels run, the pipeline post-processes the other's result. A third submit
before a collect is refused (it would overwrite a batch in flight). Optionally (``csc-run --cuda-graph``) the
enqueue (H2D copy, kernels, D2H copy) is captured once per batch size as a CUDA graph and replayed.

Where it ran: the unit tests (tests/runtime/backends/test_tensorrt_runner.py) drive this code against stand-ins of the
engine and CUDA API, and deserialisation against the real TensorRT-RTX library; no engine has been executed by
this project's CI, which has no GPU.
"""
from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from runtime.backends.base import Runner
from runtime.backends.engine_sidecar import EngineSidecar
from runtime.errors import CscError
from runtime.backends.cuda import cuda_error, gpu_info, import_tensorrt, tensorrt_logger
from runtime.backends.cuda import cudart as _cudart

# TensorRT-RTX's EngineInvalidityDiagnostics bits, as sentences for the user.
_DIAGNOSTICS = {
    "VERSION_MISMATCH": "it was built by another TensorRT-RTX version",
    "UNSUPPORTED_CC": "this GPU's compute capability is not one the engine was built for",
    "OLD_CUDA_DRIVER": "the NVIDIA driver is too old for this TensorRT-RTX",
    "OLD_CUDA_RUNTIME": "the CUDA runtime is too old for this TensorRT-RTX",
    "INSUFFICIENT_GPU_MEMORY": "the GPU has too little free memory for it",
    "MALFORMED_ENGINE": "the file is not a whole engine (truncated, or not an engine)",
    "CUDA_ERROR": "CUDA reported an error while checking it",
}


def _ok(result: Any, what: str) -> Any:
    """cuda-python returns (error, *values): raise on error (naming the cause), return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise cuda_error(_cudart(), err, f"CUDA {what}")
    return values[0] if len(values) == 1 else (values or None)


def check_runs_here(engine: str | Path, sidecar: EngineSidecar) -> tuple[ModuleType, str, str]:
    """(TensorRT module of the engine's flavour, GPU name, compute capability), after checking that this machine can run the engine (flavour
    installed, a GPU, version and compute capability as the sidecar requires); a CscError naming the cause, and the
    engine (among several models, "no NVIDIA GPU found" alone did not say which one could not run)."""
    try:
        trt = import_tensorrt(sidecar.flavour)
        gpu_name, capability = gpu_info()
    except CscError as err:
        raise CscError(err.reason, path=engine, fix=err.fix) from None
    sidecar.check_matches(engine, str(trt.__version__), gpu_name, capability)
    return trt, gpu_name, capability


def why_not_runnable(engine: str | Path, onnx: str | Path | None = None) -> str | None:
    """Why this machine cannot run ``engine`` (one line), or None when it can; for the post-build guard. With
    ``onnx`` (the file `auto` would run the engine in place of), also why the engine is not that model's: one built
    before the file was exported again under the same name would count with the old model, silently."""
    try:
        sidecar = EngineSidecar.read(engine)
        check_runs_here(engine, sidecar)
    except CscError as err:
        return err.reason
    if onnx is not None and not sidecar.built_from(onnx):
        return (f"it was built from an earlier {Path(onnx).name} (the file changed since): rebuild it with "
                f"{sidecar.rebuild_command(engine)}")
    return None


def deserialise_failure(trt: ModuleType, runtime: Any, data: bytes, logger: Any) -> str:
    """Why deserialisation failed, from TensorRT-RTX's validity diagnostics (where the flavour has them) and the
    errors it logged, e.g. the list of compute capabilities an engine supports."""
    causes = []
    if hasattr(runtime, "get_engine_validity"):
        _, bits = runtime.get_engine_validity(data)
        causes = [text for name, text in _DIAGNOSTICS.items()
                  if int(bits) & int(getattr(trt.EngineInvalidityDiagnostics, name, 0))]
    return "; ".join(causes + logger.errors()[-2:]) or "no reason given"


@dataclass
class _Slot:
    context: Any
    stream: Any
    host_in: np.ndarray
    host_out: np.ndarray
    dev_in: int
    dev_out: int
    host_in_ptr: int
    host_out_ptr: int
    n: int = 0  # frames of the batch in flight
    run: int = 0  # batch enqueued (n padded up to the profile's minimum)
    shape_batch: int = 0  # batch the context's input shape is set for (and the CUDA graph captured at)
    graph_exec: Any = None
    in_flight: bool = False


class TensorRTRunner(Runner):
    name = "tensorrt"

    def __init__(self, engine: str | Path, slots: int = 2, cuda_graph: bool = False):
        super().__init__()
        self.engine_path = Path(engine)
        self.n_slots = slots
        self.cuda_graph = cuda_graph
        self._slots: list[_Slot] = []
        self._next = 0
        self._min = self._max = 0

    def activate(self) -> None:
        if not self.engine_path.is_file():
            raise CscError("engine file not found", path=self.engine_path,
                           fix="build one with `csc-export build-engine MODEL.onnx --out ENGINE`")
        sidecar = EngineSidecar.read(self.engine_path)
        self.metadata = sidecar.metadata(self.engine_path)
        trt, gpu_name, capability = check_runs_here(self.engine_path, sidecar)
        logger = tensorrt_logger(trt)
        self._runtime = trt.Runtime(logger)
        data = self.engine_path.read_bytes()
        engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise CscError(f"{sidecar.label} could not deserialise the engine: "
                           f"{deserialise_failure(trt, self._runtime, data, logger)}",
                           path=self.engine_path, fix=f"rebuild it: {sidecar.rebuild_command(self.engine_path)}")
        self._engine = engine  # execution contexts need their engine alive
        self._read_io(trt, engine)
        try:
            for _ in range(self.n_slots):
                self._slots.append(self._make_slot(engine))
        except BaseException:  # the runner is not entered: free the slots made before the failure here
            self.deactivate()
            raise
        self.detail = (f"{sidecar.label} {trt.__version__} on {gpu_name} (sm {capability}), {self.metadata.precision}, "
                       f"batch {self._min}–{self._max}, {self.n_slots} streams"
                       f"{', CUDA graphs' if self.cuda_graph else ''}")
        if sidecar.ignored_keys or self.metadata.ignored_keys:
            self.notes.append(f"sidecar keys from a newer exporter ignored: "
                              f"{', '.join(sidecar.ignored_keys + self.metadata.ignored_keys)}")

    def _read_io(self, trt: ModuleType, engine: Any) -> None:
        """Inputs and outputs as the engine declares them; anything but one uint8 NHWC-BGR input and one uint8 class
        map of the same height and width is refused (our buffers would not fit it)."""
        io = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            io[name] = (engine.get_tensor_mode(name), np.dtype(trt.nptype(engine.get_tensor_dtype(name))),
                        tuple(engine.get_tensor_shape(name)))
        inputs = [n for n, (mode, _, _) in io.items() if mode == trt.TensorIOMode.INPUT]
        outputs = [n for n, (mode, _, _) in io.items() if mode == trt.TensorIOMode.OUTPUT]
        described = "; ".join(f"{'in' if n in inputs else 'out'} {n} {dt} {list(shape)}" for n, (_, dt, shape) in io.items())
        fix = "build the engine from a fused export: `csc-export onnx CKPT --out FILE` (no --no-fuse, no --probabilities)"
        if len(outputs) != 1:
            raise CscError(f"engine has {len(outputs)} outputs ({', '.join(outputs)}); the runtime reads one class map",
                           path=self.engine_path, fix=fix)
        if len(inputs) != 1:
            raise CscError(f"engine has {len(inputs)} inputs; the runtime feeds one batch of frames", path=self.engine_path, fix=fix)
        (name_in,), (name_out,) = inputs, outputs
        _, dt_in, shape_in = io[name_in]
        _, dt_out, shape_out = io[name_out]
        fused = (dt_in == np.uint8 and dt_out == np.uint8 and len(shape_in) == 4 and shape_in[3] == 3
                 and len(shape_out) == 3 and shape_in[1:3] == shape_out[1:3] and min(shape_in[1:]) > 0)
        if not fused:
            raise CscError(f"engine is not a fused uint8 → class-map engine ({described})", path=self.engine_path, fix=fix)
        if shape_in[1:3] != tuple(self.metadata.input_size):
            raise CscError(f"engine takes {shape_in[1]}×{shape_in[2]} frames but its sidecar says "
                           f"{self.metadata.input_size[0]}×{self.metadata.input_size[1]}", path=self.engine_path,
                           fix="rebuild the engine: its sidecar belongs to another model")
        self._input, self._output = name_in, name_out
        self._frame_shape, self._map_shape = shape_in[1:], shape_out[1:]
        self._dynamic = shape_in[0] < 0
        if self._dynamic:
            lo, _, hi = (tuple(s) for s in engine.get_tensor_profile_shape(name_in, 0))
            self._min, self._max = lo[0], hi[0]
        else:
            self._min = self._max = shape_in[0]

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self._frame_shape[:2]) if self._max else super().input_size

    @property
    def max_batch(self) -> int:
        """The engine's largest batch (its profile's maximum, or its static batch): tiling and csc-bench use it."""
        return self._max

    @property
    def min_batch(self) -> int:
        """The engine's smallest batch; smaller batches are padded up to it."""
        return self._min

    def _make_slot(self, engine: Any) -> _Slot:
        """One stream's buffers and context. Each allocation registers its release as it is made, so a failure part
        of the way (out of device memory on the second buffer) frees the ones before it instead of leaking them."""
        cudart = _cudart()
        n = self._max
        in_bytes, out_bytes = n * int(np.prod(self._frame_shape)), n * int(np.prod(self._map_shape))
        with contextlib.ExitStack() as undo:
            def made(ptr: Any, free: Callable[[Any], Any]) -> Any:
                undo.callback(free, ptr)
                return ptr

            host_in_ptr = made(_ok(cudart.cudaMallocHost(in_bytes), "pinned allocation"), cudart.cudaFreeHost)
            host_out_ptr = made(_ok(cudart.cudaMallocHost(out_bytes), "pinned allocation"), cudart.cudaFreeHost)
            dev_in = made(_ok(cudart.cudaMalloc(in_bytes), "device allocation"), cudart.cudaFree)
            dev_out = made(_ok(cudart.cudaMalloc(out_bytes), "device allocation"), cudart.cudaFree)
            stream = made(_ok(cudart.cudaStreamCreate(), "stream creation"), cudart.cudaStreamDestroy)
            context = engine.create_execution_context()
            if context is None:
                raise CscError("TensorRT could not create an execution context (out of device memory?)",
                               path=self.engine_path, fix="free GPU memory, or run with fewer streams")
            for name, ptr in ((self._input, dev_in), (self._output, dev_out)):
                if not context.set_tensor_address(name, int(ptr)):
                    raise CscError(f"TensorRT refused the address of tensor {name}", path=self.engine_path)
            undo.pop_all()  # every resource now belongs to the slot; deactivate frees it
        host_in = np.ctypeslib.as_array((ctypes.c_uint8 * in_bytes).from_address(int(host_in_ptr))).reshape(n, *self._frame_shape)
        host_out = np.ctypeslib.as_array((ctypes.c_uint8 * out_bytes).from_address(int(host_out_ptr))).reshape(n, *self._map_shape)
        return _Slot(context, stream, host_in, host_out, dev_in, dev_out, host_in_ptr, host_out_ptr)

    def deactivate(self) -> None:
        cudart = _cudart() if self._slots else None
        for slot in self._slots:
            if slot.graph_exec is not None:
                cudart.cudaGraphExecDestroy(slot.graph_exec)
            cudart.cudaStreamSynchronize(slot.stream)
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
        n = len(frames)
        if n > self._max:
            raise CscError(f"batch of {n} exceeds the engine's maximum {self._max}",
                           fix="send smaller batches, or rebuild the engine with a larger --max-batch")
        slot = self._slots[self._next]
        if slot.in_flight:
            raise CscError(f"{len(self._slots)} batches are in flight already: collect one before submitting another "
                           "(a new batch would overwrite one in flight)")
        self._next = (self._next + 1) % len(self._slots)
        run = max(n, self._min)
        np.copyto(slot.host_in[:n], frames)
        slot.host_in[n:run] = 0
        slot.n, slot.run, slot.in_flight = n, run, True
        try:
            self._launch(_cudart(), slot)
        except BaseException:
            slot.in_flight = False
            raise
        return slot

    def collect(self, slot: _Slot) -> np.ndarray:
        if not slot.in_flight:
            raise CscError("this batch was collected already, or never submitted")
        try:
            _ok(_cudart().cudaStreamSynchronize(slot.stream), "stream synchronize")
        finally:
            slot.in_flight = False
        return slot.host_out[: slot.n].copy()

    def _launch(self, cudart: ModuleType, slot: _Slot) -> None:
        if slot.shape_batch != slot.run:
            if self._dynamic and not slot.context.set_input_shape(self._input, (slot.run, *self._frame_shape)):
                raise CscError(f"TensorRT refused input shape {(slot.run, *self._frame_shape)} "
                               f"(the engine's profile takes batches {self._min}–{self._max})", path=self.engine_path)
            slot.shape_batch = slot.run
            # An ordinary enqueue first after a shape change: TensorRT does its shape-dependent set-up there, which
            # must not end up in a captured graph. It also computes this batch.
            self._enqueue(cudart, slot)
            if self.cuda_graph:
                self._capture(cudart, slot)
        elif slot.graph_exec is not None:
            _ok(cudart.cudaGraphLaunch(slot.graph_exec, slot.stream), "graph launch")
        else:
            self._enqueue(cudart, slot)

    def _capture(self, cudart: ModuleType, slot: _Slot) -> None:
        """Record the slot's enqueue as a CUDA graph for its batch size. The capture is always ended, also when the
        enqueue fails inside it (a stream left capturing fails every later call); on failure the runner goes on
        without graphs and says so in ``notes``."""
        if slot.graph_exec is not None:
            cudart.cudaGraphExecDestroy(slot.graph_exec)
            slot.graph_exec = None
        _ok(cudart.cudaStreamSynchronize(slot.stream), "stream synchronize")
        _ok(cudart.cudaStreamBeginCapture(slot.stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
            "stream capture")
        failure = None
        try:
            self._enqueue(cudart, slot)
        except CscError as err:
            failure = err.reason
        err, graph = cudart.cudaStreamEndCapture(slot.stream)
        captured = int(err) == 0
        if failure is None and not captured:
            failure = f"end of capture: {getattr(err, 'name', err)}"
        if failure is None:
            err, graph_exec = cudart.cudaGraphInstantiate(graph, 0)
            if int(err) == 0:
                slot.graph_exec = graph_exec
            else:
                failure = f"graph instantiation: {getattr(err, 'name', err)}"
        if captured and graph is not None:
            cudart.cudaGraphDestroy(graph)  # the instantiated graph keeps what it needs
        if failure is not None:
            self.cuda_graph = False
            self.notes.append(f"CUDA graph capture failed ({failure}); running without CUDA graphs")

    def _enqueue(self, cudart: ModuleType, slot: _Slot) -> None:
        kind = cudart.cudaMemcpyKind
        nbytes_in = slot.run * slot.host_in[0].nbytes
        nbytes_out = slot.run * slot.host_out[0].nbytes
        _ok(cudart.cudaMemcpyAsync(slot.dev_in, slot.host_in_ptr, nbytes_in, kind.cudaMemcpyHostToDevice, slot.stream), "H2D copy")
        if not slot.context.execute_async_v3(int(slot.stream)):
            raise CscError("TensorRT execute_async_v3 failed", path=self.engine_path)
        _ok(cudart.cudaMemcpyAsync(slot.host_out_ptr, slot.dev_out, nbytes_out, kind.cudaMemcpyDeviceToHost, slot.stream), "D2H copy")
