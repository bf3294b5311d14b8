"""Engine build time and engine size per export variant, built ahead of time with TensorRT-RTX on a machine without
a GPU (what CI and a laptop can do for an RTX box): the bundled model, and fresh exports of each architecture at
512×512 in every precision, with a static and a dynamic batch.

Build time is the builder call alone (``build_serialized_network``), median of ``--repeats`` builds; it depends on
the CPU and its load, not on the weights, so the fresh exports use untrained weights (seed 0). No engine is run
here: speed on a GPU is csc-bench's job on the GPU box.

Run: python -m benchmarks.speed.engine_build --out benchmarks/results/engine_build.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from benchmarks.publish import cpu_name, publish
from export.onnx_export import ExportOptions, export_onnx
from export.tensorrt import BuildOptions, build_engine
from runtime.cli.run import DEFAULT_MODEL
from runtime.backends.model_meta import PRECISIONS

# (batch, build options): a static batch of 1, and a dynamic batch with the default profile (1…8). The workspace is
# 4 GiB: vgg16-unet at batch 8 asks for 1.17 GB of scratch, more than the 1 GiB default.
WORKSPACE_MIB = 4096
BATCHES = (("1", BuildOptions(workspace_mib=WORKSPACE_MIB)), ("dynamic", BuildOptions(max_batch=8, workspace_mib=WORKSPACE_MIB)))


def _untrained_checkpoint(arch: str, path: Path) -> Path:
    import torch

    from trainer.checkpoint import save_checkpoint
    from trainer.models import build_model

    torch.manual_seed(0)
    save_checkpoint(path, {"arch": arch, "classes": ["background", "rbc", "macrophage"],
                           "model": build_model(arch).state_dict(), "config": {}})
    return path


def _build(onnx_path: Path, options: BuildOptions, repeats: int, tmp: Path) -> dict:
    seconds, size, sidecar = [], 0, None
    for _ in range(repeats):
        engine = tmp / f"{onnx_path.stem}.engine"
        sidecar = build_engine(onnx_path, engine, options, flavour="rtx")
        seconds.append(sidecar.build_seconds)
        size = engine.stat().st_size
    return {"onnx_mb": round(onnx_path.stat().st_size / 1e6, 2), "engine_mb": round(size / 1e6, 2),
            "build_seconds": statistics.median(seconds), "build_seconds_all": seconds,
            "profiles": sidecar.profiles, "library": f"{sidecar.label} {sidecar.tensorrt_version}",
            "targets": sidecar.targets}


def measure(archs: tuple[str, ...] = ("light-unet", "vgg16-unet"), size: int = 512, repeats: int = 3,
            precisions: tuple[str, ...] = PRECISIONS, bundled: bool = True) -> dict:
    from runtime.data.synthesize import synthesize_dataset

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if bundled:
            rows.append({"model": "bundled default.onnx", "arch": "light-unet", "precision": "fp32", "batch": "1",
                         **_build(DEFAULT_MODEL, BATCHES[0][1], repeats, tmp)})
        calib = synthesize_dataset("mixed", 8, tmp / "calib", seed=7, size=size) / "images"
        for arch in archs:
            checkpoint = _untrained_checkpoint(arch, tmp / f"{arch}.pt")
            for precision in precisions:
                for batch, options in BATCHES:
                    model = tmp / f"{arch}-{precision}-{batch}.onnx"
                    export_onnx(checkpoint, model, ExportOptions(batch=batch, size=size, precision=precision),
                                calib=calib if precision == "int8" else None)
                    rows.append({"model": "fresh export (untrained weights)", "arch": arch, "precision": precision,
                                 "batch": batch, **_build(model, options, repeats, tmp)})
                    model.unlink()
    return {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(),
                        "gpu": "none (ahead-of-time build)", "note": "shared VM: build times vary with its load"},
            "size": size, "repeats": repeats, "workspace_mib": WORKSPACE_MIB, "results": rows}


def render_markdown(result: dict) -> str:
    lines = ["| model | precision | batch | ONNX MB | engine MB | build s (median) |", "|---|---|---|---:|---:|---:|"]
    for r in result["results"]:
        batch = "dynamic 1–8" if r["batch"] == "dynamic" else r["batch"]
        lines.append(f"| {r['arch']}, {r['model']} | {r['precision']} | {batch} | {r['onnx_mb']} | {r['engine_mb']} | "
                     f"{r['build_seconds']} |")
    return "\n".join(lines) + "\n"


def _render(path: Path) -> None:
    """Print the markdown table of a result file (what README quotes)."""
    print(render_markdown(json.loads(path.read_text())), end="")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", action="append", help="architectures (default: light-unet and vgg16-unet)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the JSON here too (benchmarks/results/)")
    parser.add_argument("--table", type=Path, help="only print the markdown table of this result file")
    args = parser.parse_args()
    if args.table:
        _render(args.table)
        raise SystemExit
    result = measure(tuple(args.arch or ("light-unet", "vgg16-unet")), args.size, args.repeats)
    publish(result, args.out)
    print(render_markdown(result))
