"""Camera frame → network input, as torch ops, shared by training and the exported ONNX graph.

Frames are uint8 BGR NHWC (what OpenCV and cameras give). The network sees float RGB NCHW normalised with
ImageNet statistics (the VGG16 encoder was pretrained with them). Training and the fused export both call this
module, so the runtime's uint8-in graph sees exactly what the network was trained on.
"""
from __future__ import annotations

import torch
import torch.nn as nn

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


class Preprocess(nn.Module):
    def __init__(self, mean_rgb=IMAGENET_MEAN_RGB, std_rgb=IMAGENET_STD_RGB):
        super().__init__()
        # Constants folded for the BGR input: channel c of the input is RGB channel 2 - c.
        scale = torch.tensor([1.0 / (255.0 * s) for s in std_rgb], dtype=torch.float32).view(1, 3, 1, 1)
        shift = torch.tensor([-m / s for m, s in zip(mean_rgb, std_rgb)], dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("shift", shift, persistent=False)
        self.mean_rgb, self.std_rgb = tuple(mean_rgb), tuple(std_rgb)

    def forward(self, frames_bgr_nhwc: torch.Tensor) -> torch.Tensor:
        x = frames_bgr_nhwc.permute(0, 3, 1, 2).flip(1).to(self.scale.dtype)
        return x * self.scale + self.shift
