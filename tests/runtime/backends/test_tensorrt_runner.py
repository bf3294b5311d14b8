"""The TensorRT runner's own logic against stand-ins of the engine and the CUDA runtime: binding by name with the
engine's dtypes and shapes, refusal of engines that are not fused uint8 → class map, the in-flight guard, the batch
range read from the engine (and used by tiling), CUDA-graph capture, and the errors that name the real cause.

Running a real engine needs an RTX GPU (TensorRT-RTX) or full TensorRT with its GPU; the stand-ins follow the real
APIs (their names are checked against the installed TensorRT-RTX and cuda-python bindings in
tests/export/test_tensorrt.py), and nothing here claims a TensorRT result.
"""
import ctypes
from types import SimpleNamespace

import numpy as np
import pytest

import runtime.backends.tensorrt as trt_backend
from runtime.backends.engine_sidecar import RTX_DEFAULT_TARGETS, EngineSidecar
from runtime.errors import CscError

MODES = SimpleNamespace(INPUT="input", OUTPUT="output")
DTYPES = SimpleNamespace(UINT8="uint8", FLOAT="float32", HALF="float16")


class FakeCudart:
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    cudaStreamCaptureMode = SimpleNamespace(cudaStreamCaptureModeThreadLocal=2)

    def __init__(self):
        self.buffers, self.calls, self.freed = {}, [], 0
        self.capturing = False
        self.fail_in_capture = False
        self.recorded = []  # the work of the last capture, replayed by a graph launch

    def _alloc(self, n):
        buf = np.zeros(n, np.uint8)
        self.buffers[buf.ctypes.data] = buf
        return 0, buf.ctypes.data

    cudaMallocHost = cudaMalloc = _alloc

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        self.calls.append(("capture " if self.capturing else "") + ("H2D" if kind == 1 else "D2H"))
        self.run(lambda: ctypes.memmove(dst, src, n))
        return (0,)

    def run(self, work):
        """Work on the stream: recorded while capturing, else done now."""
        if self.capturing:
            self.recorded.append(work)
        else:
            work()

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

    def cudaStreamBeginCapture(self, stream, mode):
        self.capturing, self.recorded = True, []
        self.calls.append("begin capture")
        return (0,)

    def cudaStreamEndCapture(self, stream):
        self.capturing = False
        self.calls.append("end capture")
        return 0, "graph"

    def cudaGraphInstantiate(self, graph, flags):
        return 0, "graph exec"

    def cudaGraphLaunch(self, graph_exec, stream):
        self.calls.append("graph launch")
        for work in self.recorded:
            work()
        return (0,)

    def cudaGraphDestroy(self, graph):
        return (0,)

    def cudaGraphExecDestroy(self, graph_exec):
        return (0,)


class FakeContext:
    def __init__(self, engine, cudart):
        self.engine, self.cudart, self.addresses, self.shape = engine, cudart, {}, None
        self.refuse_shape = False

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return True

    def set_input_shape(self, name, shape):
        if self.refuse_shape:
            return False
        self.shape = tuple(shape)
        return True

    def execute_async_v3(self, stream):
        if self.cudart.capturing and self.cudart.fail_in_capture:
            return False
        self.cudart.calls.append(("capture " if self.cudart.capturing else "") + "execute")
        shape = self.shape  # the shape at enqueue time is what a captured graph keeps
        self.cudart.run(lambda: self._run(shape))
        return True

    def _run(self, shape):
        n, h, w, _ = shape or self.engine.shapes["frames"]
        src = np.ctypeslib.as_array((ctypes.c_uint8 * (n * h * w * 3)).from_address(self.addresses["frames"]))
        dst = np.ctypeslib.as_array((ctypes.c_uint8 * (n * h * w)).from_address(self.addresses["class_map"]))
        dst[:] = (src.reshape(n, h, w, 3)[..., 0] < 100).ravel()  # a stand-in "model"


