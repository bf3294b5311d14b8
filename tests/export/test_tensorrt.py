"""TensorRT engines through the real builder and ONNX parser: TensorRT for RTX (``tensorrt_rtx``, the dev extra)
parses and builds ahead of time without a GPU, so every export variant goes through our own `build_engine` and
`csc-export build-engine` here — no stand-ins for the builder. Running an engine needs an RTX GPU (TensorRT-RTX)
or full TensorRT with its GPU: the runner's logic is tested against stand-ins in
tests/runtime/backends/test_tensorrt_runner.py, and nothing here claims an engine ran.
"""
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from export.cli import app
from export.tensorrt import BuildOptions, build_engine, network_flags, parse_onnx, profile_shapes, resolve_flavour
from runtime.cli.run import DEFAULT_MODEL
from runtime.backends.engine_sidecar import RTX_DEFAULT_TARGETS, EngineSidecar, runs_on
from runtime.errors import CscError

trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX (pip tensorrt-rtx-cu12, the dev extra) is not installed")


def cli(*args):
    """Exit code and output with line breaks undone (rich wraps long lines)."""
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "400"})
    return result.exit_code, " ".join((result.output + (str(result.exception) if result.exception else "")).split())


def sidecar_of(engine):
    return json.loads(EngineSidecar.path_for(engine).read_text())


# -- flavours and options --------------------------------------------------------------------------------------

