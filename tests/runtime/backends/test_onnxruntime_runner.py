"""ONNX Runtime runner: which execution providers it asks for, and what it reports."""
import numpy as np
import onnxruntime as ort

from runtime.backends.onnxruntime import OnnxRuntimeRunner, choose_providers
from runtime.cli.run import DEFAULT_MODEL


def test_cuda_provider_is_chosen_when_onnxruntime_gpu_has_it():
    gpu_build = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(gpu_build) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(gpu_build, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(["CPUExecutionProvider"], ["CUDAExecutionProvider"]) == ["CPUExecutionProvider"]


def test_the_session_gets_the_chosen_providers(monkeypatch):
    """With onnxruntime-gpu's provider list, the session is asked for CUDA first (the CPU build here then runs it on
    the CPU provider, which is what the session reports back)."""
    asked = []
    real_session = ort.InferenceSession

    def session(path, options, providers):
        asked.append(providers)
        return real_session(path, options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", session)
    with OnnxRuntimeRunner(DEFAULT_MODEL, threads=1) as runner:
        assert asked == [["CUDAExecutionProvider", "CPUExecutionProvider"]]
        assert runner.detail.startswith("CPUExecutionProvider, 1 threads") and runner.host_threads == 1
        out = runner.infer(np.zeros((1, 512, 512, 3), np.uint8))
        assert out.shape == (1, 512, 512) and out.dtype == np.uint8
        assert (runner.min_batch, runner.max_batch) == (1, 1) and runner.notes == []
