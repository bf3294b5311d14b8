"""Model cost read from an ONNX graph: parameters and FLOPs (multiply-adds × 2) at the graph's input size.

Counted from the file itself, so it holds for any exported model (fused or not, FP16, INT8 with Q/DQ nodes).
Convolutions, Gemm and MatMul are counted; element-wise ops, pooling, resizing and ArgMax are not
multiply-adds and are left out, as FLOP counts in the literature do. Needs the ``onnx`` package.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.backends.model_meta import load_onnx


def _shapes(model) -> dict[str, list[int]]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = [d.dim_value if d.HasField("dim_value") else 0 for d in dims]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def graph_cost(path_or_model, batch: int = 1) -> dict[str, int]:
    """{"params": …, "flops": …} for one forward pass at ``batch`` (dynamic batch dims are set to it)."""
    import onnx

    model = load_onnx(path_or_model) if isinstance(path_or_model, (str, Path)) else path_or_model
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for inp in fixed.graph.input:
        for dim in inp.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = batch
    shapes = _shapes(fixed)
    initializers = {i.name for i in fixed.graph.initializer}
    dq_source = {n.output[0]: n.input[0] for n in fixed.graph.node if n.op_type == "DequantizeLinear"}
    weights: set[str] = set()
    flops = 0
    for node in fixed.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        for name in node.input[1:3]:
            source = dq_source.get(name, name)
            if source in initializers:
                weights.add(source)
        out = shapes.get(node.output[0])
        w = shapes.get(node.input[1]) or shapes.get(dq_source.get(node.input[1], ""))
        if not out or not w or 0 in out:
            continue
        if node.op_type == "Conv":
            flops += 2 * int(np.prod(out)) * int(np.prod(w[1:]))
        else:  # Gemm/MatMul: out (…, M, N), weight (K, N) or (N, K): the inner size is the one not in out
            k = w[0] if w[-1] == out[-1] else w[-1]
            flops += 2 * int(np.prod(out)) * int(k)
    by_name = {i.name: i for i in fixed.graph.initializer}
    params = sum(int(np.prod(by_name[n].dims)) for n in weights)
    return {"params": params, "flops": flops}
