"""auto-CSC benchmarks: the scripts and `csc-bench` command that produce the README's numbers."""
from runtime.version import __version__

__all__ = ["__version__"]
