"""`csc-data`: make, validate, look at and count datasets in the project's format."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from runtime.data.annotations import CROWD_RULES, EXPORT_FORMATS, IMPORT_FORMATS
from runtime.cli.common import check_outputs, choices, console, entry, make_app, progress_bar
from runtime.counting.counter import BORDER_POLICIES
from runtime.data.dataset import check_dataset, check_outside_dataset, open_dataset
from runtime.errors import CscError
from runtime.io.imageio import write_image
from runtime.io.signals import sigterm_as_interrupt
from runtime.data.modality import MODALITIES
from runtime.pipeline.overlay import OverlayRenderer, tile_grid
from runtime.data.simulator import MODES
from runtime.data.synthesize import synthesize_dataset

app = make_app("Datasets: simulate ([bold]synth[/]), bring labels in and out ([bold]import[/], [bold]export[/]), "
               "validate ([bold]check[/]), look ([bold]show[/]), count ([bold]count[/]).")


Kind = choices("Kind", MODES)
Optics = choices("Optics", MODALITIES)
Border = choices("Border", BORDER_POLICIES)
ImportFormat = choices("ImportFormat", IMPORT_FORMATS)
ExportFormat = choices("ExportFormat", EXPORT_FORMATS)
Crowd = choices("Crowd", CROWD_RULES)


@app.command()
def synth(
    kind: Kind = typer.Option(..., "--kind", help="Which cells: rbc or macrophage alone (single-kind) or mixed."),
    n: int = typer.Option(..., "--n", min=1, help="Number of images."),
    out: Path = typer.Option(..., "--out", help="New (or empty) dataset folder to write (images/, masks/, instances/, dataset.json)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same dataset."),
    size: int = typer.Option(512, "--size", min=32, help="Square frame size in px."),
    optics: Optics = typer.Option(Optics.stained, "--optics", help="How the cells are imaged: stained (brightfield of stained cells), brightfield (unstained), phase (Zernike phase contrast), dic or fluorescence. The same seed gives the same cells and labels in every optics."),
    pseudopods: float = typer.Option(0.0, "--pseudopods", min=0.0, help="Mean thin protrusions per macrophage (e.g. 0–4), part of the cell's mask."),
) -> None:
    """Write a simulated-microscope dataset with exact ground truth."""
    with progress_bar() as bar:
        task = bar.add_task(f"synth {kind.value} ({optics.value})", total=n)
        synthesize_dataset(kind.value, n, out, seed=seed, size=size, optics=optics.value, pseudopods=pseudopods,
                           on_image=lambda: bar.advance(task))
    console.print(f"wrote {n} images to {escape(str(out))}", highlight=False)


@app.command("import")
def import_labels(
    fmt: ImportFormat = typer.Argument(..., metavar="FORMAT", help="coco, labelme, cvat, masks, points or boxes."),
    src: Path = typer.Argument(..., help="The annotations: a COCO JSON, a LabelMe JSON or folder, a CVAT XML, a folder of label images, a points/boxes CSV or a folder of per-image .txt files (points: 'x y' or 'x y class' per line; boxes: YOLO). Boxes or points alone (COCO bbox without segmentation, CVAT <box>/<points>) make a count-only dataset."),
    images: Path = typer.Option(..., "--images", help="Folder holding the annotated images (matched by file name, else by stem); a CVAT project's images in its <subset>/ folders, named <subset>_<name> in the dataset. LabelMe's embedded imageData is used where the folder lacks the image."),
    out: Path = typer.Option(..., "--out", help="New dataset folder to write."),
    classes: str = typer.Option(None, "--classes", help="Class mapping SOURCE=target,… (e.g. RBC=rbc,WBC=wbc); '*=rbc' maps every other name; unmapped classes are dropped and counted. Default: the names as given (rbc/macrophage in any case become the project's)."),
    class_table: Path = typer.Option(None, "--class-table", help="masks only: CSV image,class (a class per file) or image,label,class (per cell)."),
    pixel_size: float = typer.Option(None, "--pixel-size", min=0.0001, help="µm per pixel of the images, recorded in dataset.json (default: not recorded: `csc-data count` then estimates it from each image's cells, and training takes it for 0.4)."),
    strict: bool = typer.Option(False, "--strict", help="Stop on annotations without images, images without annotations, unreadable images or size mismatches, instead of listing and skipping them."),
    copy_images: bool = typer.Option(False, "--copy-images", help="Copy the images instead of hard-linking them (the default where the file system allows)."),
    crowd: Crowd = typer.Option(Crowd.cell, "--crowd", help="coco only: iscrowd=1 annotations as one cell each (cell: CVAT marks every mask so) or left out (skip: COCO's own crowd regions, several objects under one mask)."),
) -> None:
    """Write a dataset from a labelling tool's annotations (masks and instances, or count-only points/boxes)."""
    from runtime.data.annotations import read_annotations
    from runtime.data.annotations.classmap import ClassMap
    from runtime.data.annotations.writer import NothingImported, import_annotations

    class_map = ClassMap.parse(classes)
    source = read_annotations(fmt.value, src, class_table, crowd=crowd.value)
    failure = None
    with progress_bar() as bar:
        task = bar.add_task(f"import {fmt.value}", total=len(source.images))
        try:
            summary = import_annotations(source, images, out, class_map, origin=f"import:{fmt.value}",
                                         strict=strict, copy_images=copy_images, pixel_size_um=pixel_size,
                                         on_image=lambda: bar.advance(task))
        except NothingImported as err:  # where everything went is printed first: the error points up to it
            summary, failure = err.summary, err
    _print_import(summary, written=failure is None)
    if failure is not None:
        raise failure


