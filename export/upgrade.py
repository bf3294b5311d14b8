"""`csc-export upgrade OLD.onnx --out NEW.onnx`: make a fused graph from an older exporter acceptable to TensorRT,
without its checkpoint.

TensorRT takes a UINT8 network input only straight into a Cast, and a UINT8 output only from one ("node_permute:
first input has type UInt8 but must have type Float…"). Exporters before 0.1.1 transposed and flipped the uint8
frames and cast afterwards (so was the bundled model until it was rewritten by this). Those layout ops move values without changing them, so running them on float after a
Cast placed first gives the same numbers: the rewrite inserts that Cast, drops the old one, and leaves weights
and metadata as they were. ONNX Runtime class maps are compared before and after by `csc-export upgrade`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from export.frames import check_frames
from runtime.backends.compare import class_map_agreement
from runtime.backends.model_meta import load_onnx
from runtime.backends.onnxruntime import OnnxRuntimeRunner
from runtime.errors import CscError
from runtime.io.imageio import atomic_path

# Ops that only move or select elements: on a uint8 → float path they give the same values before or after a Cast.
LAYOUT_OPS = ("Transpose", "Slice", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity")


def _consumers(graph: onnx.GraphProto, name: str) -> list[onnx.NodeProto]:
    return [n for n in graph.node if name in n.input]


def _cast_to(node: onnx.NodeProto) -> int | None:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == "to"), None)


def cast_uint8_inputs_first(model: onnx.ModelProto) -> list[str]:
    """Rewrite ``model`` in place so every uint8 graph input goes straight into a Cast to float; the changes made,
    one line each (empty when the graph already complies). Raises a CscError for a graph this cannot rewrite."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    changes = []
    for inp in graph.input:
        if inp.type.tensor_type.elem_type != TensorProto.UINT8:
            continue
        users = _consumers(graph, inp.name)
        if all(n.op_type == "Cast" for n in users):
            continue
        retyped = []  # tensors on the path that carried uint8 and will carry float
        node = users[0] if len(users) == 1 else None
        while node is not None and node.op_type in LAYOUT_OPS:
            retyped.append(node.output[0])
            following = _consumers(graph, node.output[0])
            node = following[0] if len(following) == 1 and node.output[0] not in outputs else None
        if node is None or node.op_type != "Cast" or _cast_to(node) != TensorProto.FLOAT:
            raise CscError(f"cannot move the Cast of input {inp.name!r} first: its path is not layout ops "
                           f"({', '.join(LAYOUT_OPS)}) ending in a Cast to float",
                           fix="re-export the model from its checkpoint with this version's `csc-export onnx`")
        old_cast, cast_output = node, f"{inp.name}_float"
        for user in users:
            user.input[list(user.input).index(inp.name)] = cast_output
        for user in _consumers(graph, old_cast.output[0]):
            user.input[list(user.input).index(old_cast.output[0])] = old_cast.input[0]
        graph.node.remove(old_cast)
        graph.node.insert(0, helper.make_node("Cast", [inp.name], [cast_output], name=f"{inp.name}_to_float",
                                              to=TensorProto.FLOAT))
        # Recorded intermediate types are now wrong (uint8 → float); shape inference fills them in again.
        stale = set(retyped) | {old_cast.output[0]}
        kept = [v for v in graph.value_info if v.name not in stale]
        del graph.value_info[:]
        graph.value_info.extend(kept)
        changes.append(f"input {inp.name}: Cast to float moved before {', '.join(u.op_type for u in users)} "
                       f"(was {old_cast.name})")
    for out in graph.output:
        if out.type.tensor_type.elem_type == TensorProto.UINT8:
            producer = next((n for n in graph.node if out.name in n.output), None)
            if producer is None or producer.op_type != "Cast":
                raise CscError(f"output {out.name!r} is uint8 but not made by a Cast "
                               f"({producer.op_type if producer else 'no producer'}): TensorRT refuses that",
                               fix="re-export the model from its checkpoint with this version's `csc-export onnx`")
    if changes:
        onnx.checker.check_model(onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True))
    return changes


def upgrade_onnx(path: str | Path, out: str | Path, frames: list[np.ndarray] | None = None) -> tuple[list[str], float]:
    """Write the rewritten graph of ``path`` to ``out`` (atomically, only when ONNX Runtime gives the same class
    maps before and after) and return (changes, agreement)."""
    path, out = Path(path), Path(out)
    model = load_onnx(path)
    changes = cast_uint8_inputs_first(model)
    if not changes:
        raise CscError("nothing to upgrade: every uint8 input already goes straight into a Cast", path=path,
                       fix="use the file as it is")
    with atomic_path(out) as tmp:
        onnx.save(model, tmp)
        with OnnxRuntimeRunner(path, threads=1) as before, OnnxRuntimeRunner(tmp, threads=1) as after:
            if frames is None:
                frames = check_frames(before.input_size)
            agreement = class_map_agreement(before, after, frames)
        if agreement < 1.0:
            raise CscError(f"the rewritten graph changes {100 * (1 - agreement):.4f} % of class-map pixels; "
                           "nothing was written", path=path, fix="re-export the model from its checkpoint")
    return changes, agreement
