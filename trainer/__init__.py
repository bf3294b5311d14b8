"""auto-CSC trainer: auto-labels, the U-Net registry, losses, metrics and the paper's three regimes.

torch is imported by the modules that need it, not here, so torch-free parts (auto-labelling) stay light.
"""
from runtime.version import __version__

__all__ = ["__version__"]
