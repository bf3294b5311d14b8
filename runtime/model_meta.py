"""What an exported model tells the runtime about itself, read from the ONNX file's metadata_props.

Written by `csc-export` (Ultralytics-style metadata beside every artefact): the runtime repeats no option, and a
file without it is refused with the list of what would then have to be given by hand.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from runtime.errors import CscError

METADATA_KEY = "auto_csc"


@dataclass
class ModelMetadata:
    classes: list[str]
    input_size: tuple[int, int]  # height, width
    arch: str
    fused: bool = True  # uint8 NHWC BGR in, uint8 class map out
    precision: str = "fp32"
    batch: str = "1"  # "N" or "dynamic"
    input_layout: str = "NHWC uint8 BGR"
    normalisation: dict[str, Any] = field(default_factory=dict)
    pixel_size_um: float = 0.4
    regime: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    checkpoint: str = ""
    outputs: list[str] = field(default_factory=lambda: ["class_map"])

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> ModelMetadata:
        """From ONNX metadata_props (as onnx or onnxruntime expose them)."""
        if METADATA_KEY not in props:
            raise CscError(
                "this ONNX file has no auto-CSC metadata (it was not written by csc-export)", path=source,
                fix="re-export it with `csc-export onnx CKPT --out FILE`; a foreign model would need its classes, "
                    "input size, layout (NHWC uint8 BGR in, class map out) and normalisation given by hand")
        data = json.loads(props[METADATA_KEY])
        data["input_size"] = tuple(data["input_size"])
        return cls(**data)
