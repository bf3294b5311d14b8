"""`csc-export`: ONNX export with checks (`onnx`, `check`, `upgrade`) and TensorRT engines (`build-engine`)."""
from __future__ import annotations

from pathlib import Path
from shlex import quote

import typer
from rich.markup import escape
from rich.table import Table

from runtime.cli.common import choices, console, entry, make_app
from runtime.errors import CscError
from runtime.backends.cuda import FLAVOURS
from runtime.backends.model_meta import PRECISIONS

app = make_app("Export: [bold]onnx[/] (fused uint8 graph + checks), [bold]check[/], [bold]upgrade[/] (older files "
               "for TensorRT), [bold]build-engine[/] (TensorRT or TensorRT-RTX).")

Precision = choices("Precision", PRECISIONS)
Flavour = choices("Flavour", ("auto", *FLAVOURS))


def _print_report(report) -> None:
    table = Table(title=escape(str(report.path)))
    table.add_column("check")
    table.add_column("")
    table.add_column("detail")
    for check in report.checks:
        table.add_row(check.name, "[green]ok[/]" if check.ok else "[red]FAIL[/]", escape(check.detail))
    console.print(table)


def _check_images(images: Path | None) -> None:
    """--images is read last (to compare after an export, a build or the other checks), and not at all where a
    comparison is skipped: a wrong folder, or one whose images do not decode, is refused before any work, never
    passed over."""
    if images is not None:
        from export.frames import compared_images

        compared_images(images)


