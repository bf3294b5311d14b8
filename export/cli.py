"""`csc-export`: ONNX export with checks (`onnx`, `check`) and TensorRT engines (`build-engine`)."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from runtime.cli.common import console, entry, make_app
from runtime.errors import CscError

app = make_app("Export: [bold]onnx[/] (fused uint8 graph + checks), [bold]check[/], [bold]build-engine[/] (TensorRT).")

# Minimum TensorRT-vs-ONNX-Runtime class-map agreement after a build: both run the same precision, so only
# kernel choice differs; pixels can flip only where two logits tie to within FP16 rounding.
ENGINE_AGREEMENT = 0.995


def _print_report(report) -> None:
    table = Table(title=str(report.path))
    table.add_column("check")
    table.add_column("")
    table.add_column("detail")
    for check in report.checks:
        table.add_row(check.name, "[green]ok[/]" if check.ok else "[red]FAIL[/]", check.detail)
    console.print(table)


@app.command()
def onnx(
    checkpoint: Path = typer.Argument(..., help="Checkpoint from csc-train (best.pt)."),
    out: Path = typer.Option(..., "--out", help="ONNX file to write."),
    batch: str = typer.Option("1", "--batch", help="Fixed batch N, or 'dynamic'."),
    size: int = typer.Option(512, "--size", help="Input height and width in px."),
    fuse: bool = typer.Option(True, "--fuse/--no-fuse", help="uint8 BGR in / class map out (default), or float NCHW → logits."),
    probabilities: bool = typer.Option(False, "--probabilities", help="Fused graph also outputs softmax probabilities."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, fp16 (half model) or int8 (QDQ, needs --calib)."),
    calib: Path = typer.Option(None, "--calib", help="Folder of calibration images for int8."),
    simplify: bool = typer.Option(False, "--simplify", help="Simplify the graph with onnxslim (checked again)."),
    images: Path = typer.Option(None, "--images", help="Real images to compare ONNX Runtime with PyTorch on (default: simulated frames)."),
) -> None:
    """Export a checkpoint to ONNX with metadata, then run every check."""
    from export.checks import run_checks
    from export.checks import simplify as simplify_graph
    from export.onnx_export import ExportOptions, export_onnx

    meta = export_onnx(checkpoint, out, ExportOptions(batch=batch, size=size, fuse=fuse, probabilities=probabilities,
                                                      precision=precision), calib=calib)
    if simplify:
        simplify_graph(out)
    report = run_checks(out, checkpoint, images)
    _print_report(report)
    console.print(f"wrote {out} ({meta.arch}, {meta.precision}, batch {meta.batch}, {out.stat().st_size / 1e6:.1f} MB)")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def check(
    file: Path = typer.Argument(..., help="ONNX file."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Compare with this PyTorch checkpoint too."),
    images: Path = typer.Option(None, "--images", help="Real images for the comparison (default: simulated frames)."),
) -> None:
    """Re-run the checks on an ONNX file; exits 1 when one fails."""
    from export.checks import run_checks

    report = run_checks(file, checkpoint, images)
    _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


@app.command("build-engine")
def build_engine_cmd(
    file: Path = typer.Argument(..., help="ONNX file from `csc-export onnx` (precision is taken from it)."),
    out: Path = typer.Option(..., "--out", help="Engine file; ENGINE.json (sidecar) is written beside it."),
    min_batch: int = typer.Option(None, "--min-batch", min=1, help="Smallest batch of the profile (dynamic models)."),
    opt_batch: int = typer.Option(None, "--opt-batch", min=1, help="Batch TensorRT tunes for."),
    max_batch: int = typer.Option(None, "--max-batch", min=1, help="Largest batch of the profile."),
    workspace: int = typer.Option(1024, "--workspace", min=16, help="Builder workspace limit in MiB."),
    timing_cache: Path = typer.Option(None, "--timing-cache", help="Timing cache file, read and updated (speeds up rebuilds)."),
    images: Path = typer.Option(None, "--images", help="Images for the accuracy guard (default: simulated frames)."),
) -> None:
    """Build a TensorRT engine (10.x or 11.x) and check it against ONNX Runtime."""
    from rich.progress import Progress

    from export.checks import check_frames
    from export.tensorrt import BuildOptions, build_engine
    from runtime.backends.onnxruntime import OnnxRuntimeRunner
    from runtime.backends.tensorrt import TensorRTRunner
    from runtime.compare import class_map_agreement

    options = BuildOptions(min_batch, opt_batch, max_batch, workspace, str(timing_cache) if timing_cache else None)
    with Progress(console=console) as progress:
        tasks: dict[str, int] = {}

        def report(phase: str, step: int, steps: int) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=max(steps, 1))
            progress.update(tasks[phase], completed=step)

        sidecar = build_engine(file, out, options, report)
    console.print(f"built {out} in {sidecar.build_seconds} s on {sidecar.gpu_name} (TensorRT {sidecar.tensorrt_version})")
    with TensorRTRunner(out) as engine, OnnxRuntimeRunner(file) as reference:
        agreement = class_map_agreement(engine, reference, check_frames(reference.input_size, images))
    console.print(f"accuracy guard: TensorRT and ONNX Runtime class maps agree on {100 * agreement:.3f} % of pixels "
                  f"(need ≥ {100 * ENGINE_AGREEMENT:.1f} %)")
    if agreement < ENGINE_AGREEMENT:
        out.unlink(missing_ok=True)
        Path(f"{out}.json").unlink(missing_ok=True)
        raise CscError("engine disagrees with ONNX Runtime; it was removed", path=out,
                       fix="check the ONNX file with `csc-export check`, or export at fp32")


main = entry(app)
