"""The TensorRT runner's own logic (sidecar check, buffers, slots, dynamic shapes, copies) against stand-ins for
TensorRT and the CUDA runtime. The stand-ins follow the real APIs' signatures (checked against the installed
bindings in tests/export/test_tensorrt.py); real engines need an NVIDIA GPU with TensorRT, which no machine of this
project has, so nothing here claims a TensorRT result."""
import ctypes
from types import SimpleNamespace

import numpy as np
import pytest

import runtime.backends.tensorrt as trt_backend
from runtime.engine_sidecar import EngineSidecar
from runtime.errors import CscError

MODES = SimpleNamespace(INPUT="input", OUTPUT="output")


class FakeCudart:
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    cudaStreamCaptureMode = SimpleNamespace(cudaStreamCaptureModeGlobal=0)

    def __init__(self):
        self.buffers, self.copies, self.freed = {}, [], 0

    def _alloc(self, n):
        buf = np.zeros(n, np.uint8)
        self.buffers[buf.ctypes.data] = buf
        return 0, buf.ctypes.data

    cudaMallocHost = cudaMalloc = _alloc

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        ctypes.memmove(dst, src, n)
        self.copies.append(kind)
        return (0,)

    def cudaStreamCreate(self):
        return 0, 7

    def cudaStreamSynchronize(self, stream):
        return (0,)

    def cudaFree(self, ptr):
        self.freed += 1
        return (0,)

    cudaFreeHost = cudaFree

    def cudaStreamDestroy(self, stream):
        return (0,)


class FakeContext:
    def __init__(self, engine):
        self.engine, self.addresses, self.shape = engine, {}, None

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr

    def set_input_shape(self, name, shape):
        self.shape = shape
        return True

    def execute_async_v3(self, stream):
        n, h, w, _ = self.shape or self.engine.static
        src = np.ctypeslib.as_array((ctypes.c_uint8 * (n * h * w * 3)).from_address(self.addresses["frames"]))
        dst = np.ctypeslib.as_array((ctypes.c_uint8 * (n * h * w)).from_address(self.addresses["class_map"]))
        dst[:] = (src.reshape(n, h, w, 3)[..., 0] < 100).ravel()  # a stand-in "model"
        return True


class FakeEngine:
    def __init__(self, dynamic=True):
        self.num_io_tensors = 2
        self.static = (2, 32, 32, 3)
        self.dynamic = dynamic

    def get_tensor_name(self, i):
        return ["frames", "class_map"][i]

    def get_tensor_mode(self, name):
        return MODES.INPUT if name == "frames" else MODES.OUTPUT

    def get_tensor_shape(self, name):
        return (-1, 32, 32, 3) if self.dynamic else self.static

    def get_tensor_profile_shape(self, name, profile):
        return [(1, 32, 32, 3), (4, 32, 32, 3), (4, 32, 32, 3)]

    def create_execution_context(self):
        return FakeContext(self)


def fake_trt(dynamic=True):
    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return None if data == b"truncated" else FakeEngine(dynamic)

    class Logger:
        WARNING = 2

        def __init__(self, level):
            self.level = level

    return SimpleNamespace(__version__="10.3.0", Logger=Logger, Runtime=Runtime, TensorIOMode=MODES)


@pytest.fixture
def engine(tmp_path, monkeypatch):
    cudart = FakeCudart()
    monkeypatch.setattr(trt_backend, "_cudart", lambda: cudart)
    monkeypatch.setattr(trt_backend, "gpu_info", lambda: ("Orin", "8.7"))
    path = tmp_path / "model.engine"
    path.write_bytes(b"plan")
    EngineSidecar(tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7", precision="fp16", profiles={},
                  onnx_file="model.onnx", onnx_sha256="0" * 64,
                  model={"classes": ["background", "rbc", "macrophage"], "input_size": [32, 32], "arch": "light-unet",
                         "batch": "dynamic", "precision": "fp16"}).write(path)
    return path, cudart


def frames(n, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)


def test_infer_moves_bytes_through_pinned_and_device_buffers(engine, monkeypatch):
    path, cudart = engine
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda: fake_trt())
    with trt_backend.TensorRTRunner(path) as runner:
        x = frames(3)
        out = runner.infer(x)
        assert np.array_equal(out, (x[..., 0] < 100).astype(np.uint8)) and out.shape == (3, 32, 32)
        assert cudart.copies == [1, 2], "one host-to-device and one device-to-host copy per batch"
        assert "Orin" in runner.detail and runner.metadata.precision == "fp16"
    assert cudart.freed == 8, "2 slots × (2 device + 2 pinned buffers) released"


def test_two_frames_in_flight_come_back_in_order(engine, monkeypatch):
    path, _ = engine
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda: fake_trt())
    with trt_backend.TensorRTRunner(path, slots=2) as runner:
        a, b = frames(1, 1), frames(2, 2)
        ha, hb = runner.submit(a), runner.submit(b)
        assert ha is not hb
        assert np.array_equal(runner.collect(ha), a[..., 0] < 100)
        assert np.array_equal(runner.collect(hb), b[..., 0] < 100)
        with pytest.raises(CscError, match="exceeds the engine's maximum 4"):
            runner.submit(frames(5))


def test_static_engine_needs_no_input_shape(engine, monkeypatch):
    path, _ = engine
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda: fake_trt(dynamic=False))
    with trt_backend.TensorRTRunner(path) as runner:
        assert runner._max_batch == 2 and runner.infer(frames(2)).shape == (2, 32, 32)


def test_truncated_engine_and_foreign_gpu(engine, monkeypatch):
    path, _ = engine
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda: fake_trt())
    path.write_bytes(b"truncated")
    with pytest.raises(CscError, match="could not deserialise.*csc-export build-engine model.onnx"):
        trt_backend.TensorRTRunner(path).activate()
    monkeypatch.setattr(trt_backend, "gpu_info", lambda: ("NVIDIA GeForce RTX 4090", "8.9"))
    with pytest.raises(CscError, match="built for Orin"):
        trt_backend.TensorRTRunner(path).activate()
