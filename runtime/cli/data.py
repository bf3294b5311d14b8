"""`csc-data`: make, validate, look at and count datasets in the project's format."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from runtime.cli.common import choices, console, entry, make_app, progress_bar
from runtime.counting import BORDER_POLICIES
from runtime.dataset import check_dataset, open_dataset
from runtime.errors import CscError
from runtime.imageio import write_image
from runtime.overlay import OverlayRenderer, tile_grid
from runtime.simulator import MODES
from runtime.synthesize import synthesize_dataset

app = make_app("Datasets: simulate ([bold]synth[/]), validate ([bold]check[/]), look ([bold]show[/]), count ([bold]count[/]).")


Kind = choices("Kind", MODES)
Border = choices("Border", BORDER_POLICIES)


@app.command()
def synth(
    kind: Kind = typer.Option(..., "--kind", help="Which cells: rbc or macrophage alone (single-kind) or mixed."),
    n: int = typer.Option(..., "--n", min=1, help="Number of images."),
    out: Path = typer.Option(..., "--out", help="Dataset folder to write (images/, masks/, instances/, dataset.json)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same dataset."),
    size: int = typer.Option(512, "--size", min=32, help="Square frame size in px."),
) -> None:
    """Write a simulated-microscope dataset with exact ground truth."""
    with progress_bar() as bar:
        task = bar.add_task(f"synth {kind.value}", total=n)
        synthesize_dataset(kind.value, n, out, seed=seed, size=size, on_image=lambda: bar.advance(task))
    console.print(f"wrote {n} images to {out}")


@app.command()
def check(directory: Path = typer.Argument(..., help="Dataset folder.")) -> None:
    """Validate a dataset and print per-class statistics; exits 1 naming each bad file."""
    report = check_dataset(directory)
    table = Table(title=f"{directory} — {report.n_images} images")
    table.add_column("class")
    table.add_column("pixels %", justify="right")
    table.add_column("cells", justify="right")
    for name, frac in report.pixel_fraction.items():
        cells = "" if report.cells is None or name not in report.cells else str(report.cells[name])
        table.add_row(name, f"{100 * frac:.2f}", cells)
    console.print(table)
    console.print("sizes: " + ", ".join(f"{k} ×{v}" for k, v in report.sizes.items()))
    for problem in report.problems:
        console.print(f"[bold red]problem:[/] {escape(problem)}", highlight=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)
    console.print("[green]ok[/]")


@app.command()
def show(
    directory: Path = typer.Argument(..., help="Dataset folder."),
    out: Path = typer.Option(..., "--out", help="PNG file to write the grid to."),
    n: int = typer.Option(16, "--n", min=1, help="How many images (the first ones)."),
    columns: int = typer.Option(4, "--columns", min=1, help="Images per row."),
) -> None:
    """Render images with their mask outlines in a grid, for a person to check."""
    dataset = open_dataset(directory)
    renderer = OverlayRenderer(tuple(dataset.classes))
    tiles = []
    for i in range(min(n, len(dataset))):
        labels = dataset.load(i)
        tiles.append(renderer.outlines(labels.image, labels.mask))
    write_image(out, tile_grid(tiles, columns))
    console.print(f"wrote {out}")


@app.command()
def count(
    directory: Path = typer.Argument(..., help="Dataset folder; its masks/ are counted."),
    json_path: Path = typer.Option(None, "--json", help="Write counts (and, with instances/, true counts and accuracy) to this JSON file."),
    split_touching: bool = typer.Option(True, "--split-touching/--no-split-touching", help="Split touching cells of one class (distance transform)."),
    pixel_size: float = typer.Option(None, "--pixel-size", help="µm per pixel (default: the dataset's, else 0.4); sets minimum areas and µm² values."),
    border: Border = typer.Option(Border.count, "--border", help="Cells cut by the frame edge: count (once), ignore or half."),
) -> None:
    """Count the cells in a dataset's class maps; compares with instances/ where it exists."""
    from runtime.counting import CountingConfig
    from runtime.dataset import open_dataset
    from runtime.evaluate_counts import count_dataset
    from runtime.writers import write_json

    dataset = open_dataset(directory)
    try:
        config = CountingConfig(class_names=tuple(dataset.classes), pixel_size_um=pixel_size or dataset.pixel_size_um,
                                split_touching=split_touching, border=border.value)
    except ValueError as err:
        raise CscError(str(err), fix="see `csc-data count --help`") from None
    with progress_bar() as bar:
        task = bar.add_task("count", total=len(dataset))
        summary = count_dataset(directory, config, on_image=lambda: bar.advance(task))
    table = Table(title=f"{directory} — {summary['images']} images")
    for column in ("class", "counted", "true", "accuracy", "MAE/image", "F1@0.5"):
        table.add_column(column, justify="right")
    for name in config.class_names[1:]:
        f1 = summary.get("instances", {}).get(name, {}).get("f1")
        table.add_row(name, str(summary["counts"][name]), str(summary.get("true_counts", {}).get(name, "—")),
                      _pct(summary.get("count_accuracy", {}).get(name)),
                      str(summary.get("mean_abs_error", {}).get(name, "—")), "—" if f1 is None else f"{f1:.3f}")
    console.print(table)
    if json_path is not None:
        write_json(json_path, summary)
        console.print(f"wrote {json_path}")


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f} %"


main = entry(app)
