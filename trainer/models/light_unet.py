"""`light-unet`: a U-Net for CPUs and small Jetsons, same interface and classes as `vgg16-unet`.

What makes it light, each chosen for a 2-core CPU at 512×512 (see README for the measurements):
- a stride-2 stem: the encoder never runs at full resolution, where a U-Net spends most of its FLOPs;
- depthwise-separable 3×3 convs (MobileNet style) with BatchNorm (folded into the convs at export);
- narrow widths (16–128 channels) and nearest-neighbour upsampling as in the paper's decoder;
- logits at half resolution, upsampled 2× (bilinear) at the end: 3 channels are cheap to upsample.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainer.models.blocks import paper_init, upsample2x
from trainer.models.registry import register


class SeparableConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(
            nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False),
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=True),
            nn.Conv2d(cin, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class LightUNet(nn.Module):
    def __init__(self, num_classes: int = 3, widths: tuple[int, ...] = (16, 32, 64, 96, 128)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        self.encoder = nn.ModuleList(
            [SeparableConv(widths[0], widths[0])]
            + [nn.Sequential(SeparableConv(a, b, stride=2), SeparableConv(b, b)) for a, b in zip(widths, widths[1:])]
        )
        self.decoder = nn.ModuleList(
            [SeparableConv(b + a, a) for a, b in zip(reversed(widths[:-1]), reversed(widths[1:]))]
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        paper_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        x = self.stem(x)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for block in self.decoder:
            x = block(torch.cat([upsample2x(x), skips.pop()], dim=1))
        return F.interpolate(self.head(x), size=size, mode="bilinear", align_corners=False)


@register("light-unet", stride=32, summary="CPU/edge U-Net: stride-2 stem, separable convs, 16–128 channels")
def light_unet(num_classes: int = 3) -> nn.Module:
    return LightUNet(num_classes)