def _print_import(s, written: bool) -> None:
    cells = ", ".join(f"{n} {c}" for n, c in s.cells.items())
    kind = "masks and instances" if s.kind == "masks" else f"count-only ({s.kind})"
    head = (f"imported {s.images} images into {escape(s.out)}" if written else
            f"nothing written to {escape(s.out)} ({s.images} images usable)")
    console.print(f"{head}: {kind}; cells: {cells}", highlight=False)
    notes = [(s.dropped, "cells of classes not kept: " + ", ".join(f"{n or '(unnamed)'} {c}" for n, c in s.dropped.items())),
             (s.clipped, f"{s.clipped} shapes cut at the image edge (clipped)"),
             (s.outside, f"{s.outside} shapes or marks outside their image (dropped)"),
             (s.overlapping, f"{s.overlapping} cells overlap an earlier one (the later one keeps the shared pixels)"),
             (s.hidden, f"{s.hidden} cells wholly covered by later ones (gone)"),
             (s.ignored, "shapes that are not cells, ignored: " + ", ".join(f"{t} {c}" for t, c in s.ignored.items()))]
    for present, text in notes:
        if present:
            console.print(f"[yellow]{escape(text)}[/]", highlight=False)
    for note in s.notes:
        console.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
    for names, what in ((s.missing_images, "annotated images not found in --images"),
                        (s.unannotated, "images without annotations, not imported")):
        if names:
            rest = f"(all in {s.out}/dataset.json)" if written else f"and {len(names) - 8} more"
            shown = ", ".join(names[:8]) + (f" … {rest}" if len(names) > 8 else "")
            console.print(f"[yellow]{len(names)} {what}:[/] {escape(shown)}", highlight=False)
    for skipped in s.skipped:
        console.print(f"[yellow]skipped[/] {escape(skipped['file'])}: {escape(skipped['reason'])}", highlight=False,
                      soft_wrap=True)


@app.command()
def export(
    directory: Path = typer.Argument(..., help="Dataset folder with masks (e.g. `csc-label auto` output)."),
    fmt: ExportFormat = typer.Option(..., "--format", help="coco (one JSON, RLE masks), labelme (a folder of JSON, polygons) or cvat (one 'CVAT for images 1.1' XML, masks)."),
    out: Path = typer.Option(..., "--out", help="File to write (a folder for labelme)."),
) -> None:
    """Write a dataset's cells for a labelling tool, to correct them and `csc-data import` them back."""
    from runtime.data.annotations import export_dataset

    check_outside_dataset(out, directory)  # before the export, which replaced dataset.json when named as --out
    dataset = open_dataset(directory)
    with progress_bar() as bar:
        task = bar.add_task(f"export {fmt.value}", total=len(dataset))
        cells = export_dataset(directory, fmt.value, out, on_image=lambda: bar.advance(task))
    console.print(f"wrote {cells} cells of {len(dataset)} images to {escape(str(out))}", highlight=False)


