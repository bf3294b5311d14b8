"""A registry of segmentation architectures (after segmentation_models_pytorch's encoders and timm's
``@register_model``): each registers itself under a name; ``csc-train --arch NAME`` and the ONNX metadata use it.
"""
from __future__ import annotations

import torch.nn as nn

from trainer.models import light_unet, vgg16_unet  # noqa: F401 - importing registers them
from trainer.models.registry import _REGISTRY, ArchSpec, register

__all__ = ["ArchSpec", "available", "build_model", "get_arch", "register"]


def get_arch(name: str) -> ArchSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; registered: {', '.join(sorted(_REGISTRY))}") from None


def available() -> list[str]:
    return sorted(_REGISTRY)


def build_model(name: str, num_classes: int = 3, **kwargs) -> nn.Module:
    """A fresh model of a registered architecture; its ``arch`` attribute names it."""
    model = get_arch(name).build(num_classes=num_classes, **kwargs)
    model.arch = name
    return model