def test_network_flags_by_flavour_and_version():
    def full(version):
        return SimpleNamespace(__name__="tensorrt", __version__=version,
                               NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=1))

    assert network_flags(trt) == 0, "TensorRT-RTX networks are always strongly typed"
    assert network_flags(full("11.4.0.106")) == 0, "11.x networks are always strongly typed"
    assert network_flags(full("10.3.0")) == 1 << 1, "10.x must ask for STRONGLY_TYPED"
    with pytest.raises(CscError, match="too old"):
        network_flags(full("8.6.1"))
    _, builder, network, _ = parse_onnx(trt, DEFAULT_MODEL)
    assert network.get_flag(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


@pytest.mark.parametrize("installed, gpu, requested, expected", [
    (["tensorrt", "rtx"], ("NVIDIA RTX 4090", "8.9"), "auto", "tensorrt"),
    (["tensorrt", "rtx"], None, "auto", "rtx"),
    (["rtx"], ("NVIDIA H100", "9.0"), "auto", "rtx"),
    (["rtx"], None, "rtx", "rtx"),
])
def test_auto_takes_full_tensorrt_only_with_a_gpu(monkeypatch, installed, gpu, requested, expected):
    import export.tensorrt as builder

    def gpu_info():
        if gpu is None:
            raise CscError("no usable NVIDIA GPU: no NVIDIA driver found")
        return gpu

    monkeypatch.setattr(builder, "installed_flavours", lambda: installed)
    monkeypatch.setattr(builder, "gpu_info", gpu_info)
    monkeypatch.setattr(builder, "import_tensorrt", lambda flavour: SimpleNamespace(flavour=flavour))
    flavour, module, found = resolve_flavour(requested)
    assert flavour == expected == module.flavour and found == gpu


def test_full_tensorrt_without_a_gpu_or_no_tensorrt_at_all_says_what_to_install(monkeypatch):
    import export.tensorrt as builder

    def no_gpu():
        raise CscError("no usable NVIDIA GPU: no NVIDIA driver found")

    monkeypatch.setattr(builder, "gpu_info", no_gpu)
    monkeypatch.setattr(builder, "installed_flavours", lambda: ["tensorrt"])
    with pytest.raises(CscError, match="full TensorRT builds only on the GPU.*auto-csc\\[rtx\\]"):
        resolve_flavour("auto")
    monkeypatch.setattr(builder, "installed_flavours", lambda: [])
    with pytest.raises(CscError, match="no TensorRT is installed.*auto-csc\\[rtx\\]"):
        resolve_flavour("auto")


def test_cli_without_any_tensorrt_exits_2_in_one_line(fp32_model, tmp_path, monkeypatch):
    """Stand-in for a machine without TensorRT: the modules are made unimportable."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['tensorrt'] = sys.modules['tensorrt_rtx'] = None; "
            "from export.cli import main; main()")
    run = subprocess.run([sys.executable, "-c", code, "build-engine", str(fp32_model), "--out", str(tmp_path / "m.engine")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "no TensorRT is installed" in run.stderr and "Traceback" not in run.stderr
    assert not list(tmp_path.iterdir())


def test_profile_shapes():
    dynamic = [("frames", [-1, 512, 512, 3])]
    assert profile_shapes(dynamic, BuildOptions()) == {"frames": [[1, 512, 512, 3], [8, 512, 512, 3], [8, 512, 512, 3]]}
    assert profile_shapes(dynamic, BuildOptions(min_batch=2, opt_batch=4, max_batch=16))["frames"] == [
        [2, 512, 512, 3], [4, 512, 512, 3], [16, 512, 512, 3]]
    with pytest.raises(CscError, match="1 ≤ min ≤ opt ≤ max"):
        profile_shapes(dynamic, BuildOptions(min_batch=4, max_batch=2))
    assert profile_shapes([("frames", [1, 512, 512, 3])], BuildOptions()) == {}
    with pytest.raises(CscError, match="beyond the batch"):
        profile_shapes([("frames", [-1, -1, 512, 3])], BuildOptions())


@pytest.mark.parametrize("model, args, message", [
    ("plain_model", [], "runs fused models only"),
    ("probabilities_model", [], "reads one output, class_map"),
    ("fp32_model", ["--max-batch", "4"], "static batch"),
    ("fp32_model", ["--flavour", "tensorrt", "--compute-capability", "7.5"], "--compute-capability chooses"),
    ("fp32_model", ["--flavour", "rtx", "--timing-cache", "trt.cache"], "--timing-cache does nothing in TensorRT-RTX"),
    ("fp32_model", ["--compute-capability", "8.6", "--compute-capability", "8.6"], "given twice for one GPU"),
])
def test_build_engine_refuses_what_the_runtime_cannot_run_before_any_work(request, tmp_path, monkeypatch,
                                                                          model, args, message):
    if "tensorrt" in args:  # full TensorRT cannot install here: stand in for its presence (GPU and module)
        import export.tensorrt as builder

        monkeypatch.setattr(builder, "gpu_info", lambda: ("NVIDIA RTX 4090", "8.9"))
        monkeypatch.setattr(builder, "import_tensorrt", lambda flavour: trt)
    code, output = cli("build-engine", request.getfixturevalue(model), "--out", tmp_path / "m.engine", *args)
    assert code != 0 and message in output
    assert not list(tmp_path.iterdir())



def test_build_engine_refuses_an_out_that_is_its_model_or_no_engine_name(fp32_model, tmp_path):
    """--out M.onnx replaced the model with the engine; any suffix was taken, though csc-run runs only .engine,
    .plan and .trt files as engines."""
    model = tmp_path / "m.onnx"
    model.write_bytes(fp32_model.read_bytes())
    (tmp_path / "old.engine").mkdir()  # a folder: found only after the build (minutes on a Jetson)
    for out, message in ((model, "--out is the ONNX file itself"),
                         (tmp_path / "m.bin", "does not end in .engine, .plan, .trt"),
                         (tmp_path / "old.engine", "is a folder")):
        code, output = cli("build-engine", model, "--out", out)
        assert code != 0 and message in output and "Building" not in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "old.engine"]
    assert model.read_bytes() == fp32_model.read_bytes() and not list((tmp_path / "old.engine").iterdir())

# -- real parses and builds ---------------------------------------------------------------------------------------

def test_bundled_model_builds_ahead_of_time_through_the_cli(tmp_path):
    from runtime.backends.tensorrt import why_not_runnable

    engine = tmp_path / "default.engine"
    code, output = cli("build-engine", DEFAULT_MODEL, "--out", engine)
    assert code == 0, output
    data = engine.read_bytes()
    assert len(data) > 100_000 and data[:4] == b"vtrt", "a TensorRT-RTX plan"
    side = sidecar_of(engine)
    assert side["flavour"] == "rtx" and side["tensorrt_version"] == trt.__version__
    assert side["target_compute_capabilities"] == list(RTX_DEFAULT_TARGETS) and side["precision"] == "fp32"
    assert side["model"]["input_size"] == [512, 512] and side["profiles"] == {}
    problem = why_not_runnable(engine)
    if problem is None:  # a machine with an RTX GPU runs the guard
        assert "accuracy guard: TensorRT and ONNX Runtime class maps agree" in output
    else:  # never faked: the guard is skipped, and the output says why and what to run on the GPU box
        assert "accuracy guard skipped" in output and f"csc-export check {engine}" in output


def test_an_engine_the_guard_refuses_leaves_the_one_at_out_as_it_was(tmp_path, monkeypatch):
    """The guard used to run on the engine after it had replaced --out, and to delete it when it disagreed: the good
    engine of an earlier build went with it. The guard needs a GPU that runs the engine: its verdict is a stand-in
    here, the build and the files are real."""
    import export.tensorrt as builder
    import runtime.backends.tensorrt as runner

    engine = tmp_path / "default.engine"
    assert cli("build-engine", DEFAULT_MODEL, "--out", engine)[0] == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    guarded = []
    monkeypatch.setattr(runner, "why_not_runnable", lambda e, onnx=None: guarded.append(Path(e)))
    monkeypatch.setattr(builder, "engine_agreement", lambda e, images=None: 0.5)
    code, output = cli("build-engine", DEFAULT_MODEL, "--out", engine, "--compute-capability", "8.6")
    assert code != 0 and "not written; the engine already there is kept" in output and "agree on 50.000 %" in output
    assert guarded and guarded[0] != engine and guarded[0].parent == tmp_path, "the new engine, under another name"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before, "the earlier engine and sidecar, alone"


@pytest.mark.parametrize("precision, batch, args", [
    ("fp32", "1", []), ("fp16", "1", []), ("int8", "1", []), ("fp32", "dynamic", ["--max-batch", "4"]),
    ("fp16", "dynamic", ["--min-batch", "2", "--max-batch", "4"]),
])
def test_every_export_variant_parses_and_builds(checkpoint, calib_images, tmp_path, precision, batch, args):
    from export.onnx_export import ExportOptions, export_onnx

    model, engine = tmp_path / "model.onnx", tmp_path / "model.engine"
    export_onnx(checkpoint, model, ExportOptions(batch=batch, size=64, precision=precision),
                calib=calib_images if precision == "int8" else None)
    assert cli("check", model)[0] == 0
    code, output = cli("build-engine", model, "--out", engine, *args)
    assert code == 0, output
    assert engine.stat().st_size > 10_000
    side = sidecar_of(engine)
    assert side["precision"] == precision and side["flavour"] == "rtx"
    if batch == "dynamic":
        lo = int(args[1]) if args[0] == "--min-batch" else 1
        assert side["profiles"] == {"frames": [[lo, 64, 64, 3], [4, 64, 64, 3], [4, 64, 64, 3]]}
    assert side["onnx_sha256"] and side["build_seconds"] >= 0


def test_a_workspace_too_small_fails_with_the_fix_and_writes_nothing(checkpoint, tmp_path):
    from export.onnx_export import ExportOptions, export_onnx

    model = tmp_path / "dyn.onnx"
    export_onnx(checkpoint, model, ExportOptions(batch="dynamic", size=64))
    code, output = cli("build-engine", model, "--out", tmp_path / "m.engine", "--max-batch", "32", "--workspace", "16")
    assert code != 0 and "OutOfMemory" in output and "raise --workspace (now 16 MiB) or lower --max-batch" in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dyn.onnx"]


def test_turing_needs_an_engine_built_for_it(fp32_model, tmp_path):
    engine = tmp_path / "turing.engine"
    sidecar = build_engine(fp32_model, engine, BuildOptions(compute_capabilities=["7.5"]), flavour="rtx")
    assert sidecar.target_compute_capabilities == ["7.5"] and engine.stat().st_size > 10_000
    with pytest.raises(CscError, match="cannot build for compute capability 9.0"):
        build_engine(fp32_model, tmp_path / "h100.engine", BuildOptions(compute_capabilities=["9.0"]), flavour="rtx")
    assert not (tmp_path / "h100.engine").exists()


def _uint8_transpose_graph(path):
    """Hand-made: uint8 frames transposed before any Cast, which TensorRT refuses."""
    nodes = [helper.make_node("Transpose", ["frames"], ["t"], name="to_nchw", perm=[0, 3, 1, 2]),
             helper.make_node("Cast", ["t"], ["f"], name="to_float", to=TensorProto.FLOAT),
             helper.make_node("ArgMax", ["f"], ["a"], name="argmax", axis=1, keepdims=0),
             helper.make_node("Cast", ["a"], ["class_map"], name="to_uint8", to=TensorProto.UINT8)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("frames", TensorProto.UINT8, [1, 8, 8, 3])],
                              [helper.make_tensor_value_info("class_map", TensorProto.UINT8, [1, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {"classes": ["background", "rbc", "macrophage"], "input_size": [8, 8], "arch": "light-unet"}
    model.metadata_props.add(key="auto_csc", value=json.dumps(meta))
    onnx.save(model, path)
    return path


def test_check_exits_1_naming_the_node_a_real_parser_rejects(tmp_path, fp32_model):
    code, output = cli("check", _uint8_transpose_graph(tmp_path / "bad.onnx"))
    assert code == 1 and f"TensorRT-RTX {trt.__version__} rejects it" in output
    assert "node to_nchw (Transpose)" in output and "UInt8" in output and "csc-export upgrade" in output
    code, output = cli("check", fp32_model)
    assert code == 0 and "parses every node" in output


def test_check_of_an_engine_refuses_a_checkpoint_it_would_not_read(fp32_model, checkpoint, tmp_path):
    """`csc-export check M.engine --checkpoint best.pt` ignored the checkpoint: an engine is compared with its ONNX
    file only, so a user believed the engine had been checked against the PyTorch model."""
    engine = tmp_path / "m.engine"
    build_engine(fp32_model, engine, BuildOptions(), flavour="rtx")
    code, output = cli("check", engine, "--checkpoint", checkpoint)
    assert code != 0 and "--checkpoint is read only for an ONNX file" in output


def test_paths_with_brackets_are_printed_as_they_are(fp32_model, old_style_model, tmp_path):
    """A path like `runs[/old]` ended build-engine, check and upgrade in rich's MarkupError traceback after the
    work was done (exit 1, files written), and `[bold]` vanished from the name printed: paths are not markup."""
    import shutil

    folder = tmp_path / "runs[" / "old] [bold]"  # the path reads runs[/old] [bold]
    folder.mkdir(parents=True)
    model = Path(shutil.copy(fp32_model, folder / "m.onnx"))
    code, output = cli("build-engine", model, "--out", folder / "m.engine")
    assert code == 0 and f"built {folder / 'm.engine'} (" in output and f"sidecar {folder / 'm.engine.json'}" in output
    code, output = cli("check", model)
    assert code == 0 and str(model) in output
    code, output = cli("upgrade", old_style_model, "--out", folder / "new.onnx")
    assert code == 0 and f"wrote {folder / 'new.onnx'};" in output


def test_check_falls_back_to_the_operator_list_and_says_so(fp32_model, monkeypatch):
    import runtime.backends.cuda

    monkeypatch.setattr(runtime.backends.cuda, "installed_flavours", lambda: [])
    code, output = cli("check", fp32_model)
    assert code == 0 and "no TensorRT installed, so only TensorRT 10's operator list" in output


def test_old_exports_are_rejected_and_upgrade_makes_them_parse_with_identical_class_maps(old_style_model, tmp_path):
    from runtime.backends.onnxruntime import OnnxRuntimeRunner

    errors, *_ = parse_onnx(trt, old_style_model)
    assert errors and "(Transpose)" in errors[0] and "UInt8" in errors[0]
    with pytest.raises(CscError, match="could not parse the model.*csc-export upgrade"):
        build_engine(old_style_model, tmp_path / "old.engine", BuildOptions(), flavour="rtx")
    assert not (tmp_path / "old.engine").exists()

    new = tmp_path / "new.onnx"
    code, output = cli("upgrade", old_style_model, "--out", new)
    assert code == 0 and "Cast to float moved before Transpose" in output and "100.000 %" in output
    assert parse_onnx(trt, new)[0] == []
    old_graph, new_graph = onnx.load(str(old_style_model)), onnx.load(str(new))
    assert list(new_graph.metadata_props) == list(old_graph.metadata_props)
    assert new_graph.graph.node[0].op_type == "Cast" and list(new_graph.graph.node[0].input) == ["frames"]
    frames = np.random.default_rng(3).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    with OnnxRuntimeRunner(old_style_model) as before, OnnxRuntimeRunner(new) as after:
        assert np.array_equal(before.infer(frames), after.infer(frames))
    assert cli("build-engine", new, "--out", tmp_path / "new.engine")[0] == 0
    code, output = cli("upgrade", new, "--out", tmp_path / "again.onnx")
    assert code != 0 and "nothing to upgrade" in output and not (tmp_path / "again.onnx").exists()


def test_upgrade_refuses_a_graph_it_cannot_rewrite_safely(tmp_path):
    from export.upgrade import cast_uint8_inputs_first

    model = onnx.load(str(_uint8_transpose_graph(tmp_path / "g.onnx")))
    model.graph.node[0].op_type = "Relu"  # not a layout op: the values would change
    del model.graph.node[0].attribute[:]
    with pytest.raises(CscError, match="its path is not layout ops"):
        cast_uint8_inputs_first(model)


def test_the_bundled_model_was_upgraded():
    """The committed default.onnx parses: its frames go straight into a Cast."""
    assert parse_onnx(trt, DEFAULT_MODEL)[0] == []


# -- sidecars -------------------------------------------------------------------------------------------------------

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
    assert back == _sidecar() and back.flavour == "tensorrt", "sidecars before TensorRT-RTX were full TensorRT"
    back.check_matches(engine, "10.3.0", "Orin", "8.7")
    with pytest.raises(CscError) as err:
        back.check_matches(engine, "11.4.0", "NVIDIA GeForce RTX 4090", "8.9")
    text = str(err.value)
    assert "built with TensorRT 10.3.0, running 11.4.0" in text and "sm 8.7" in text and "sm 8.9" in text
    assert "csc-export build-engine model.onnx --out" in text and "--max-batch 4 --flavour tensorrt" in text


def test_rtx_engine_on_a_gpu_its_flavour_cannot_serve_names_the_flavour_that_can(tmp_path):
    engine = tmp_path / "model.engine"
    rtx = _sidecar(flavour="rtx", tensorrt_version="1.7.1.116", gpu_name="", compute_capability="",
                   target_compute_capabilities=list(RTX_DEFAULT_TARGETS))
    rtx.check_matches(engine, "1.7.1.116", "NVIDIA GeForce RTX 5090", "12.0")
    rtx.check_matches(engine, "1.7.1.116", "NVIDIA RTX A6000", "8.6")
    with pytest.raises(CscError) as err:
        rtx.check_matches(engine, "1.7.1.116", "NVIDIA H100 80GB HBM3", "9.0")
    text = str(err.value)
    assert "TensorRT-RTX engine runs on GPUs of compute capability 8.0, 8.6, 8.9, 12.0+" in text
    assert "NVIDIA H100 80GB HBM3 (sm 9.0)" in text and "--flavour tensorrt" in text and "auto-csc[trt]" in text
    with pytest.raises(CscError, match="--flavour rtx --compute-capability 7.5"):
        rtx.check_matches(engine, "1.7.1.116", "NVIDIA GeForce RTX 2080 Ti", "7.5")
    with pytest.raises(CscError, match="built with TensorRT-RTX 1.7.1.116, running 1.8.0"):
        rtx.check_matches(engine, "1.8.0", "NVIDIA GeForce RTX 4090", "8.9")
    assert runs_on(["12.0+"], "12.1") and not runs_on(["12.0+"], "9.0") and runs_on(["7.5"], "7.5")


def test_missing_broken_malformed_and_newer_sidecars(tmp_path):
    engine = tmp_path / "x.engine"
    with pytest.raises(CscError, match="engine has no sidecar"):
        EngineSidecar.read(engine)
    path = EngineSidecar.path_for(engine)
    path.write_text("{not json")
    with pytest.raises(CscError, match="unreadable engine sidecar"):
        EngineSidecar.read(engine)
    good = json.loads(json.dumps(_sidecar().__dict__))
    for broken, message in (({k: v for k, v in good.items() if k != "precision"}, "lacks the key 'precision'"),
                            ({**good, "profiles": []}, "key 'profiles' has a list value"),
                            ({**good, "build_seconds": "fast"}, "key 'build_seconds' has a str value"),
                            ({**good, "flavour": "tensorflow"}, "key 'flavour' is 'tensorflow'")):
        path.write_text(json.dumps(broken))
        with pytest.raises(CscError, match=message):
            EngineSidecar.read(engine)
    path.write_text(json.dumps({**good, "future_field": 1}))
    assert EngineSidecar.read(engine).ignored_keys == ("future_field",)
    path.write_text(json.dumps({**good, "model": {"classes": ["a"], "input_size": [32, 32]}}))
    with pytest.raises(CscError, match="lacks the key 'arch'"):
        EngineSidecar.read(engine).metadata(engine)


# -- what the library itself says about engines it cannot load ------------------------------------------------

def test_deserialisation_failure_names_the_cause_from_the_library(fp32_model, tmp_path):
    """The real TensorRT-RTX runtime, given a file that is not an engine: no "truncated, or another version" guess,
    but its own diagnosis."""
    from runtime.backends.tensorrt import deserialise_failure
    from runtime.backends.cuda import tensorrt_logger

    logger = tensorrt_logger(trt)
    runtime = trt.Runtime(logger)
    data = b"\0" * 4096
    assert runtime.deserialize_cuda_engine(data) is None
    assert "not a whole engine" in deserialise_failure(trt, runtime, data, logger)


def test_a_real_engine_needs_a_gpu_to_deserialise_and_the_library_says_so(fp32_model, tmp_path):
    """What this project found out: TensorRT-RTX builds without a GPU but cannot load the engine without one; the
    runner's message carries the library's own reason."""
    from runtime.backends.tensorrt import deserialise_failure
    from runtime.backends.cuda import gpu_info, tensorrt_logger

    try:
        gpu_info()
    except CscError:
        pass
    else:
        pytest.skip("a GPU is present here: an engine may load (the runner is then checked on it)")
    build_engine(fp32_model, tmp_path / "m.engine", BuildOptions(), flavour="rtx")
    data = (tmp_path / "m.engine").read_bytes()
    logger = tensorrt_logger(trt)
    runtime = trt.Runtime(logger)
    assert runtime.deserialize_cuda_engine(data) is None
    assert "CUDA driver version is insufficient" in deserialise_failure(trt, runtime, data, logger)


def test_tensorrt_names_the_runner_and_builder_call_exist_in_the_real_bindings():
    for name in ("Runtime", "ILogger", "TensorIOMode", "MemoryPoolType", "IProgressMonitor", "ITimingCache",
                 "Builder", "OnnxParser", "ComputeCapability", "EngineInvalidityDiagnostics", "nptype", "DataType"):
        assert hasattr(trt, name), name
    assert hasattr(trt.Runtime, "deserialize_cuda_engine") and hasattr(trt.Runtime, "get_engine_validity")
    for name in ("get_tensor_name", "num_io_tensors", "get_tensor_mode", "get_tensor_shape", "get_tensor_dtype",
                 "get_tensor_profile_shape", "create_execution_context"):
        assert hasattr(trt.ICudaEngine, name), name
    for name in ("set_input_shape", "set_tensor_address", "execute_async_v3"):
        assert hasattr(trt.IExecutionContext, name), name
    assert np.dtype(trt.nptype(trt.DataType.UINT8)) == np.uint8


def test_cuda_python_names_used_by_the_runner():
    from runtime.backends.cuda import cudart

    rt = cudart()
    for name in ("cudaGetDeviceCount", "cudaGetDeviceProperties", "cudaDriverGetVersion", "cudaRuntimeGetVersion",
                 "cudaMallocHost", "cudaMalloc", "cudaFree", "cudaFreeHost", "cudaMemcpyAsync", "cudaStreamCreate",
                 "cudaStreamDestroy", "cudaStreamSynchronize", "cudaStreamBeginCapture", "cudaStreamEndCapture",
                 "cudaGraphInstantiate", "cudaGraphLaunch", "cudaGraphDestroy", "cudaGraphExecDestroy"):
        assert hasattr(rt, name), name
    assert hasattr(rt.cudaMemcpyKind, "cudaMemcpyHostToDevice") and hasattr(rt.cudaMemcpyKind, "cudaMemcpyDeviceToHost")
    assert hasattr(rt.cudaStreamCaptureMode, "cudaStreamCaptureModeThreadLocal")
    assert hasattr(rt.cudaError_t, "cudaErrorInsufficientDriver")


def test_a_copied_engine_finds_its_onnx_file_from_any_folder(checkpoint, tmp_path, monkeypatch):
    """The sidecar recorded the ONNX path as typed and resolved it against the current folder: "build anywhere,
    copy, `csc-export check` on the target" failed from another folder. It is recorded relative to the engine."""
    import shutil

    from export.onnx_export import ExportOptions, export_onnx
    from export.tensorrt import engine_agreement

    build = tmp_path / "build"
    (build / "engines").mkdir(parents=True)
    export_onnx(checkpoint, build / "model.onnx", ExportOptions(batch="1", size=64))
    monkeypatch.chdir(tmp_path)
    engine = Path("build") / "engines" / "model.engine"
    assert cli("build-engine", Path("build") / "model.onnx", "--out", engine)[0] == 0
    assert sidecar_of(engine)["onnx_file"] == "../model.onnx"
    shutil.copytree(build, tmp_path / "target" / "build")  # the folder copied to the target as it is
    flat = tmp_path / "flat"  # or engine, sidecar and ONNX file copied into one folder
    flat.mkdir()
    for f in (engine, Path(f"{engine}.json"), build / "model.onnx"):
        shutil.copy(f, flat)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    copied = tmp_path / "target" / "build" / "engines" / "model.engine"
    assert EngineSidecar.read(copied).onnx_path(copied).resolve() == (tmp_path / "target" / "build" / "model.onnx")
    assert EngineSidecar.read(flat / "model.engine").onnx_path(flat / "model.engine") == flat / "model.onnx"
    (flat / "model.onnx").unlink()
    with pytest.raises(CscError, match="not here \\(looked for"):
        engine_agreement(flat / "model.engine")
