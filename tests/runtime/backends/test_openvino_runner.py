"""OpenVINO serves the same ONNX graph as ONNX Runtime: the same class maps (checked pixel by pixel, like the other
backends), the same batching rules, and `--backend auto` picks it only where it ran the model faster here."""
import numpy as np
import pytest

import runtime.backends.select as select
from runtime.backends import open_runner
from runtime.backends.onnxruntime import OnnxRuntimeRunner
from runtime.backends.openvino import OpenVinoRunner
from runtime.cli.run import DEFAULT_MODEL
from runtime.backends.compare import class_map_agreement
from runtime.errors import CscError
from runtime.data.simulator import SimConfig, SimulatedMicroscope

pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'auto-csc[openvino]')")


def demo_frames(n=4):
    microscope = SimulatedMicroscope(SimConfig(mode="mixed", height=512, width=512), seed=9)
    return np.stack([microscope.frame(i).image for i in range(n)])


def test_class_maps_agree_with_onnx_runtime_pixel_by_pixel():
    frames = demo_frames()
    with OpenVinoRunner(DEFAULT_MODEL, threads=1) as ov, OnnxRuntimeRunner(DEFAULT_MODEL, threads=1) as ort:
        assert ov.metadata == ort.metadata and ov.host_threads == 1 and "OpenVINO" in ov.detail
        assert class_map_agreement(ov, ort, frames) >= 0.999
        one = ov.infer(frames[:1])
        again = ov.infer(frames[1:2])
        assert not np.array_equal(one, again), "each call's class map is its own (the request's buffer is reused)"
        # The bundled graph has a fixed batch of 1: three frames run one by one.
        assert np.array_equal(ov.infer(frames[:3]), np.concatenate([ov.infer(frames[i : i + 1]) for i in range(3)]))


def test_auto_takes_the_cpu_backend_that_ran_faster_here_and_onnx_runtime_where_it_has_a_gpu(monkeypatch):
    """Neither CPU backend is the faster one on every CPU (OpenVINO was 1.3× ONNX Runtime on one VM, 0.7× on
    another): `auto` measures both on the model, once per process, and takes the faster, saying so."""
    rates = select.cpu_trial(DEFAULT_MODEL, None)
    assert rates["ort"] > 0 and rates["openvino"] > 0, "both measured, for real"
    assert select.cpu_trial(DEFAULT_MODEL, None) == rates, "measured once per model file in a process"
    for trial, kind, name in (({"openvino": 90.0, "ort": 60.0}, OpenVinoRunner, "OpenVINO"),
                              ({"openvino": 35.0, "ort": 52.0}, OnnxRuntimeRunner, "ONNX Runtime")):
        monkeypatch.setattr(select, "cpu_trial", lambda model, threads, trial=trial: trial)
        runner, reason = open_runner(DEFAULT_MODEL, "auto")
        assert isinstance(runner, kind) and reason.startswith(f"{name}, the faster CPU backend here"), reason
        assert f"{max(trial.values()):.0f} FPS against" in reason and f"{min(trial.values()):.0f} in a" in reason
    unfused = {"ort": 50.0, "why_not_openvino": "cannot serve it: x"}
    monkeypatch.setattr(select, "cpu_trial", lambda model, threads: unfused)
    runner, reason = open_runner(DEFAULT_MODEL, "auto")
    assert isinstance(runner, OnnxRuntimeRunner) and "OpenVINO cannot serve it" in reason
    monkeypatch.setattr(select, "ort_has_gpu", lambda: True)
    runner, reason = open_runner(DEFAULT_MODEL, "auto")
    assert isinstance(runner, OnnxRuntimeRunner) and "on the GPU" in reason
    assert isinstance(open_runner(DEFAULT_MODEL, "openvino")[0], OpenVinoRunner)
    assert isinstance(open_runner(DEFAULT_MODEL, "ort")[0], OnnxRuntimeRunner)


def test_a_runner_beside_a_live_one_opens_its_backend_without_a_trial(monkeypatch):
    """`csc-serve`'s upload runner beside a live run: the live runner's CPU backend again, never `auto`'s trial
    (timed on cores the run holds, it could pick the other backend); a TensorRT run keeps what was asked."""
    def no_trial(model, threads):
        raise AssertionError("a second trial")

    monkeypatch.setattr(select, "cpu_trial", no_trial)
    for kind in (OnnxRuntimeRunner, OpenVinoRunner):
        assert isinstance(open_runner(DEFAULT_MODEL, select.same_backend(kind(DEFAULT_MODEL), "auto"))[0], kind)

    class Engine:
        name = "tensorrt"

    assert select.same_backend(Engine(), "auto") == "auto"



@pytest.mark.parametrize("cut", [None, 100_000])
def test_a_file_that_is_no_onnx_model_is_one_line_as_with_onnx_runtime(tmp_path, cut):
    """Junk, or a truncated copy, raised protobuf's DecodeError as a traceback."""
    model = tmp_path / "bad.onnx"
    model.write_bytes(b"junk\n" if cut is None else DEFAULT_MODEL.read_bytes()[:cut])
    with pytest.raises(CscError, match=r"not a readable ONNX file \(DecodeError\)"):
        OpenVinoRunner(model).activate()

def test_errors_name_the_fix(tmp_path, monkeypatch):
    with pytest.raises(CscError, match="model file not found"):
        OpenVinoRunner(tmp_path / "none.onnx").activate()
    with pytest.raises(CscError, match="cannot run a TensorRT engine"):
        open_runner(tmp_path / "m.engine", "openvino")
    import builtins

    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    with pytest.raises(CscError, match=r"OpenVINO is not installed .*auto-csc\[openvino\]"):
        OpenVinoRunner(DEFAULT_MODEL).activate()