class FakeEngine:
    """A fused engine by default; ``tensors`` overrides its I/O as {name: (mode, dtype, shape)}."""

    def __init__(self, cudart, dynamic=True, tensors=None, profile=((1, 32, 32, 3), (4, 32, 32, 3), (4, 32, 32, 3))):
        batch = -1 if dynamic else 2
        self.tensors = tensors or {"frames": (MODES.INPUT, DTYPES.UINT8, (batch, 32, 32, 3)),
                                   "class_map": (MODES.OUTPUT, DTYPES.UINT8, (batch, 32, 32))}
        self.shapes = {n: shape for n, (_, _, shape) in self.tensors.items()}
        self.num_io_tensors = len(self.tensors)
        self.profile, self.cudart, self.contexts = profile, cudart, []

    def get_tensor_name(self, i):
        return list(self.tensors)[i]

    def get_tensor_mode(self, name):
        return self.tensors[name][0]

    def get_tensor_dtype(self, name):
        return self.tensors[name][1]

    def get_tensor_shape(self, name):
        return self.tensors[name][2]

    def get_tensor_profile_shape(self, name, profile):
        return [list(s) for s in self.profile]

    def create_execution_context(self):
        self.contexts.append(FakeContext(self, self.cudart))
        return self.contexts[-1]


def fake_trt(engine, name="tensorrt", version="10.3.0"):
    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return None if data == b"truncated" else engine

    class ILogger:
        Severity = SimpleNamespace(ERROR=1, WARNING=2)

        def __init__(self):
            pass

    return SimpleNamespace(__name__=name, __version__=version, ILogger=ILogger, Runtime=Runtime, TensorIOMode=MODES,
                           nptype=np.dtype)


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """An engine file with its sidecar, the CUDA stand-in, and a function to choose the engine stand-in."""
    cudart = FakeCudart()
    monkeypatch.setattr(trt_backend, "_cudart", lambda: cudart)
    monkeypatch.setattr(trt_backend, "gpu_info", lambda: ("Orin", "8.7"))
    path = tmp_path / "model.engine"
    path.write_bytes(b"plan")
    EngineSidecar(tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7", precision="fp16", profiles={},
                  onnx_file="model.onnx", onnx_sha256="0" * 64,
                  model={"classes": ["background", "rbc", "macrophage"], "input_size": [32, 32], "arch": "light-unet",
                         "batch": "dynamic", "precision": "fp16"}).write(path)

    def use(**engine_options):
        engine = FakeEngine(cudart, **engine_options)
        monkeypatch.setattr(trt_backend, "import_tensorrt", lambda flavour: fake_trt(engine))
        return engine

    return path, cudart, use


def frames(n, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)


def expected(x):
    return (x[..., 0] < 100).astype(np.uint8)


def test_infer_binds_by_name_and_moves_bytes_through_pinned_and_device_buffers(setup):
    path, cudart, use = setup
    engine = use()
    with trt_backend.TensorRTRunner(path) as runner:
        x = frames(3)
        out = runner.infer(x)
        assert np.array_equal(out, expected(x)) and out.shape == (3, 32, 32) and out.dtype == np.uint8
        assert cudart.calls == ["H2D", "execute", "D2H"], "one copy each way per batch"
        assert set(engine.contexts[0].addresses) == {"frames", "class_map"} and engine.contexts[0].shape == (3, 32, 32, 3)
        assert "Orin" in runner.detail and "batch 1–4" in runner.detail and runner.metadata.precision == "fp16"
    assert cudart.freed == 8, "2 slots × (2 device + 2 pinned buffers) released"


def test_two_batches_in_flight_come_back_in_order_and_a_third_submit_is_refused(setup):
    path, _, use = setup
    use()
    with trt_backend.TensorRTRunner(path, slots=2) as runner:
        a, b, c = frames(1, 1), frames(2, 2), frames(1, 3)
        ha, hb = runner.submit(a), runner.submit(b)
        assert ha is not hb
        with pytest.raises(CscError, match="2 batches are in flight already"):
            runner.submit(c)
        assert np.array_equal(runner.collect(ha), expected(a)), "the refused submit overwrote nothing"
        hc = runner.submit(c)
        assert np.array_equal(runner.collect(hb), expected(b))
        assert np.array_equal(runner.collect(hc), expected(c))
        with pytest.raises(CscError, match="collected already"):
            runner.collect(hc)


def test_batch_range_comes_from_the_engine_and_tiling_uses_it(setup):
    """A `--max-batch 4` engine used to fail tiling with "batch of 8 exceeds": the Segmenter now asks the runner."""
    from runtime.pipeline.stream import Segmenter

    path, _, use = setup
    engine = use(profile=((2, 32, 32, 3), (4, 32, 32, 3), (4, 32, 32, 3)))
    with trt_backend.TensorRTRunner(path) as runner:
        assert (runner.min_batch, runner.max_batch) == (2, 4)
        with pytest.raises(CscError, match="batch of 5 exceeds the engine's maximum 4"):
            runner.submit(frames(5))
        one = frames(1, 4)
        assert np.array_equal(runner.infer(one), expected(one))
        assert engine.contexts[0].shape == (2, 32, 32, 3), "a batch below the profile's minimum is padded up to it"
        segmenter = Segmenter(runner, overlap=8)
        assert segmenter.batch == 4
        image = np.random.default_rng(5).integers(0, 255, (80, 90, 3), dtype=np.uint8)
        assert np.array_equal(segmenter.segment_tiled(image), expected(image))


