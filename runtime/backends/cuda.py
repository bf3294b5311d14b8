"""Where TensorRT and the CUDA runtime come from, imported only when a GPU path is used.

Two TensorRT flavours share one Python API (Builder, OnnxParser, Runtime, execution contexts):
- ``tensorrt``: full TensorRT — 10.x from JetPack 6 on a Jetson, 10.x/11.x from pip on x86 (datacenter and
  workstation GPUs). It builds on, and for, the GPU it runs on.
- ``rtx``: TensorRT for RTX (module ``tensorrt_rtx``, pip ``tensorrt-rtx-cu12``, ~95 MB) for GeForce / RTX PRO
  GPUs. It builds ahead of time without a GPU; the engine is specialised on the RTX GPU when first loaded.
"""
from __future__ import annotations

import importlib
import re
from types import ModuleType

from runtime.errors import CscError

FLAVOURS = ("tensorrt", "rtx")
MODULES = {"tensorrt": "tensorrt", "rtx": "tensorrt_rtx"}
LABELS = {"tensorrt": "TensorRT", "rtx": "TensorRT-RTX"}
INSTALL = {
    "tensorrt": "pip install 'auto-csc[trt]' on an x86 box with an NVIDIA GPU (on a Jetson use JetPack's TensorRT: "
                "sudo apt install python3-libnvinfer)",
    "rtx": "pip install 'auto-csc[rtx]' (TensorRT for RTX; builds without a GPU, runs on RTX GPUs)",
}
CUDA_PYTHON_HINT = "pip install 'cuda-python>=12.6,<13' (12.x runs on every driver from R525 and on JetPack 6)"


def import_tensorrt(flavour: str = "tensorrt") -> ModuleType:
    """The TensorRT module of a flavour, or a CscError saying how to install it."""
    if flavour not in MODULES:
        raise CscError(f"unknown TensorRT flavour {flavour!r}", fix=f"use one of {', '.join(FLAVOURS)}")
    try:
        return importlib.import_module(MODULES[flavour])
    except ImportError:
        raise CscError(f"{LABELS[flavour]} is not installed (module {MODULES[flavour]})", fix=INSTALL[flavour]) from None


def installed_flavours() -> list[str]:
    """The flavours whose module imports here, full TensorRT first."""
    found = []
    for flavour in FLAVOURS:
        try:
            import_tensorrt(flavour)
        except CscError:
            continue
        found.append(flavour)
    return found


def cudart() -> ModuleType:
    """NVIDIA cuda-python's runtime bindings (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise CscError("cuda-python is not installed", fix=CUDA_PYTHON_HINT) from None
    return runtime


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def cuda_error(rt: ModuleType, err, what: str) -> CscError:
    """A CscError for a failed CUDA runtime call that names the real cause where it is a known one: no driver, or
    a driver older than the CUDA that cuda-python was built for (cuda-python 13 needs R580+; JetPack 6 has 12.6)."""
    name = getattr(err, "name", str(err))
    if name == "cudaErrorInsufficientDriver":
        _, driver = rt.cudaDriverGetVersion()
        _, runtime = rt.cudaRuntimeGetVersion()
        if not driver:
            return CscError(f"{what}: no NVIDIA driver found", fix="install the NVIDIA driver (or run the .onnx model with --backend ort)")
        major = runtime // 1000
        return CscError(f"{what}: driver too old for cuda-python {major}: the driver supports CUDA "
                        f"{_cuda_version(driver)}, cuda-python needs {_cuda_version(runtime)}",
                        fix=f"install cuda-python<{major}: {CUDA_PYTHON_HINT}")
    return CscError(f"{what} failed: {name}", fix="check the GPU driver and free memory (nvidia-smi)")


def gpu_info() -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of device 0; a CscError naming the cause when there is no
    usable GPU."""
    rt = cudart()
    try:
        err, count = rt.cudaGetDeviceCount()
    except Exception as exc:  # some cuda-python builds raise instead of returning an error when libcuda is missing
        raise CscError(f"no usable NVIDIA GPU: cuda-python could not reach a driver ({type(exc).__name__}: {exc})",
                       fix="install the NVIDIA driver (or run the .onnx model with --backend ort)") from None
    if int(err) != 0:
        raise cuda_error(rt, err, "no usable NVIDIA GPU")
    if not count:
        raise CscError("no NVIDIA GPU found", fix="use --backend ort, or run on a machine with an NVIDIA GPU")
    err, prop = rt.cudaGetDeviceProperties(0)
    if int(err) != 0:
        raise cuda_error(rt, err, "reading the GPU's properties")
    name = prop.name.decode(errors="replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
    return name, f"{prop.major}.{prop.minor}"


def _plain(message: str) -> str:
    """A TensorRT log line without its API prefix and source location: "ITensor::getDimensions: Error Code 4: API
    Usage Error (node_permute: first input has type UInt8 … In checkType at /_src/…:456)" → "node_permute: …";
    a CUDA failure → "cudaError 35: CUDA driver version is insufficient for CUDA runtime version"."""
    cuda = re.search(r"cudaError \d+: [^)]*", message)
    if cuda:
        return cuda.group(0).strip()
    found = re.search(r"\((.*?)\s+In \w+ at [^)]*\)", message, re.S)
    if found:
        return found.group(1)
    return re.sub(r"\s*\(?In \w+ at /\S+:\d+\)?", "", message).strip()


def tensorrt_logger(trt: ModuleType):
    """A TensorRT logger that keeps warnings and errors instead of printing them: the CLIs put the relevant ones
    in their one-line error (a deserialisation failure's real cause is only in this log), and a build without a
    GPU does not litter the terminal with the library's CUDA probing."""

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.messages: list[tuple[object, str]] = []

        def log(self, severity, msg):
            if severity <= trt.ILogger.Severity.WARNING:
                self.messages.append((severity, msg))

        def errors(self) -> list[str]:
            """The errors logged, each once, in plain words."""
            return list(dict.fromkeys(_plain(m) for s, m in self.messages if s <= trt.ILogger.Severity.ERROR))

    return Logger()
