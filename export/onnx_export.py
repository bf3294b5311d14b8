"""Checkpoint → ONNX: fused pre/post-processing, batch choice, precision, metadata (`csc-export onnx`).

Fused (default): input ``frames`` uint8 NHWC BGR, output ``class_map`` uint8 (ArgMax in the graph), optionally
``probabilities``; the runtime moves one byte per pixel each way. ``--no-fuse``: float NCHW ``input`` → ``logits``.
Precision is decided here, once, for every runtime (TensorRT 11 reads it from the file; see export/precision.py).
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx
import torch
import torch.nn as nn

from export.targets import validate
from runtime.classes import DEFAULT_PIXEL_SIZE_UM
from runtime.errors import CscError
from runtime.io.imageio import atomic_path
from runtime.backends.engine_sidecar import sha256
from runtime.backends.model_meta import METADATA_KEY, PRECISIONS, ModelMetadata
from runtime.version import __version__
from trainer.checkpoint import model_from_checkpoint
from trainer.models import get_arch
from trainer.preprocess import Preprocess

OPSET = 17


class FusedSegmenter(nn.Module):
    """uint8 NHWC BGR frames → uint8 class map (and softmax probabilities when asked)."""

    def __init__(self, model: nn.Module, probabilities: bool = False, half: bool = False):
        super().__init__()
        self.pre = Preprocess()
        self.model = model
        self.probabilities = probabilities
        self.half_precision = half

    def forward(self, frames: torch.Tensor):
        # Cast before the layout ops: TensorRT takes a UINT8 network input only straight into a Cast (its
        # Transpose/Slice refuse UINT8), so the channel flip and NHWC→NCHW transpose act on float. Exact: every
        # uint8 value is a float32, and Preprocess's own cast then does nothing.
        x = self.pre(frames.to(self.pre.scale.dtype))
        if self.half_precision:
            x = x.half()
        logits = self.model(x)
        class_map = logits.argmax(1).to(torch.uint8)
        if self.probabilities:
            return class_map, logits.float().softmax(1)
        return class_map


class PlainSegmenter(nn.Module):
    """float NCHW normalised input → logits (the `--no-fuse` graph)."""

    def __init__(self, model: nn.Module, half: bool = False):
        super().__init__()
        self.model = model
        self.half_precision = half

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half() if self.half_precision else x).float()


@dataclass
class ExportOptions:
    batch: str = "1"  # "N" or "dynamic"
    size: int = 512
    fuse: bool = True
    probabilities: bool = False
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.batch != "dynamic" and not (self.batch.isdigit() and int(self.batch) >= 1):
            raise CscError(f"--batch must be a positive number or 'dynamic', got {self.batch!r}")
        if self.size < 1:
            raise CscError(f"--size must be a positive number of pixels, got {self.size}")
        if self.precision not in PRECISIONS:
            raise CscError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


def export_onnx(checkpoint: str | Path, out: str | Path, options: ExportOptions, *, arch: str | None = None,
                calib: str | Path | None = None) -> ModelMetadata:
    """Write the ONNX file (atomically) and return the metadata written into it."""
    validate("onnx", {**asdict(options), "calib": calib, "checkpoint": checkpoint, "out": out})
    out = Path(out)
    model, meta = model_from_checkpoint(checkpoint, arch)
    stride = get_arch(meta["arch"]).stride
    if options.size % stride:
        raise CscError(f"--size {options.size} must be a multiple of {stride} for {meta['arch']}")
    model.eval()
    half = options.precision == "fp16"
    if half:
        model.half()
    wrapper = FusedSegmenter(model, options.probabilities, half) if options.fuse else PlainSegmenter(model, half)
    metadata = ModelMetadata(
        classes=list(meta["classes"]), input_size=(options.size, options.size), arch=meta["arch"], fused=options.fuse,
        precision=options.precision, batch=options.batch,
        input_layout="NHWC uint8 BGR" if options.fuse else "NCHW float32 RGB, normalised",
        normalisation={"mean_rgb": list(wrapper.pre.mean_rgb) if options.fuse else list(Preprocess().mean_rgb),
                       "std_rgb": list(Preprocess().std_rgb), "scale": 1 / 255},
        pixel_size_um=float(meta["config"].get("pixel_size_um", DEFAULT_PIXEL_SIZE_UM)), regime=meta.get("regime", ""),
        metrics={k: meta["metrics"][k] for k in ("miou", "fwiou", "dice") if k in meta.get("metrics", {})},
        class_fractions=dict(meta["config"].get("class_fractions", {})),
        modalities=list(meta["config"].get("modalities", [])),
        cell_diameter_px=dict(meta["config"].get("cell_diameter_px", {})),
        version=__version__, checkpoint=f"{Path(checkpoint).name} sha256:{sha256(checkpoint)[:16]}",
        outputs=(["class_map", "probabilities"] if options.probabilities else ["class_map"]) if options.fuse else ["logits"],
    )
    graph = _trace(wrapper, options)
    if options.precision == "int8":
        from export.precision import quantize_int8

        graph = quantize_int8(graph, calib, metadata)
    _write_metadata(graph, metadata)
    with atomic_path(out) as tmp:
        onnx.save(graph, tmp)
    return metadata


def _trace(wrapper: nn.Module, options: ExportOptions) -> onnx.ModelProto:
    """torch.export-based ONNX export. A batch of 2 is traced for a dynamic batch: torch.export specialises a
    dimension whose example size is 1."""
    batch = 2 if options.batch == "dynamic" else int(options.batch)
    s = options.size
    example = (torch.zeros(batch, s, s, 3, dtype=torch.uint8) if options.fuse else torch.zeros(batch, 3, s, s))
    names_in = ["frames"] if options.fuse else ["input"]
    names_out = (["class_map", "probabilities"] if options.probabilities else ["class_map"]) if options.fuse else ["logits"]
    kwargs = {}
    if options.batch == "dynamic":
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=256)},)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(wrapper, (example,), dynamo=True, opset_version=OPSET, input_names=names_in,
                                    output_names=names_out, verbose=False, **kwargs)
    if program is None:
        raise CscError("the ONNX exporter returned no program")
    program.optimize()
    return program.model_proto


def _write_metadata(graph: onnx.ModelProto, metadata: ModelMetadata) -> None:
    del graph.metadata_props[:]
    flat = {METADATA_KEY: metadata.to_json(), "classes": ",".join(metadata.classes), "arch": metadata.arch,
            "precision": metadata.precision, "auto_csc_version": metadata.version}
    for key, value in flat.items():
        graph.metadata_props.add(key=key, value=value)
    graph.producer_name, graph.producer_version = "auto-csc", metadata.version
