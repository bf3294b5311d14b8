"""Where TensorRT and the CUDA runtime come from, imported only when a GPU path is used."""
from __future__ import annotations

from types import ModuleType

from runtime.errors import CscError

INSTALL_HINT = ("pip install 'auto-csc[trt]' on a machine with an NVIDIA GPU and driver "
                "(on a Jetson use JetPack's TensorRT: sudo apt install python3-libnvinfer)")


def import_tensorrt() -> ModuleType:
    try:
        import tensorrt
    except ImportError:
        raise CscError("TensorRT is not installed", fix=INSTALL_HINT) from None
    return tensorrt


def cudart() -> ModuleType:
    """NVIDIA cuda-python's runtime bindings (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise CscError("cuda-python is not installed", fix=INSTALL_HINT) from None
    return runtime


def gpu_info() -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of device 0; a CscError when there is no usable GPU."""
    rt = cudart()
    err, count = rt.cudaGetDeviceCount()
    if int(err) != 0 or not count:
        raise CscError(f"no usable NVIDIA GPU ({getattr(err, 'name', err)})", fix=INSTALL_HINT)
    err, prop = rt.cudaGetDeviceProperties(0)
    name = prop.name.decode(errors="replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
    return name, f"{prop.major}.{prop.minor}"
