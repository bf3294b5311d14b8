"""Inference backends behind one runner interface (after Polygraphy's runners): activate, infer, deactivate."""
from runtime.backends.base import Runner
from runtime.backends.select import open_runner

__all__ = ["Runner", "open_runner"]
