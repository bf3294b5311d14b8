"""What an exported model tells the runtime about itself, read from the ONNX file's metadata_props.

Written by `csc-export` (Ultralytics-style metadata beside every artefact): the runtime repeats no option, and a
file without it is refused, saying how to re-export it.

Read forward-compatibly: keys a newer exporter added are ignored and listed in ``ignored_keys`` (the CLIs show
them as a note); a key that is missing or has the wrong type is a one-line error naming it.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from runtime.classes import DEFAULT_PIXEL_SIZE_UM
from runtime.errors import CscError

METADATA_KEY = "auto_csc"
PRECISIONS = ("fp32", "fp16", "int8")
REEXPORT = "re-export the model with `csc-export onnx CKPT --out FILE`"

T = TypeVar("T")


def load_onnx(path: str | Path, *, external_data: bool = True) -> Any:
    """The ONNX model in ``path`` (an ``onnx.ModelProto``). A missing file, or one that is no ONNX model (junk,
    a truncated download), is one line naming the file: protobuf's DecodeError names neither."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise CscError("ONNX file not found", path=path, fix="pass an .onnx file from `csc-export onnx`")
    try:
        return onnx.load(str(path), load_external_data=external_data)
    except Exception as err:  # protobuf raises DecodeError and others for a foreign or damaged file
        raise CscError(f"not a readable ONNX file ({type(err).__name__})", path=path,
                       fix="pass an .onnx file from `csc-export onnx` (a truncated copy: copy it again)") from None


def _conforms(value: Any, hint: Any) -> bool:
    """Whether a JSON value has the type a dataclass field declares (the few types our artefacts use)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin is typing.Union or type(hint).__name__ == "UnionType":
        return any(_conforms(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_conforms(v, a) for v, a in zip(value, args))
        return all(_conforms(v, args[0]) for v in value) if args else True
    if origin is dict:
        return isinstance(value, dict) and all(_conforms(k, args[0]) and _conforms(v, args[1])
                                               for k, v in value.items()) if args else isinstance(value, dict)
    return isinstance(value, hint)


def fields_from_json(cls: type[T], data: Any, what: str, source: str | Path, fix: str) -> tuple[T, list[str]]:
    """``cls(**data)`` with every key checked: (instance, keys it does not know). A missing required key or a
    value of the wrong type raises one CscError naming the key; unknown keys are left out (forward compatibility:
    a newer exporter may add some)."""
    if not isinstance(data, dict):
        raise CscError(f"{what} is not a JSON object", path=source, fix=fix)
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for name, f in known.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if name not in data:
            if required:
                raise CscError(f"{what} lacks the key {name!r}", path=source, fix=fix)
            continue
        if not _conforms(data[name], hints[name]):
            raise CscError(f"{what} key {name!r} has a {type(data[name]).__name__} value {data[name]!r:.60}, "
                           f"expected {_type_name(hints[name])}", path=source, fix=fix)
    ignored = sorted(k for k in data if k not in known)
    return cls(**{k: v for k, v in data.items() if k in known}), ignored


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) if typing.get_origin(hint) is None else str(hint).replace("typing.", "")


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
    pixel_size_um: float = DEFAULT_PIXEL_SIZE_UM
    regime: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    checkpoint: str = ""
    outputs: list[str] = field(default_factory=lambda: ["class_map"])
    # Per class, the largest share of an image it covered in the training data: frames far above it look unlike
    # anything the model learnt from (runtime/pipeline/domain.py). Empty for models exported before it was recorded.
    class_fractions: dict[str, float] = field(default_factory=dict)
    # The optics of the training images (runtime.data.modality: stained, brightfield, phase, dic, fluorescence): frames
    # of other optics are warned about. Empty where the training data did not record it.
    modalities: list[str] = field(default_factory=list)
    # Per class, the median diameter (px at the model's scale) of the training cells: the size a calibration
    # brings the frames' cells to (runtime/counting/calibration.py). Empty where not recorded: the typical size is used.
    cell_diameter_px: dict[str, float] = field(default_factory=dict)
    # Keys of the file this reader does not know (from a newer exporter); not a field, so never written back.
    ignored_keys: ClassVar[tuple[str, ...]] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @property
    def note(self) -> str:
        """A line for the user when keys were ignored, else ''."""
        if not self.ignored_keys:
            return ""
        return f"metadata keys from a newer exporter ignored: {', '.join(self.ignored_keys)}"

    @classmethod
    def from_dict(cls, data: Any, source: str | Path = "model") -> ModelMetadata:
        """From the decoded JSON (the ONNX property, or an engine sidecar's ``model``), checked key by key."""
        meta, ignored = fields_from_json(cls, data, "auto-CSC metadata", source, REEXPORT)
        meta.input_size = tuple(meta.input_size)
        if min(meta.input_size) < 1:
            raise CscError(f"auto-CSC metadata key 'input_size' must be two positive sizes, got {list(meta.input_size)}",
                           path=source, fix=REEXPORT)
        if meta.precision not in PRECISIONS:
            raise CscError(f"auto-CSC metadata key 'precision' is {meta.precision!r}, not one of {', '.join(PRECISIONS)}",
                           path=source, fix=REEXPORT)
        if meta.batch != "dynamic" and not (meta.batch.isdigit() and int(meta.batch) >= 1):
            raise CscError(f"auto-CSC metadata key 'batch' is {meta.batch!r}, not a positive number or 'dynamic'",
                           path=source, fix=REEXPORT)
        meta.ignored_keys = tuple(ignored)
        return meta

    @classmethod
    def from_props(cls, props: dict[str, str], source: str | Path = "model") -> ModelMetadata:
        """From ONNX metadata_props (as onnx or onnxruntime expose them)."""
        if METADATA_KEY not in props:
            raise CscError(
                "this ONNX file has no auto-CSC metadata (it was not written by csc-export)", path=source,
                fix="re-export it from its checkpoint with `csc-export onnx CKPT --out FILE`: the runtime reads a "
                    "model's classes, input size, layout and normalisation from that metadata, and takes no "
                    "model without it")
        try:
            data = json.loads(props[METADATA_KEY])
        except json.JSONDecodeError as err:
            raise CscError(f"auto-CSC metadata is not valid JSON ({err.msg} at character {err.pos})", path=source,
                           fix=REEXPORT) from None
        return cls.from_dict(data, source)