def test_static_engine_runs_its_own_batch_and_pads_smaller_ones(setup):
    path, _, use = setup
    engine = use(dynamic=False)
    with trt_backend.TensorRTRunner(path) as runner:
        assert (runner.min_batch, runner.max_batch) == (2, 2)
        one = frames(1)
        assert np.array_equal(runner.infer(one), expected(one))
        assert engine.contexts[0].shape is None, "a static engine's input shape is never set"


def test_refused_input_shape_is_an_error_not_a_wrong_result(setup):
    path, _, use = setup
    engine = use()
    with trt_backend.TensorRTRunner(path) as runner:
        engine.contexts[0].refuse_shape = True
        with pytest.raises(CscError, match=r"refused input shape \(3, 32, 32, 3\).*batches 1–4"):
            runner.submit(frames(3))
        assert runner.infer(frames(1)).shape == (1, 32, 32), "the refused batch left no slot in flight"


@pytest.mark.parametrize("tensors, message", [
    ({"input": (MODES.INPUT, DTYPES.FLOAT, (1, 3, 32, 32)), "logits": (MODES.OUTPUT, DTYPES.FLOAT, (1, 3, 32, 32))},
     r"not a fused uint8 → class-map engine \(in input float32 \[1, 3, 32, 32\]; out logits float32"),
    ({"frames": (MODES.INPUT, DTYPES.UINT8, (1, 32, 32, 3)), "class_map": (MODES.OUTPUT, DTYPES.UINT8, (1, 32, 32)),
      "probabilities": (MODES.OUTPUT, DTYPES.FLOAT, (1, 3, 32, 32))},
     r"engine has 2 outputs \(class_map, probabilities\); the runtime reads one class map"),
    ({"frames": (MODES.INPUT, DTYPES.UINT8, (1, 64, 64, 3)), "class_map": (MODES.OUTPUT, DTYPES.UINT8, (1, 64, 64))},
     "engine takes 64×64 frames but its sidecar says 32×32"),
])
def test_engines_that_are_not_fused_class_map_engines_are_refused(setup, tensors, message):
    path, cudart, use = setup
    use(tensors=tensors)
    with pytest.raises(CscError, match=message):
        trt_backend.TensorRTRunner(path).activate()
    assert not cudart.buffers, "refused before any buffer was sized"


def test_cuda_graph_is_captured_after_an_ordinary_enqueue_and_replayed(setup):
    path, cudart, use = setup
    use()
    with trt_backend.TensorRTRunner(path, slots=1, cuda_graph=True) as runner:
        first, second, third = frames(2, 1), frames(2, 2), frames(3, 3)
        assert np.array_equal(runner.infer(first), expected(first))
        assert cudart.calls == ["H2D", "execute", "D2H", "begin capture", "capture H2D", "capture execute",
                                "capture D2H", "end capture"], "set-up enqueue first, then the capture"
        cudart.calls.clear()
        assert np.array_equal(runner.infer(second), expected(second))
        assert cudart.calls == ["graph launch"]
        cudart.calls.clear()
        assert np.array_equal(runner.infer(third), expected(third)), "a new batch size is captured anew"
        assert cudart.calls[:3] == ["H2D", "execute", "D2H"] and "begin capture" in cudart.calls
        assert "CUDA graphs" in runner.detail and not runner.notes


def test_a_failed_capture_is_ended_and_the_runner_goes_on_without_graphs(setup):
    path, cudart, use = setup
    use()
    cudart.fail_in_capture = True
    with trt_backend.TensorRTRunner(path, slots=1, cuda_graph=True) as runner:
        x = frames(1)
        assert np.array_equal(runner.infer(x), expected(x))
        assert cudart.calls[-1] == "end capture" and not cudart.capturing
        assert runner.notes == ["CUDA graph capture failed (TensorRT execute_async_v3 failed); running without CUDA graphs"]
        cudart.calls.clear()
        assert np.array_equal(runner.infer(x), expected(x)) and cudart.calls == ["H2D", "execute", "D2H"]


