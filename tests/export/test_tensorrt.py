"""TensorRT parts that run without a GPU: options, profiles, version choices, sidecars, API names.

Building and running engines needs an NVIDIA GPU with TensorRT, which no machine of this project has; those
paths are skipped with that reason, never faked.
"""
import importlib.util
import json
from types import SimpleNamespace

import pytest

from export.tensorrt import BuildOptions, build_engine, network_flags, profile_shapes
from runtime.engine_sidecar import EngineSidecar
from runtime.errors import CscError

lean = pytest.importorskip("tensorrt_lean_bindings", reason="TensorRT lean bindings not installed (dev extra)")
HAS_FULL_TRT = importlib.util.find_spec("tensorrt") is not None
NO_GPU = "needs an NVIDIA GPU with full TensorRT (Builder, OnnxParser): none in this project's CI"


def fake_trt(version):
    return SimpleNamespace(__version__=version, NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=1))


def test_network_flags_by_version():
    assert network_flags(fake_trt("11.4.0.106")) == 0, "11.x networks are always strongly typed"
    assert network_flags(fake_trt("10.3.0")) == 1 << 1, "10.x must ask for STRONGLY_TYPED"
    with pytest.raises(CscError, match="too old"):
        network_flags(fake_trt("8.6.1"))


def test_profile_shapes():
    dynamic = [("frames", [-1, 512, 512, 3])]
    assert profile_shapes(dynamic, BuildOptions()) == {"frames": [[1, 512, 512, 3], [8, 512, 512, 3], [8, 512, 512, 3]]}
    assert profile_shapes(dynamic, BuildOptions(min_batch=2, opt_batch=4, max_batch=16))["frames"] == [
        [2, 512, 512, 3], [4, 512, 512, 3], [16, 512, 512, 3]]
    with pytest.raises(CscError, match="1 ≤ min ≤ opt ≤ max"):
        profile_shapes(dynamic, BuildOptions(min_batch=4, max_batch=2))
    assert profile_shapes([("frames", [1, 512, 512, 3])], BuildOptions()) == {}
    with pytest.raises(CscError, match="static batch"):
        profile_shapes([("frames", [1, 512, 512, 3])], BuildOptions(max_batch=4))
    with pytest.raises(CscError, match="beyond the batch"):
        profile_shapes([("frames", [-1, -1, 512, 3])], BuildOptions())


def _sidecar(**kw):
    base = dict(tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7", precision="fp16",
                profiles={}, onnx_file="model.onnx", onnx_sha256="ab" * 32,
                build_options={"min_batch": None, "opt_batch": None, "max_batch": 4})
    base.update(kw)
    return EngineSidecar(**base)


def test_sidecar_round_trip_and_mismatch_message(tmp_path):
    engine = tmp_path / "model.engine"
    _sidecar().write(engine)
    back = EngineSidecar.read(engine)
    assert back == _sidecar() and json.loads((tmp_path / "model.engine.json").read_text())["gpu_name"] == "Orin"
    back.check_matches(engine, "10.3.0", "Orin", "8.7")
    with pytest.raises(CscError) as err:
        back.check_matches(engine, "11.4.0", "NVIDIA GeForce RTX 4090", "8.9")
    text = str(err.value)
    assert "built with TensorRT 10.3.0, running 11.4.0" in text and "sm 8.7" in text and "sm 8.9" in text
    assert "csc-export build-engine model.onnx --out" in text and "--max-batch 4" in text


def test_missing_or_broken_sidecar(tmp_path):
    with pytest.raises(CscError, match="engine has no sidecar"):
        EngineSidecar.read(tmp_path / "x.engine")
    (tmp_path / "x.engine.json").write_text("{not json")
    with pytest.raises(CscError, match="unreadable engine sidecar"):
        EngineSidecar.read(tmp_path / "x.engine")


