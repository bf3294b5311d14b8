"""`vgg16-unet`: the paper's U-Net with a VGG16 encoder (paper §2.2, Fig. 5).

Encoder: the first 12 of VGG16's 13 convolutions — conv1_1 … conv5_2 — with VGG's 2×2 max-pools between its
blocks (4 pools, total stride 16), as the paper says it keeps "the first 12 pretrained convolution layers".
Decoder, per level from the bottom: nearest 2× upsampling → 3×3 conv halving the channels + ReLU →
concatenation with the encoder block of the same resolution → two 3×3 convs + ReLU back to that block's channel
count (paper: "keep the number of channels the same as that in the symmetric encoder"); final 1×1 conv → classes.

Parameter count: 23.3 M, of which 12.35 M are the 12 VGG16 convolutions alone. The paper's 7.48 M cannot hold
12 VGG16 convolutions (even the first 10 have 7.63 M); we keep the paper's stated structure and report the
difference rather than shrink it to match an inconsistent number.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from runtime.errors import CscError
from trainer.models.blocks import paper_init, upsample2x
from trainer.models.registry import register
from trainer.tensor_file import load_tensors

# VGG16 blocks up to conv5_2 and the index of each conv in torchvision's ``features`` Sequential.
VGG16_BLOCKS = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512]]
TORCHVISION_CONV_INDEX = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26]


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True))


class DecoderLevel(nn.Module):
    def __init__(self, cin: int, skip: int):
        super().__init__()
        self.reduce = _conv(cin, cin // 2)
        self.fuse = nn.Sequential(_conv(cin // 2 + skip, skip), _conv(skip, skip))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.reduce(upsample2x(x)), skip], dim=1))


class VGG16UNet(nn.Module):
    def __init__(self, num_classes: int = 3, encoder_weights: str | Path | None = None):
        super().__init__()
        blocks, cin = [], 3
        for widths in VGG16_BLOCKS:
            layers = []
            for cout in widths:
                layers.append(_conv(cin, cout))
                cin = cout
            blocks.append(nn.Sequential(*layers))
        self.encoder = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(2, 2)
        skips = [w[-1] for w in VGG16_BLOCKS[:-1]]  # 64, 128, 256, 512
        levels, cin = [], VGG16_BLOCKS[-1][-1]
        for skip in reversed(skips):
            levels.append(DecoderLevel(cin, skip))
            cin = skip
        self.decoder = nn.ModuleList(levels)
        self.head = nn.Conv2d(cin, num_classes, 1)
        paper_init(self)
        if encoder_weights is not None:
            load_vgg16_encoder(self, encoder_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for level in self.decoder:
            x = level(x, skips.pop())
        return self.head(x)

    def encoder_convs(self) -> list[nn.Conv2d]:
        return [layer[0] for block in self.encoder for layer in block]


def load_vgg16_encoder(model: VGG16UNet, path: str | Path) -> None:
    """Copy ImageNet weights from a local torchvision VGG16 state dict (``features.N.weight/bias``).

    Nothing is downloaded: save one elsewhere with ``torch.save(torchvision.models.vgg16(weights=...)
    .state_dict(), path)`` and bring the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CscError("encoder weights file not found", path=path,
                       fix="save torchvision's vgg16 state_dict to a file and pass it, or omit --encoder-weights")
    try:
        state = load_tensors(path)
    except ValueError as err:
        raise CscError(f"not a readable torch state dict ({err})", path=path,
                       fix="save torchvision's vgg16 state_dict with torch.save") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    convs = model.encoder_convs()
    for conv, index in zip(convs, TORCHVISION_CONV_INDEX):
        key = f"features.{index}"
        try:
            weight, bias = state[f"{key}.weight"], state[f"{key}.bias"]
        except KeyError:
            raise CscError(f"missing {key}.weight/bias: not torchvision's VGG16 layout", path=path) from None
        if weight.shape != conv.weight.shape:
            raise CscError(f"{key}.weight has shape {tuple(weight.shape)}, expected {tuple(conv.weight.shape)}",
                           path=path, fix="use a VGG16 (not VGG11/19) state dict")
        with torch.no_grad():
            conv.weight.copy_(weight)
            conv.bias.copy_(bias)


@register("vgg16-unet", stride=16, summary="the paper's U-Net: first 12 VGG16 convs + nearest-upsampling decoder")
def vgg16_unet(num_classes: int = 3, encoder_weights: str | Path | None = None) -> nn.Module:
    return VGG16UNet(num_classes, encoder_weights)