def test_truncated_engine_and_foreign_gpu(setup, monkeypatch):
    path, _, use = setup
    use()
    path.write_bytes(b"truncated")
    with pytest.raises(CscError, match="TensorRT could not deserialise the engine.*csc-export build-engine model.onnx"):
        trt_backend.TensorRTRunner(path).activate()
    monkeypatch.setattr(trt_backend, "gpu_info", lambda: ("NVIDIA GeForce RTX 4090", "8.9"))
    with pytest.raises(CscError, match="built for Orin"):
        trt_backend.TensorRTRunner(path).activate()


def test_rtx_engine_on_an_h100_names_the_flavour_that_would_work(setup, monkeypatch):
    path, _, use = setup
    sidecar = EngineSidecar.read(path)
    sidecar.flavour, sidecar.tensorrt_version, sidecar.gpu_name, sidecar.compute_capability = "rtx", "1.7.1.116", "", ""
    sidecar.target_compute_capabilities = list(RTX_DEFAULT_TARGETS)
    sidecar.write(path)
    engine = use()
    imported = []

    def import_tensorrt(flavour):
        imported.append(flavour)
        return fake_trt(engine, "tensorrt_rtx", "1.7.1.116")

    monkeypatch.setattr(trt_backend, "import_tensorrt", import_tensorrt)
    monkeypatch.setattr(trt_backend, "gpu_info", lambda: ("NVIDIA H100 80GB HBM3", "9.0"))
    with pytest.raises(CscError) as err:
        trt_backend.TensorRTRunner(path).activate()
    assert imported == ["rtx"], "the module is the one the sidecar names"
    assert "runs on GPUs of compute capability 8.0, 8.6, 8.9, 12.0+, not on NVIDIA H100" in str(err.value)
    assert "--flavour tensorrt" in str(err.value)
    assert "sm 9.0" in trt_backend.why_not_runnable(path)
    monkeypatch.setattr(trt_backend, "gpu_info", lambda: ("NVIDIA GeForce RTX 4090", "8.9"))
    with trt_backend.TensorRTRunner(path) as runner:
        assert runner.detail.startswith("TensorRT-RTX 1.7.1.116 on NVIDIA GeForce RTX 4090")
    assert trt_backend.why_not_runnable(path) is None


def test_malformed_sidecar_model_is_one_error_naming_the_key(setup):
    import json

    path, _, use = setup
    use()
    side = EngineSidecar.path_for(path)
    data = json.loads(side.read_text())
    data["model"]["input_size"] = [32]
    side.write_text(json.dumps(data))
    with pytest.raises(CscError, match="key 'input_size' has a list value"):
        trt_backend.TensorRTRunner(path).activate()


def test_driver_too_old_for_cuda_python_is_named(monkeypatch):
    """cuda-python 13 on a JetPack 6 / R535–R570 driver answers cudaErrorInsufficientDriver; no GPU answers it
    too, with a driver version of 0."""
    import runtime.backends.cuda as gpu

    class Err(int):
        name = "cudaErrorInsufficientDriver"

    def fake(driver):
        return SimpleNamespace(cudaGetDeviceCount=lambda: (Err(35), None), cudaDriverGetVersion=lambda: (0, driver),
                               cudaRuntimeGetVersion=lambda: (0, 13000))

    monkeypatch.setattr(gpu, "cudart", lambda: fake(12060))
    with pytest.raises(CscError, match=r"driver too old for cuda-python 13: the driver supports CUDA 12\.6, "
                                       r"cuda-python needs 13\.0 — install cuda-python<13"):
        gpu.gpu_info()
    monkeypatch.setattr(gpu, "cudart", lambda: fake(0))
    with pytest.raises(CscError, match="no usable NVIDIA GPU: no NVIDIA driver found"):
        gpu.gpu_info()


def test_csc_run_offers_backend_choices_and_cuda_graph(tmp_path):
    from typer.testing import CliRunner

    from runtime.backends import open_runner
    from runtime.cli.run import app

    help_text = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    assert "--cuda-graph" in help_text and "auto|trt|openvino|ort" in help_text
    bad = CliRunner().invoke(app, ["--source", "demo", "--backend", "cuda"])
    assert bad.exit_code == 2
    runner, reason = open_runner(tmp_path / "m.engine", "auto", cuda_graph=True)
    assert isinstance(runner, trt_backend.TensorRTRunner) and runner.cuda_graph and "engine was given" in reason


