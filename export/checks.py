"""Checks run after every export and by `csc-export check` (comparators apart from runners, as Polygraphy does).

1. onnx.checker; 2. auto-CSC metadata present and well-formed; 3. a real TensorRT ONNX parser (full TensorRT or
TensorRT-RTX, whichever is installed) takes the graph — types included, which an operator list cannot see; only
where no TensorRT is installed, every node and attribute is checked against TensorRT 10's operator list (kept as
data, with its source) and the check says so; 4. ONNX Runtime against the FP32 PyTorch checkpoint on frames:
class-map agreement and max logit difference.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from export.frames import check_frames
from export.tensorrt import parse_onnx, upgrade_hint
from runtime.backends import cuda
from runtime.backends.engine_sidecar import sha256
from runtime.backends.model_meta import ModelMetadata, load_onnx
from runtime.errors import CscError
from runtime.io.imageio import atomic_path

# Minimum class-map agreement with the FP32 PyTorch model, per precision. FP32 must match (only summation order
# differs). FP16 and INT8 flip pixels where two class logits nearly tie, i.e. on cell outlines: the 3-px band along
# the outlines of a simulated mixed frame holds 2.2 % of its pixels, so INT8 may flip at most that band, FP16 a
# quarter of it.
AGREEMENT_THRESHOLD = {"fp32": 0.999, "fp16": 0.995, "int8": 0.98}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class CheckReport:
    path: Path
    checks: list[Check] = field(default_factory=list)
    agreement: float | None = None
    max_logit_diff: float | None = None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))


def load_trt_ops() -> dict:
    return json.loads(resources.files("export").joinpath("data/tensorrt10_onnx_ops.json").read_text())


def unsupported_by_tensorrt(graph: onnx.ModelProto) -> list[str]:
    """Nodes or attributes the TensorRT 10 ONNX parser does not take, one line each (empty when all are)."""
    table = load_trt_ops()
    ops, limits = set(table["ops"]), table["attributes"]
    problems = []
    for node in graph.graph.node:
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{node.op_type} ({node.domain}) — custom domain")
            continue
        if node.op_type not in ops:
            problems.append(f"{node.op_type} ({node.name}) — operator not supported")
            continue
        for attr in node.attribute:
            allowed = limits.get(node.op_type, {}).get(attr.name)
            if allowed is None:
                continue
            value = onnx.helper.get_attribute_value(attr)
            value = value.decode() if isinstance(value, bytes) else value
            if value not in allowed:
                problems.append(f"{node.op_type} ({node.name}) — {attr.name}={value!r} not in {allowed}")
    return problems


def tensorrt_parser_check(graph: onnx.ModelProto, path: Path) -> tuple[bool, str]:
    """(ok, detail): parsed by the first installed TensorRT flavour, or, with none installed, the operator list."""
    flavours = cuda.installed_flavours()
    if not flavours:
        problems = unsupported_by_tensorrt(graph)
        fallback = ("no TensorRT installed, so only TensorRT 10's operator list was checked (not types): "
                    "pip install tensorrt-rtx-cu12 for a real parse")
        return not problems, f"{fallback}; " + ("all operators listed" if not problems else "; ".join(problems[:5]))
    trt = cuda.import_tensorrt(flavours[0])
    errors, *_ = parse_onnx(trt, path)
    library = f"{cuda.LABELS[flavours[0]]} {trt.__version__}"
    if errors:
        return False, f"{library} rejects it: {'; '.join(errors[:3])} — {upgrade_hint(errors, path)}"
    return True, f"{library} parses every node"


def metadata_of(graph: onnx.ModelProto, path: Path) -> ModelMetadata:
    return ModelMetadata.from_props({p.key: p.value for p in graph.metadata_props}, str(path))


def _with_logits_output(graph: onnx.ModelProto, precision: str) -> tuple[onnx.ModelProto, str]:
    """A copy of a fused graph that also outputs the ArgMax input (the logits), for the numeric comparison."""
    argmax = next(n for n in graph.graph.node if n.op_type == "ArgMax")
    copy = onnx.ModelProto()
    copy.CopyFrom(graph)
    dtype = onnx.TensorProto.FLOAT16 if precision == "fp16" else onnx.TensorProto.FLOAT
    copy.graph.output.append(onnx.helper.make_tensor_value_info(argmax.input[0], dtype, None))
    return copy, argmax.input[0]


def run_checks(path: str | Path, checkpoint: str | Path | None = None, images: str | Path | None = None) -> CheckReport:
    path = Path(path)
    report = CheckReport(path)
    graph = load_onnx(path)
    try:
        onnx.checker.check_model(str(path))
        report.add("onnx.checker", True, f"opset {graph.opset_import[0].version}")
    except onnx.checker.ValidationError as err:
        report.add("onnx.checker", False, str(err).splitlines()[0])
    try:
        meta = metadata_of(graph, path)
        detail = f"{meta.arch}, {meta.precision}, batch {meta.batch}, classes {','.join(meta.classes)}"
        report.add("metadata", True, f"{detail}; note: {meta.note}" if meta.note else detail)
    except CscError as err:
        report.add("metadata", False, str(err))
        return report
    report.add("TensorRT ONNX parser", *tensorrt_parser_check(graph, path))
    if checkpoint is None:
        report.add("ONNX Runtime vs PyTorch", True, "skipped: pass --checkpoint to compare with the PyTorch model")
        return report
    agreement, diff = compare_with_pytorch(graph, meta, checkpoint, images)
    report.agreement, report.max_logit_diff = agreement, diff
    need = AGREEMENT_THRESHOLD[meta.precision]
    detail = f"class maps agree on {100 * agreement:.3f} % of pixels (need ≥ {100 * need:.1f} % for {meta.precision})"
    if diff is not None:
        detail += f", max |logit difference| {diff:.2e}"
    recorded = meta.checkpoint.rpartition("sha256:")[2]  # "best.pt sha256:<16 hex>", written by the export
    if recorded and not sha256(checkpoint).startswith(recorded):  # a low figure then says little about the export
        detail += f"; but this file was exported from another checkpoint ({meta.checkpoint})"
    report.add("ONNX Runtime vs PyTorch FP32", agreement >= need, detail)
    return report


def compare_with_pytorch(graph: onnx.ModelProto, meta: ModelMetadata, checkpoint: str | Path,
                         images: str | Path | None = None) -> tuple[float, float | None]:
    import torch

    from trainer.checkpoint import model_from_checkpoint
    from trainer.preprocess import Preprocess

    model, _ = model_from_checkpoint(checkpoint, meta.arch)
    model.eval()
    frames = check_frames(meta.input_size, images)
    fused = meta.fused
    probe, logits_name = _with_logits_output(graph, meta.precision) if fused else (graph, graph.graph.output[0].name)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    batch = 1 if meta.batch == "dynamic" else int(meta.batch)
    same = total = 0
    worst = 0.0
    pre = Preprocess()
    for frame in frames:
        x_u8 = np.repeat(frame[None], batch, axis=0)
        with torch.no_grad():
            x = pre(torch.from_numpy(x_u8))
            ref_logits = model(x).numpy()
        feed = x_u8 if fused else x.numpy()
        outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {session.get_inputs()[0].name: feed})))
        logits = outputs[logits_name].astype(np.float32)
        class_map = outputs["class_map"] if fused else logits.argmax(1)
        same += int((class_map == ref_logits.argmax(1)).sum())
        total += class_map.size
        worst = max(worst, float(np.abs(logits - ref_logits).max()))
    return same / total, worst


def simplify(path: str | Path) -> None:
    """Simplify in place with onnxslim (a maintained graph simplifier); the checks run again afterwards."""
    try:
        import onnxslim
    except ImportError:
        raise CscError("--simplify needs onnxslim", fix="pip install onnxslim") from None

    path = Path(path)
    graph = onnx.load(str(path))
    props = list(graph.metadata_props)
    slim = onnxslim.slim(graph)
    del slim.metadata_props[:]
    slim.metadata_props.extend(props)
    with atomic_path(path) as tmp:
        onnx.save(slim, tmp)
