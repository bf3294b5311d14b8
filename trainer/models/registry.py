"""The registry the architectures add themselves to (``@register``); `trainer.models` reads it. Kept below both:
an architecture's module takes ``register`` from here, not from the package that is importing it."""
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
