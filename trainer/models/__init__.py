"""A registry of segmentation architectures (after segmentation_models_pytorch's encoders and timm's
``@register_model``): each registers itself under a name; ``csc-train --arch NAME`` and the ONNX metadata use it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn as nn


@dataclass(frozen=True)
class ArchSpec:
    name: str
    build: Callable[..., nn.Module]
    stride: int  # input height and width must be multiples of this
    summary: str


_REGISTRY: dict[str, ArchSpec] = {}


def register(name: str, stride: int, summary: str) -> Callable:
    def wrap(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} registered twice")
        _REGISTRY[name] = ArchSpec(name, build, stride, summary)
        return build

    return wrap


def get_arch(name: str) -> ArchSpec:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; registered: {', '.join(sorted(_REGISTRY))}") from None


def available() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def build_model(name: str, num_classes: int = 3, **kwargs) -> nn.Module:
    """A fresh model of a registered architecture; its ``arch`` attribute names it."""
    model = get_arch(name).build(num_classes=num_classes, **kwargs)
    model.arch = name
    return model


def _load_builtin() -> None:
    from trainer.models import light_unet, vgg16_unet  # noqa: F401 - importing registers them
