"""Layers shared by the U-Nets: the paper's weight init and the upsampling step of its decoder."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def paper_init(module: nn.Module) -> None:
    """Weights N(0, √(2/N)) with N the fan-in (paper §3.1, after He et al.), biases zero."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2× upsampling (paper §2.2); exports to a single ONNX Resize."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")
