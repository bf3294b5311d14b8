"""Model cost: parameters and FLOPs (multiply-adds × 2) of the convolutions, measured by running the model."""
from __future__ import annotations

import torch
import torch.nn as nn


@torch.no_grad()
def count_flops(model: nn.Module, size: int, batch: int = 1) -> int:
    """FLOPs of one forward pass at ``size``×``size``: 2 × Cin/groups × k² × Cout × Hout × Wout per conv.

    Convolutions dominate a U-Net; pooling, ReLU, upsampling and concatenation are not multiply-adds and are left
    out, as FLOP counts in the literature do.
    """
    total = 0

    def hook(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        total += 2 * (module.in_channels // module.groups) * k * output.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(batch, 3, size, size))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total