@app.command()
def check(directory: Path = typer.Argument(..., help="Dataset folder.")) -> None:
    """Validate a dataset and print per-class statistics; exits 1 naming each bad file."""
    from runtime.data.count_dataset import check_count_dataset, is_count_only

    try:
        count_only = is_count_only(directory)
    except CscError:  # unreadable dataset.json: check_dataset reports it with every other bad file
        count_only = False
    report = check_count_dataset(directory) if count_only else check_dataset(directory)
    table = Table(title=f"{escape(str(directory))} — {report.n_images} images")
    table.add_column("class")
    table.add_column("pixels %", justify="right")
    table.add_column("cells", justify="right")
    for name in report.pixel_fraction or report.cells or {}:
        frac = report.pixel_fraction.get(name)
        cells = "" if report.cells is None or name not in report.cells else str(report.cells[name])
        table.add_row(name, "—" if frac is None else f"{100 * frac:.2f}", cells)
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
    """Render images with their mask outlines (or annotated points and boxes) in a grid, for a person to check.
    Each image is fitted to its tile (aspect ratio kept) before its outlines, the lines between touching cells
    included, are drawn, so that they stay visible however large the photo."""
    from runtime.data.count_dataset import is_count_only, open_count_dataset
    from runtime.io.imageio import check_image_target, read_image

    # Before the rendering: a name OpenCV cannot encode failed only at its end, and a grid in the dataset's own
    # images/ (or masks/) is one more image without labels (or labels without an image) that breaks the dataset.
    check_image_target(out, "--out")
    check_outside_dataset(out, directory)
    if is_count_only(directory):
        marked = open_count_dataset(directory)
        renderer = OverlayRenderer(tuple(marked.classes))
        tiles = [renderer.preview_marks(read_image(s.image), s.points, s.boxes) for s in marked.samples[:n]]
    else:
        dataset = open_dataset(directory)
        renderer = OverlayRenderer(tuple(dataset.classes))
        tiles = []
        for i in range(min(n, len(dataset))):
            labels = dataset.load(i)
            tiles.append(renderer.preview(labels.image, labels.mask, labels.instances))
    write_image(out, tile_grid(tiles, columns))
    console.print(f"wrote {escape(str(out))}", highlight=False)


@app.command()
def rescale(
    directory: Path = typer.Argument(..., help="Dataset folder (images/, masks/, optional instances/)."),
    pixel_size: float = typer.Option(..., "--pixel-size", min=0.0001, help="The pixel size to bring it to, µm per pixel (a model's, e.g. 0.4)."),
    out: Path = typer.Option(..., "--out", help="New (or empty) dataset folder to write."),
    source_pixel_size: float = typer.Option(None, "--from", min=0.0001, help="The dataset's own pixel size, when its dataset.json lacks it or only estimated it."),
) -> None:
    """Write the dataset at another pixel size: images resampled, class and instance maps by nearest neighbour."""
    from runtime.data.rescale import rescale_dataset

    dataset = open_dataset(directory)
    with progress_bar() as bar:
        task = bar.add_task("rescale", total=len(dataset))
        zoom = rescale_dataset(directory, out, pixel_size, source_pixel_size, on_image=lambda: bar.advance(task))
    console.print(f"wrote {len(dataset)} images to {escape(str(out))} at {pixel_size:g} µm/px (×{zoom:.3g})",
                  highlight=False)


