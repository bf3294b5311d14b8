"""auto-CSC benchmarks: the scripts and `csc-bench` command that produce the README's numbers."""
from benchmarks.moved import install
from runtime.version import __version__

install()  # the flat module names from before the rooms (`python -m benchmarks.counting_speed`) still run

__all__ = ["__version__"]
