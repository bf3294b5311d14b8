"""auto-CSC runtime: torch-free sources, counting, backends and the `csc-run` pipeline.

Importable with only numpy and OpenCV installed, because edge boxes (Jetson, RTX
workstations) carry TensorRT or ONNX Runtime but not PyTorch.
"""
from runtime.version import __version__

__all__ = ["__version__"]