@app.command()
def count(
    directory: Path = typer.Argument(..., help="Dataset folder; its masks/ are counted."),
    json_path: Path = typer.Option(None, "--json", help="Write counts (and, against a reference, the scores) to this JSON file."),
    truth: Path = typer.Option(None, "--truth", help="Score against this dataset (same image stems): human or simulated instances, or count-only points/boxes from `csc-data import`. Default: DIR's own instances/."),
    split_touching: bool = typer.Option(True, "--split-touching/--no-split-touching", help="Split touching cells of one class (distance transform)."),
    pixel_size: float = typer.Option(None, "--pixel-size", help="µm per pixel; sets minimum areas, splitting and µm² values. Default: the dataset's where it was given, else estimated from the cells of each image."),
    diameter: float = typer.Option(None, "--diameter", help="Typical diameter of the first cell class (RBC) in px, instead of --pixel-size."),
    border: Border = typer.Option(Border.count, "--border", help="Cells cut by the frame edge: count (once), ignore or half."),
    resplit: bool = typer.Option(False, "--resplit", help="With --truth: score the counter's split of the class maps even where DIR has its own instances/ (by default those are scored: the labeller's or annotator's cells)."),
) -> None:
    """Count the cells in a dataset's class maps and score them against a reference.

    Against ground truth (simulated, imported human labels) the columns are true counts, accuracy and F1; where
    the reference is the auto-labeller's own split they show agreement with the labeller instead.
    """
    from runtime.data.count_dataset import is_count_only
    from runtime.counting.counter import CountingConfig
    from runtime.counting.evaluation import count_dataset
    from runtime.io.writers import write_json

    # Before the counting, which takes minutes on a large set: a folder failed only at its end, and a dataset's own
    # dataset.json was overwritten by the summary, its classes, pixel size and provenance lost.
    check_outputs({"--json": json_path})
    if json_path is not None:  # as `csc-train eval --json` and `show`, `export --out`: none among a dataset's files
        for root in filter(None, (directory, truth)):
            check_outside_dataset(json_path, root, "--json")
    if is_count_only(directory):
        raise CscError("count-only dataset: it holds annotations, not class maps to count", path=directory,
                       fix=f"label its images (`csc-label auto {directory / 'images'} --kind rbc --out LABELS`) or "
                           f"segment them, then `csc-data count LABELS --truth {directory}`")
    dataset = open_dataset(directory)
    try:
        if pixel_size is not None and diameter is not None:
            raise ValueError("give --pixel-size or --diameter, not both (each sets the scale)")
        known = dataset.pixel_size_um if dataset.scale_known and diameter is None else None
        config = CountingConfig(class_names=tuple(dataset.classes), pixel_size_um=known if pixel_size is None else pixel_size,
                                diameter_px=diameter, split_touching=split_touching, border=border.value)
    except ValueError as err:
        raise CscError(str(err), fix="see `csc-data count --help`") from None
    with progress_bar() as bar:
        task = bar.add_task("count", total=len(dataset))
        summary = count_dataset(directory, config, on_image=lambda: bar.advance(task), truth=truth, resplit=resplit)
    console.print(_count_table(summary, directory, config.class_names[1:]))
    if truth is not None:
        console.print(f"cells scored: {summary['cells_from']}", highlight=False)
    estimated = [r["pixel_size_um"] for r in summary.get("per_image", {}).values() if r.get("scale") == "estimated"]
    if config.fixed_pixel_size_um is None:
        scale = (f"estimated from the cells of {len(estimated)} of {summary['images']} images, median "
                 f"{sorted(estimated)[len(estimated) // 2]:.3f} µm/px" if estimated else "default (too few cells)")
        console.print(f"scale: {scale}", highlight=False)
    reference = summary.get("reference")
    if reference is not None and not reference["ground_truth"]:
        console.print(f"[yellow]note:[/] the reference ({escape(reference['dataset'])}) is the auto-labeller's own "
                      "split, not ground truth: the columns show agreement with it, not accuracy", highlight=False)
    for name, n in summary.get("not_predicted", {}).items():
        console.print(f"{name}: {n} annotated, not a class of the class maps (not scored)", highlight=False)
    for what, stems in summary.get("unmatched", {}).items():
        if stems:
            console.print(f"{len(stems)} {what.replace('_', ' ')}: {escape(', '.join(stems[:5]))}"
                          + (" …" if len(stems) > 5 else ""), highlight=False)
    if json_path is not None:
        write_json(json_path, summary)
        console.print(f"wrote {escape(str(json_path))}", highlight=False)


# Column headings per reference: what the numbers are depends on what they were compared with.
_COLUMNS = {
    "truth-masks": ("true", "accuracy", "MAE/image", "F1@0.5"),
    "truth-marks": ("annotated", "ratio", "MAE/image", "point F1"),
    "labeller": ("labeller split", "agreement", "|diff|/image", "split F1@0.5"),
}


def _count_table(summary: dict, directory: Path, names: tuple[str, ...]) -> Table:
    from runtime.counting.evaluation import AGREEMENT_KEYS

    reference = summary.get("reference")
    title = f"{escape(str(directory))} — {summary['images']} images"
    if reference is None:
        table = Table(title=title)
        for column in ("class", "counted"):
            table.add_column(column, justify="right")
        for name in names:
            table.add_row(name, str(summary["counts"][name]))
        return table
    table = Table(title=f"{title} vs {escape(reference['dataset'])} ({reference['labels']})")
    if reference["ground_truth"]:
        columns = _COLUMNS["truth-masks" if reference["annotations"] == "masks" else "truth-marks"]
        scores = summary
    else:
        columns = _COLUMNS["labeller"]
        scores = {key: summary["versus_labeller"].get(renamed) for key, renamed in AGREEMENT_KEYS.items()}
    for column in ("class", "counted" if reference["annotations"] == "masks" else "counted (scored)", *columns):
        table.add_column(column, justify="right")
    for name in summary["counts"]:
        f1 = (scores.get("instances") or {}).get(name, {}).get("f1")
        table.add_row(name, str(summary["counts"][name]), str(scores["true_counts"][name]),
                      _pct(scores["count_accuracy"][name]), str(scores["mean_abs_error"][name]),
                      "—" if f1 is None else f"{f1:.3f}")
    return table


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f} %"


_main = entry(app)


def main() -> None:
    """`csc-data`, stopped by SIGTERM (`timeout`, a batch scheduler's time limit) as by Ctrl-C: a dataset being
    written gets its dataset.json saying ``complete: false``. Killed outright, it had none, and `check` passed the
    images written so far as a whole dataset, of human labels."""
    with sigterm_as_interrupt():
        _main()
