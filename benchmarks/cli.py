"""`csc-bench`: a report a person reads — speed per backend × precision × batch, model cost, the verdict."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from runtime.backends.select import BACKENDS
from runtime.cli.common import VersionOption, check_outputs, choices, console, entry

Backend = choices("Backend", BACKENDS)

app = typer.Typer(add_completion=False, rich_markup_mode="rich", pretty_exceptions_show_locals=False)


@app.command(help="Benchmark a model (default: the bundled one) on each available backend and batch size: "
                  "latency p50/p90/p99, inference-only and end-to-end FPS, FLOPs, this machine's peak, and the "
                  "verdict against the paper's 25 FPS at 512×512.")
def bench(
    model: list[Path] = typer.Option(None, "--model", help="ONNX file(s) or engine(s); repeat to compare (e.g. fp32 and int8)."),
    backend: Backend = typer.Option("auto", "--backend", help="auto: ONNX Runtime, plus OpenVINO where installed and TensorRT where an engine beside the model runs here; ort; openvino; trt (engines)."),
    batch: list[int] = typer.Option([1], "--batch", min=1, help="Batch sizes (repeat); a static-batch model runs its own."),
    seconds: float = typer.Option(6.0, "--seconds", min=0.5, help="Time budget of each inference-only figure."),
    frames: int = typer.Option(150, "--frames", min=10, help="Frames of the end-to-end run."),
    full_frames: int = typer.Option(4, "--full-frames", min=0, help="4000×3000 frames (the paper's camera) of a second end-to-end run, tiled through the model; 0 skips it."),
    threads: int = typer.Option(None, "--threads", min=1, help="ONNX Runtime threads (default: all cores but one)."),
    json_path: Path = typer.Option(None, "--json", help="Write the report as JSON."),
    md: Path = typer.Option(None, "--md", help="Write the report as markdown."),
    plot: Path = typer.Option(None, "--plot", help="Write a PNG chart (FPS by backend/model, 25 FPS line)."),
    version: bool = VersionOption,  # noqa: ARG001
) -> None:
    from benchmarks.bench import BenchInterrupted, BenchOptions, render_chart, render_markdown, run_bench
    from runtime.cli.run import DEFAULT_MODEL
    from runtime.io.imageio import check_image_target
    from runtime.io.writers import write_json

    # Before the run: the report and the chart are written at its end.
    check_outputs({"--json": json_path, "--md": md, "--plot": plot}, [("--model", m) for m in model or []])
    if plot is not None:
        check_image_target(plot, "--plot")
    models = list(model) if model else [DEFAULT_MODEL]
    try:
        with console.status("benchmarking…") as status:
            report = run_bench(models, Backend(backend).value,
                               BenchOptions(tuple(batch), seconds, frames, threads, full_frames),
                               progress=lambda text: status.update(f"benchmarking {text}"))
    except KeyboardInterrupt as stop:  # typer's own exit 130 said nothing, and every figure measured was lost
        # A BenchInterrupted holds the entries measured before it; a plain one came while the models were read and
        # the 4000×3000 frames made (seconds), before any.
        report = stop.report if isinstance(stop, BenchInterrupted) else None
        if report is None or not report["results"]:
            console.print("[yellow]interrupted:[/] before the first figure; nothing written", highlight=False)
            raise typer.Exit(130) from None
    table = Table(title=f"auto-CSC benchmark — {report['machine']['cpu']}, {report['machine']['cores']} cores, "
                        f"peak {report['peak_gflops']} GFLOP/s")
    for col in ("model", "backend", "prec.", "batch", "FPS", "p50/p90/p99 ms", "end-to-end FPS", "% of peak", "≥ 25 FPS"):
        table.add_column(col, justify="right")
    for r in report["results"]:
        lat = r["latency_ms"]
        table.add_row(f"{Path(r['model']).name} ({r['arch']})", r["backend"], r["precision"], str(r["batch"]),
                      f"{r['fps']:.1f}", f"{lat['p50']}/{lat['p90']}/{lat['p99']}", str(r["end_to_end_fps"] or "—"),
                      f"{100 * r['fraction_of_peak']:.0f} %" if "fraction_of_peak" in r else "—",
                      "[green]yes[/]" if r["meets_25fps"] else "[red]no[/]")
    console.print(table)
    for name, cost in report["models"].items():
        if cost["flops"]:
            console.print(f"{Path(name).name}: {cost['params']:,} parameters, {cost['flops'] / 1e9:.2f} GFLOPs per frame")
    for note in report["not_measured"]:
        console.print(f"[yellow]not measured:[/] {escape(note)}", highlight=False)
    if not report.get("interrupted"):  # a verdict on the rows measured before Ctrl-C would be on part of the run
        verdict = all(r["meets_25fps"] for r in report["results"])
        measured = "end-to-end" if any(r["end_to_end_fps"] for r in report["results"]) else "in inference alone"
        console.print(f"verdict: {'[green]meets[/]' if verdict else '[red]misses[/]'} the paper's 25 FPS at 512×512 "
                      f"{measured} on this machine")
    if json_path:
        write_json(json_path, report)
    if md:
        from runtime.io.imageio import write_text

        write_text(md, render_markdown(report))
    if plot:
        render_chart(report, plot)
    if report.get("interrupted"):
        console.print(f"[yellow]interrupted:[/] the report holds the entries measured before Ctrl-C "
                      f"({len(report['results'])}), marked interrupted", highlight=False)
        raise typer.Exit(130)


main = entry(app)
