"""`csc-label`: auto-labels for single-kind images (paper §2.1) and the Table 1 ablation."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from runtime.cli.common import choices, console, entry, make_app, progress_bar
from runtime.data.dataset import check_outside_dataset, open_dataset
from runtime.errors import CscError
from runtime.io.imageio import check_image_target, write_image
from runtime.pipeline.overlay import OverlayRenderer, tile_grid
from runtime.data.modality import MODALITIES
from trainer.autolabel import CHANNELS, FILLS, THRESHOLDS

app = make_app("Auto-labels for single-kind cell images ([bold]auto[/]) and the paper's ablation ([bold]ablation[/]).")


Kind = choices("Kind", ("rbc", "macrophage"))  # auto-labels are for single-kind images
PolarityChoice = choices("PolarityChoice", ("dark", "bright", "auto"))
ModalityChoice = choices("ModalityChoice", ("auto",) + MODALITIES)


ThresholdChoice = choices("ThresholdChoice", THRESHOLDS)
FillChoice = choices("FillChoice", FILLS)
ChannelChoice = choices("ChannelChoice", CHANNELS)


@app.command()
def auto(
    images: Path = typer.Argument(..., help="Folder of single-kind images (a dataset's images/ folder works)."),
    kind: Kind = typer.Option(..., "--kind", help="Which cells the images hold; sets the mask's class id (rbc 1, macrophage 2)."),
    out: Path = typer.Option(..., "--out", help="Dataset folder to write (images/, masks/, instances/, dataset.json): a new or empty one, or see --overwrite."),
    pixel_size: float = typer.Option(None, "--pixel-size", help="µm per pixel. Without it (and without --diameter) the cell diameter is estimated in every image."),
    diameter: float = typer.Option(None, "--diameter", help="Typical diameter of the cells in px, 2 to 1000 (instead of --pixel-size)."),
    modality: ModalityChoice = typer.Option(ModalityChoice.auto, "--modality", help="The optics: stained (brightfield smears), brightfield (unstained), phase (phase contrast), dic, fluorescence; auto decides per image, and where most of a folder's images are label-free, one taken for a stain without a stain's colour takes their optics. Label-free ones (brightfield, phase, dic) are thresholded on local contrast of either sign, not on intensity."),
    paper: bool = typer.Option(False, "--paper", help="The paper's steps as published: grey, adaptive threshold, filled outer contours, no rim closing, no rejection."),
    channel: ChannelChoice = typer.Option(None, "--channel", help="auto: the colour direction with the most cell/background contrast; grey: brightness only. Default auto."),
    polarity: PolarityChoice = typer.Option(PolarityChoice.auto, "--polarity", help="Cells darker (brightfield) or brighter (fluorescence) than the background; auto decides per image."),
    gaussian: bool = typer.Option(True, "--gaussian/--no-gaussian", help="Step 1: Gaussian filter."),
    gaussian_ksize: int = typer.Option(3, "--gaussian-ksize", help="Gaussian kernel size (odd); paper 3."),
    gaussian_sigma: float = typer.Option(0.8, "--gaussian-sigma", help="Gaussian σ; paper 0.8."),
    threshold: ThresholdChoice = typer.Option(None, "--threshold", help="Step 2. auto: global Otsu, on the background-flattened image where the light is uneven; otsu; adaptive (the paper's). Default auto."),
    block_size: int = typer.Option(None, "--block-size", help="Adaptive-threshold window (odd px); default ≈1.2–1.4 cell diameters."),
    offset: float = typer.Option(None, "--offset", help="Adaptive threshold: grey levels beyond the local mean; default 6 (rbc) / 4 (macrophage)."),
    fill: FillChoice = typer.Option(None, "--fill", help="Step 3. holes: holes smaller than a cell filled (pale centres); contours: the paper's filled outer contours; none. Default holes."),
    close_rims: bool = typer.Option(None, "--close-rims/--no-close-rims", help="Close open cell rims before filling holes (default on)."),
    min_area: int = typer.Option(None, "--min-area", help="Smallest object kept, px (impurities, broken cells); default from cell size."),
    min_area_um2: float = typer.Option(None, "--min-area-um2", help="Smallest object kept, µm² (needs --pixel-size)."),
    morphology: bool = typer.Option(None, "--morphology/--no-morphology", help="Step 4: erosion then dilation (3×3); default on for macrophages."),
    morph_iterations: int = typer.Option(1, "--morph-iterations", help="Erosion/dilation iterations."),
    split_touching: bool = typer.Option(False, "--split-touching", help="Split touching cells into instances (writes instances/)."),
    reject: bool = typer.Option(None, "--reject/--no-reject", help="Leave out thin, unstained and (rbc) nucleated objects, reported per image (default on)."),
    preview: Path = typer.Option(None, "--preview", help="PNG grid of the first images with their auto-labels."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first bad image instead of skipping it."),
    workers: int = typer.Option(None, "--workers", min=1, help="Processes (default: all cores)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier `csc-label auto` output of other images in OUT (its images/, masks/, instances/ and dataset.json are deleted first; one of the same input folder is replaced without it). Without it an OUT that holds files is refused; a dataset csc-label did not write (imported, simulated, hand-made) is refused even with it."),
    copy_images: bool = typer.Option(False, "--copy-images", help="Copy the images into DIR/images instead of hard-linking them (the default where the file system allows; a link shares edits made in place to the input)."),
) -> None:
    """Label a folder of single-kind images and write a dataset in the project's format."""
    from trainer.autolabel import PAPER_STEPS, AutoLabelConfig
    from trainer.labelling import LabellingInterrupted, check_folders, label_folder

    steps = {**(PAPER_STEPS if paper else {}),
             **{k: v for k, v in dict(channel=channel and channel.value, threshold=threshold and threshold.value,
                                      fill=fill and fill.value, close_rims=close_rims, reject=reject).items()
                if v is not None}}
    try:
        config = AutoLabelConfig(
            kind=kind.value, modality=modality.value, gaussian=gaussian, gaussian_ksize=gaussian_ksize, gaussian_sigma=gaussian_sigma,
            block_size=block_size, offset=offset, polarity=polarity.value, min_area_px=min_area,
            min_area_um2=min_area_um2, pixel_size_um=pixel_size, diameter_px=diameter, morphology=morphology,
            morph_iterations=morph_iterations, split_touching=split_touching, **steps)
    except ValueError as err:
        raise CscError(str(err), fix="see `csc-label auto --help`") from None
    if preview is not None:
        check_image_target(preview, "--preview")
        check_outside_dataset(preview, out, "--preview")  # an image in OUT/images without a mask broke the dataset
        if preview.resolve().parent == images.resolve():
            raise CscError("--preview lies in the folder of images to label: the same command run again would label "
                           "it as one of them", path=preview, fix="write it elsewhere, e.g. beside --out")
    n = len(check_folders(images, out, overwrite))
    try:
        with progress_bar() as bar:
            measure = bar.add_task("measure the folder's cells and optics", total=n, visible=False)
            task = bar.add_task(f"auto-label {kind.value}", total=n)

            def measured() -> None:
                bar.update(measure, advance=1, visible=True)

            run = label_folder(images, out, config, strict=strict, workers=workers, copy_images=copy_images,
                               overwrite=overwrite, on_image=lambda: bar.advance(task), on_measure=measured)
    except LabellingInterrupted as stop:
        console.print(f"[yellow]interrupted:[/] {stop.labelled} of {stop.total} images labelled into "
                      f"{escape(str(out))}, dataset.json marks it incomplete — run the same command again to label "
                      "them all",
                      highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None  # the shell's code for Ctrl-C
    console.print(f"labelled {run.labelled} images into {escape(str(out))}", highlight=False, soft_wrap=True)
    if run.diameters:
        lo, hi = min(run.diameters), max(run.diameters)
        how = {"given": "given", "estimated": "estimated per image", "folder": "the folder's (the image's own cells "
               "too few or too small)", "default": "default: too few cells to measure"}
        scales = ", ".join(f"{how[s]} ×{c}" for s, c in run.scale.items())
        console.print(f"cell diameter: median {run.median_diameter:.1f} px (range {lo:g}–{hi:g}; {scales})", highlight=False)
    if run.labelled:  # what the labeller decided; nothing where every image was skipped (empty lines before)
        console.print("modality: " + ", ".join(f"{m} ×{c}" for m, c in run.modality.items())
                      + (f" (the folder's {run.folder_modality[0]} for {run.folder_modality[1]} taken for a stain "
                         "without its colour)" if run.folder_modality else ""), highlight=False)
        console.print("polarity: " + ", ".join(f"{p} ×{c}" for p, c in run.polarity.items())
                      + "; threshold: " + ", ".join(f"{t} ×{c}" for t, c in run.threshold.items()), highlight=False)
    if run.rejected:
        console.print("left out (not counted): " + ", ".join(f"{n} {reason}" for reason, n in run.rejected.items()),
                      highlight=False)
    if run.no_cell:
        name, optics = run.no_cell[0]
        console.print(f"[yellow]no cell found[/] in {len(run.no_cell)} image(s) that are not blank (the first: "
                      f"{escape(name)}, taken for {optics}): empty fields, or cells the labeller missed"
                      + (" — if they are stained smears imaged in grey, or other optics than those named, give "
                         "--modality" if modality == ModalityChoice.auto else
                         f" — or they are not {modality.value} images: give their optics with --modality, or auto"),
                      highlight=False, soft_wrap=True)
    for path, reason in run.skipped:
        console.print(f"[yellow]skipped[/] {escape(path)}: {escape(reason)}", highlight=False)
    if not run.labelled:
        raise CscError(f"no image labelled: all {len(run.skipped)} were skipped (each listed above)", path=images,
                       fix="fix or replace the images")
    if preview is not None:
        dataset = open_dataset(out)
        renderer = OverlayRenderer()
        tiles = [renderer.preview(labels.image, labels.mask, labels.instances)
                 for labels in map(dataset.load, range(min(16, len(dataset))))]
        write_image(preview, tile_grid(tiles))
        console.print(f"preview: {escape(str(preview))}", highlight=False, soft_wrap=True)


@app.command()
def ablation(
    datasets: list[Path] = typer.Argument(None, help="Single-kind datasets with ground truth (e.g. from `csc-data synth --kind rbc`)."),
    out: Path = typer.Option(Path("ablation.md"), "--out", help="Markdown report; the JSON goes beside it."),
    real: bool = typer.Option(True, "--real/--no-real", help="Add the real nuclei image shipped in the stardist wheel."),
    polarity: PolarityChoice = typer.Option(PolarityChoice.auto, "--polarity", help="Polarity for every set."),
) -> None:
    """Reproduce the paper's Table 1: auto-label mIoU for each combination of steps, per dataset."""
    from trainer.ablation import (check_report_target, dataset_set, render_markdown, run_ablation,
                                  stardist_nuclei_set, write_report)

    check_report_target(out, datasets or [])
    sets = [dataset_set(d) for d in datasets or []]
    if real:
        try:
            sets.append(stardist_nuclei_set())
        except CscError as err:
            console.print(f"[yellow]real images skipped:[/] {escape(str(err))}", highlight=False)
    if not sets:
        raise CscError("nothing to evaluate", fix="pass dataset folders or install the real-image package")
    report = run_ablation(sets, polarity=polarity.value)
    json_path = write_report(report, out)
    typer.echo(render_markdown(report))
    console.print(f"wrote {escape(str(out))} and {escape(str(json_path))}", highlight=False, soft_wrap=True)


main = entry(app)