@pytest.mark.skipif(HAS_FULL_TRT, reason="full TensorRT is installed here")
def test_build_without_tensorrt_says_what_is_needed_and_writes_nothing(fp32_model, tmp_path):
    with pytest.raises(CscError) as err:
        build_engine(fp32_model, tmp_path / "m.engine", BuildOptions())
    assert "TensorRT is not installed" in str(err.value) and "auto-csc[trt]" in str(err.value)
    assert not list(tmp_path.iterdir())


def test_cli_build_engine_without_tensorrt_exits_nonzero(fp32_model, tmp_path):
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", "from export.cli import main; main()", "build-engine", str(fp32_model),
                          "--out", str(tmp_path / "m.engine")], capture_output=True, text=True)
    assert run.returncode == 2 and "auto-csc[trt]" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "m.engine").exists()


def test_runtime_api_names_exist_in_the_tensorrt_bindings():
    """Every TensorRT runtime name the runner and builder call, checked on the bindings that install here."""
    trt = lean
    for name in ("Runtime", "Logger", "TensorIOMode", "MemoryPoolType", "IProgressMonitor", "ITimingCache"):
        assert hasattr(trt, name), name
    assert hasattr(trt.TensorIOMode, "INPUT") and hasattr(trt.TensorIOMode, "OUTPUT")
    assert hasattr(trt.MemoryPoolType, "WORKSPACE") and hasattr(trt.Logger, "WARNING")
    for name in ("deserialize_cuda_engine",):
        assert hasattr(trt.Runtime, name)
    for name in ("get_tensor_name", "num_io_tensors", "get_tensor_mode", "get_tensor_shape",
                 "get_tensor_profile_shape", "create_execution_context"):
        assert hasattr(trt.ICudaEngine, name), name
    for name in ("set_input_shape", "set_tensor_address", "execute_async_v3"):
        assert hasattr(trt.IExecutionContext, name), name
    for name in ("phase_start", "step_complete", "phase_finish"):
        assert hasattr(trt.IProgressMonitor, name), name
    assert hasattr(trt.ITimingCache, "serialize")


@pytest.mark.skipif(not HAS_FULL_TRT, reason=NO_GPU)
def test_builder_api_names_exist_in_full_tensorrt():
    import tensorrt as trt

    for name in ("Builder", "OnnxParser"):
        assert hasattr(trt, name)
    for name in ("create_network", "create_builder_config", "create_optimization_profile", "build_serialized_network"):
        assert hasattr(trt.Builder, name)
    for name in ("set_memory_pool_limit", "create_timing_cache", "set_timing_cache", "get_timing_cache"):
        assert hasattr(trt.IBuilderConfig, name)


def test_cuda_python_names_used_by_the_runner():
    from runtime.gpu import cudart

    rt = cudart()
    for name in ("cudaGetDeviceCount", "cudaGetDeviceProperties", "cudaMallocHost", "cudaMalloc", "cudaFree",
                 "cudaFreeHost", "cudaMemcpyAsync", "cudaStreamCreate", "cudaStreamDestroy", "cudaStreamSynchronize",
                 "cudaStreamBeginCapture", "cudaStreamEndCapture", "cudaGraphInstantiate", "cudaGraphLaunch",
                 "cudaGraphDestroy", "cudaGraphExecDestroy"):
        assert hasattr(rt, name), name
    assert hasattr(rt.cudaMemcpyKind, "cudaMemcpyHostToDevice") and hasattr(rt.cudaMemcpyKind, "cudaMemcpyDeviceToHost")
    assert hasattr(rt.cudaStreamCaptureMode, "cudaStreamCaptureModeGlobal")


def test_no_gpu_here_is_a_clear_error():
    from runtime.gpu import gpu_info

    try:
        name, capability = gpu_info()
    except CscError as err:
        assert "no usable NVIDIA GPU" in str(err) or "not installed" in str(err)
    else:
        pytest.skip(f"a GPU is present here ({name}, sm {capability})")
