"""auto-CSC export: ONNX with fused pre/post-processing, precision conversion, TensorRT engines."""
from runtime.version import __version__

__all__ = ["__version__"]
