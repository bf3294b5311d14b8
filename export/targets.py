"""Which option combinations each export target accepts, in one table (after Ultralytics' ``export_formats()`` +
``validate_args``): checked before any work starts, so no option is silently ignored and no file is made that
the runtime cannot run.

A target's options are the command's options together with facts of its input (for an engine: what the ONNX
file is), as one dict; each rule says what must hold, why, and what to do instead.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.backends.select import ENGINE_SUFFIXES
from runtime.errors import CscError


@dataclass(frozen=True)
class Rule:
    holds: Callable[[dict[str, Any]], bool]
    reason: str  # formatted with the options
    fix: str


RULES: dict[str, tuple[Rule, ...]] = {
    # csc-export onnx: options are ExportOptions' fields, calib, and the checkpoint and ONNX file (out) paths.
    "onnx": (
        Rule(lambda o: Path(o["out"]).resolve() != Path(o["checkpoint"]).resolve(),
             "--out is the checkpoint itself: the export would replace the model it is made from",
             "name the export MODEL.onnx"),
        Rule(lambda o: not Path(o["out"]).is_dir(), "--out {out} is a folder", "name a file, e.g. one inside it"),
        Rule(lambda o: Path(o["out"]).suffix.lower() not in ENGINE_SUFFIXES,
             "--out {out} ends like a TensorRT engine: csc-run knows an engine by its suffix, and would read this "
             "ONNX file as one", "name the export MODEL.onnx, and build the engine from it with `csc-export "
             "build-engine`"),
        Rule(lambda o: o["calib"] is None or o["precision"] == "int8",
             "--calib is read only for --precision int8 (this export is {precision})",
             "drop --calib, or add --precision int8"),
        Rule(lambda o: o["precision"] != "int8" or o["calib"] is not None,
             "--precision int8 needs calibration images", "add --calib DIR with a few dozen camera frames"),
        Rule(lambda o: o["fuse"] or not o["probabilities"],
             "--probabilities is an output of the fused graph, and --no-fuse was given",
             "drop --no-fuse or --probabilities"),
    ),
    # csc-export build-engine: options are BuildOptions' fields, the flavour, the ONNX file (onnx) and the engine
    # (out) paths, and the ONNX file's facts (fused: uint8 frames in; outputs: the graph's output names; dynamic:
    # a batch dimension of -1).
    "engine": (
        Rule(lambda o: o["out"].resolve() != o["onnx"].resolve(),
             "--out is the ONNX file itself: the engine would replace the model it is built from",
             "name the engine MODEL.engine"),
        Rule(lambda o: not o["out"].is_dir(), "--out {out} is a folder", "name a file, e.g. one inside it"),
        Rule(lambda o: o["out"].suffix.lower() in ENGINE_SUFFIXES,
             "--out {out} does not end in " + ", ".join(ENGINE_SUFFIXES) + ": csc-run knows an engine by its suffix",
             "name the engine MODEL.engine"),
        Rule(lambda o: o["fused"],
             "the TensorRT runtime runs fused models only (uint8 frames in, class map out); this one is {layout}",
             "export it without --no-fuse (`csc-export onnx CKPT --out FILE`), or run the ONNX file with --backend ort"),
        Rule(lambda o: o["outputs"] == ["class_map"],
             "the TensorRT runtime reads one output, class_map; this model has {outputs}",
             "export it without --probabilities, or run the ONNX file with --backend ort"),
        Rule(lambda o: o["dynamic"] or all(o[k] is None for k in ("min_batch", "opt_batch", "max_batch")),
             "--min/--opt/--max-batch given but the ONNX model has a static batch",
             "export it with `csc-export onnx CKPT --batch dynamic`, or drop the batch options"),
        Rule(lambda o: len(set(o["compute_capabilities"])) == len(o["compute_capabilities"]),
             "--compute-capability given twice for one GPU: {compute_capabilities}",
             "name each compute capability once"),
        Rule(lambda o: o["flavour"] == "rtx" or not o["compute_capabilities"],
             "--compute-capability chooses the GPUs of a TensorRT-RTX ahead-of-time build; full TensorRT builds "
             "for the GPU it runs on", "drop --compute-capability, or add --flavour rtx"),
        Rule(lambda o: o["flavour"] == "tensorrt" or o["timing_cache"] is None,
             "--timing-cache does nothing in TensorRT-RTX (its timing cache calls are no-ops)",
             "drop --timing-cache, or build with full TensorRT (--flavour tensorrt)"),
    ),
}


def validate(target: str, options: dict[str, Any], path: str | Path | None = None) -> None:
    """Raise a CscError for the first rule of ``target`` that ``options`` break."""
    for rule in RULES[target]:
        if not rule.holds(options):
            raise CscError(rule.reason.format(**options), path=path, fix=rule.fix)