@app.command()
def onnx(
    checkpoint: Path = typer.Argument(..., help="Checkpoint from csc-train (best.pt)."),
    out: Path = typer.Option(..., "--out", help="ONNX file to write."),
    batch: str = typer.Option("1", "--batch", help="Fixed batch N, or 'dynamic'."),
    size: int = typer.Option(512, "--size", help="Input height and width in px."),
    fuse: bool = typer.Option(True, "--fuse/--no-fuse", help="uint8 BGR in / class map out (default), or float NCHW → logits (ONNX Runtime only)."),
    probabilities: bool = typer.Option(False, "--probabilities", help="Fused graph also outputs softmax probabilities (ONNX Runtime only)."),
    precision: Precision = typer.Option("fp32", "--precision", help="fp16: half model; int8: QDQ, needs --calib."),
    calib: Path = typer.Option(None, "--calib", help="Folder of calibration images (int8 only)."),
    simplify: bool = typer.Option(False, "--simplify", help="Simplify the graph with onnxslim (checked again)."),
    images: Path = typer.Option(None, "--images", help="Real images to compare ONNX Runtime with PyTorch on (default: simulated frames)."),
) -> None:
    """Export a checkpoint to ONNX with metadata, then run every check."""
    from export.checks import run_checks
    from export.checks import simplify as simplify_graph
    from export.onnx_export import ExportOptions, export_onnx

    _check_images(images)
    meta = export_onnx(checkpoint, out, ExportOptions(batch=batch, size=size, fuse=fuse, probabilities=probabilities,
                                                      precision=Precision(precision).value), calib=calib)
    if simplify:
        simplify_graph(out)
    report = run_checks(out, checkpoint, images)
    _print_report(report)
    console.print(f"wrote {escape(str(out))} ({meta.arch}, {meta.precision}, batch {meta.batch}, {out.stat().st_size / 1e6:.1f} MB)")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def check(
    file: Path = typer.Argument(..., help="ONNX file, or a TensorRT engine (.engine/.plan/.trt) to compare with its ONNX file."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Compare with this PyTorch checkpoint too (ONNX files)."),
    images: Path = typer.Option(None, "--images", help="Real images for the comparison (default: simulated frames)."),
) -> None:
    """Re-run the checks on an ONNX file (exits 1 when one fails, e.g. when an installed TensorRT parser rejects
    it); for an engine, run it here against ONNX Runtime (the accuracy guard a build without a GPU skips)."""
    from runtime.backends.select import ENGINE_SUFFIXES

    _check_images(images)
    if file.suffix.lower() in ENGINE_SUFFIXES:
        if checkpoint is not None:
            raise CscError("--checkpoint is read only for an ONNX file: an engine is compared with the ONNX file it "
                           "was built from", path=file, fix="drop --checkpoint, or check the ONNX file with it")
        _check_engine(file, images)
        return
    if images is not None and checkpoint is None:
        raise CscError("--images is read only with --checkpoint for an ONNX file (the comparison with PyTorch)",
                       fix="add --checkpoint CKPT, or drop --images")
    from export.checks import run_checks

    report = run_checks(file, checkpoint, images)
    _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


def _check_engine(engine: Path, images: Path | None) -> None:
    from export.tensorrt import ENGINE_AGREEMENT, engine_agreement
    from runtime.backends.tensorrt import why_not_runnable

    if not engine.is_file():
        raise CscError("engine file not found", path=engine)
    problem = why_not_runnable(engine)
    if problem is not None:
        raise CscError(f"this machine cannot run the engine: {problem}", path=engine)
    agreement = engine_agreement(engine, images)
    ok = agreement >= ENGINE_AGREEMENT
    console.print(f"{'[green]ok[/]' if ok else '[red]FAIL[/]'}: TensorRT and ONNX Runtime class maps agree on "
                  f"{100 * agreement:.3f} % of pixels (need ≥ {100 * ENGINE_AGREEMENT:.1f} %)")
    if not ok:
        raise typer.Exit(1)


@app.command()
def upgrade(
    file: Path = typer.Argument(..., help="ONNX file from an older csc-export that TensorRT rejects (uint8 input not cast first)."),
    out: Path = typer.Option(..., "--out", help="ONNX file to write (may be FILE itself)."),
) -> None:
    """Rewrite an older fused export so TensorRT accepts it: the uint8 frames go straight into a Cast. Weights and
    metadata are kept; ONNX Runtime must give identical class maps before and after, else nothing is written."""
    from export.upgrade import upgrade_onnx

    changes, agreement = upgrade_onnx(file, out)
    for change in changes:
        console.print(f"changed: {escape(change)}")
    console.print(f"wrote {escape(str(out))}; ONNX Runtime class maps before and after agree on {100 * agreement:.3f} % of pixels")


@app.command("build-engine")
def build_engine_cmd(
    file: Path = typer.Argument(..., help="ONNX file from `csc-export onnx` (precision is taken from it)."),
    out: Path = typer.Option(..., "--out", help="Engine file (.engine, .plan or .trt: csc-run knows an engine by its suffix); ENGINE.json (sidecar) is written beside it."),
    flavour: Flavour = typer.Option("auto", "--flavour", help="tensorrt (full TensorRT: Jetson, x86 datacenter; builds on its GPU), "
                                    "rtx (TensorRT-RTX: RTX GPUs; builds without a GPU), auto (full TensorRT where it and a GPU are here, else rtx)."),
    min_batch: int = typer.Option(None, "--min-batch", min=1, help="Smallest batch of the profile (dynamic models)."),
    opt_batch: int = typer.Option(None, "--opt-batch", min=1, help="Batch TensorRT tunes for."),
    max_batch: int = typer.Option(None, "--max-batch", min=1, help="Largest batch of the profile."),
    compute_capability: list[str] = typer.Option(None, "--compute-capability", help="TensorRT-RTX only: GPUs to build for, e.g. 7.5 for Turing (repeat; default 8.0, 8.6, 8.9, 12.0+)."),
    workspace: int = typer.Option(1024, "--workspace", min=16, help="Builder workspace limit in MiB."),
    timing_cache: Path = typer.Option(None, "--timing-cache", help="Timing cache file, read and updated (speeds up rebuilds)."),
    images: Path = typer.Option(None, "--images", help="Images for the accuracy guard (default: simulated frames)."),
) -> None:
    """Build a TensorRT engine, then check it against ONNX Runtime where this machine can run it."""
    from export.tensorrt import ENGINE_AGREEMENT, BuildOptions, build_engine, engine_agreement
    from runtime.backends.tensorrt import why_not_runnable
    from runtime.cli.common import progress_bar

    _check_images(images)
    options = BuildOptions(min_batch, opt_batch, max_batch, workspace, str(timing_cache) if timing_cache else None,
                           list(compute_capability or []))
    skipped: list[str] = []  # why the guard could not run the engine here

    def guard(engine: Path) -> None:
        """The accuracy guard, on the new engine before it replaces --out: a refused one leaves an engine already
        there as it was."""
        problem = why_not_runnable(engine)
        if problem is not None:
            skipped.append(problem)
            return
        agreement = engine_agreement(engine, images)
        console.print(f"accuracy guard: TensorRT and ONNX Runtime class maps agree on {100 * agreement:.3f} % of "
                      f"pixels (need ≥ {100 * ENGINE_AGREEMENT:.1f} %)")
        if agreement < ENGINE_AGREEMENT:
            kept = "; the engine already there is kept" if out.exists() else ""
            raise CscError(f"engine disagrees with ONNX Runtime: not written{kept}", path=out,
                           fix="check the ONNX file with `csc-export check`, or export at fp32")

    with progress_bar() as progress:
        tasks: dict[str, int] = {}

        def report(phase: str, step: int, steps: int) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=max(steps, 1))
            progress.update(tasks[phase], completed=step)

        sidecar = build_engine(file, out, options, report, Flavour(flavour).value, accept=guard)
    where = f"on {sidecar.gpu_name}" if sidecar.gpu_name else "ahead of time, without a GPU"
    console.print(f"built {escape(str(out))} ({out.stat().st_size / 1e6:.1f} MB) in {sidecar.build_seconds} s "
                  f"{escape(where)} with {sidecar.label} {sidecar.tensorrt_version}; runs on compute capability "
                  f"{', '.join(sidecar.targets)}; sidecar {escape(str(sidecar.path_for(out)))}", highlight=False)
    if skipped:
        console.print(f"[yellow]accuracy guard skipped:[/] this machine cannot run the engine ({escape(skipped[0])}); "
                      f"on the target GPU run `csc-export check {escape(quote(str(out)))}`", highlight=False)


main = entry(app)