def test_a_cuda_python_that_raises_without_a_driver_is_one_line(monkeypatch):
    import runtime.backends.cuda as gpu

    def missing():
        raise RuntimeError("Failed to dlopen libcuda.so.1")

    monkeypatch.setattr(gpu, "cudart", lambda: SimpleNamespace(cudaGetDeviceCount=missing))
    with pytest.raises(CscError, match="cuda-python could not reach a driver .*libcuda"):
        gpu.gpu_info()


@pytest.mark.parametrize("fail_at", [1, 2, 3, 4, 6])
def test_an_allocation_failing_part_way_through_activation_frees_what_was_made(setup, monkeypatch, fail_at):
    """Out of device memory on the n-th allocation of two slots (2 pinned + 2 device buffers each): every buffer
    made before it is released, none leaks, and the error says what failed."""
    path, cudart, use = setup
    use()
    allocated, made = [0], []

    def alloc(n):
        allocated[0] += 1
        if allocated[0] == fail_at:
            return 2, None  # cudaErrorMemoryAllocation
        made.append(n)
        return FakeCudart._alloc(cudart, n)

    monkeypatch.setattr(cudart, "cudaMalloc", alloc)
    monkeypatch.setattr(cudart, "cudaMallocHost", alloc)
    monkeypatch.setattr(trt_backend, "cuda_error", lambda _cudart, err, what: CscError(f"{what} failed ({err})"))
    runner = trt_backend.TensorRTRunner(path)
    with pytest.raises(CscError, match="allocation failed"):
        runner.__enter__()
    assert cudart.freed == len(made) == fail_at - 1 and runner._slots == []


def test_auto_passes_over_an_engine_built_from_an_earlier_export_of_the_model(setup, monkeypatch):
    """`csc-run --model model.onnx` picked model.engine beside it whenever it ran here, even one built before
    model.onnx was exported again (a new training): the old model counted, silently."""
    import runtime.backends.openvino as openvino
    from runtime.backends import open_runner
    from runtime.backends.engine_sidecar import sha256
    from runtime.backends.onnxruntime import OnnxRuntimeRunner

    path, _, use = setup
    use()
    monkeypatch.setattr(openvino, "openvino_available", lambda: False)
    model = path.with_suffix(".onnx")
    model.write_bytes(b"the export the engine was built from")
    sidecar = EngineSidecar.read(path)
    sidecar.onnx_sha256 = sha256(model)
    sidecar.write(path)
    runner, reason = open_runner(model, "auto")
    assert isinstance(runner, trt_backend.TensorRTRunner) and reason.startswith("found model.engine beside the model")
    model.write_bytes(b"a later export under the same name")
    runner, reason = open_runner(model, "auto")
    assert isinstance(runner, OnnxRuntimeRunner)
    assert "model.engine exists but it was built from an earlier model.onnx (the file changed since)" in reason
    assert f"csc-export build-engine {model} --out {path}" in reason


def test_the_rebuild_command_runs_as_printed_with_spaces_in_the_paths(tmp_path):
    """The printed line was pasted into a shell as it was: a folder of spaces split it into other arguments."""
    import shlex

    engine = tmp_path / "eng dir [v2]" / "m.engine"
    engine.parent.mkdir()
    (engine.parent / "my model.onnx").write_bytes(b"onnx")
    sidecar = EngineSidecar(tensorrt_version="1.7", gpu_name="", compute_capability="", precision="fp32",
                            profiles={}, onnx_file="my model.onnx", onnx_sha256="0" * 64, flavour="rtx",
                            build_options={"compute_capabilities": ["8.6"]}, model={})
    args = shlex.split(sidecar.rebuild_command(engine))
    assert args[:5] == ["csc-export", "build-engine", str(engine.parent / "my model.onnx"), "--out", str(engine)]
    assert args[5:] == ["--flavour", "rtx", "--compute-capability", "8.6"]


def test_an_engine_that_cannot_run_here_is_named(setup, monkeypatch):
    """csc-bench --model a.engine --model b.engine on a box without a GPU said "no NVIDIA GPU found", not which."""
    from runtime.errors import CscError

    path, _, use = setup
    use()

    def no_gpu():
        raise CscError("no NVIDIA GPU found", fix="use --backend ort")

    monkeypatch.setattr(trt_backend, "gpu_info", no_gpu)
    with pytest.raises(CscError) as caught:
        trt_backend.check_runs_here(path, EngineSidecar.read(path))
    assert caught.value.path == path and caught.value.reason == "no NVIDIA GPU found"
    assert caught.value.fix == "use --backend ort"
