"""`csc-train`: the paper's regimes (base, single, transfer), evaluation and the model registry."""
from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer
from rich.markup import escape
from rich.table import Table

from runtime.classes import DEFAULT_PIXEL_SIZE_UM
from runtime.cli.common import check_outputs, choices, console, entry, make_app, progress_bar
from runtime.errors import CscError
from trainer.data import AUGMENTS
from trainer.models import available
from trainer.train import DEVICES, TrainingInterrupted

app = make_app("Train the U-Net: [bold]base[/] (labelled mixed), [bold]single[/] (auto-labelled single-kind), "
               "[bold]transfer[/] (fine-tune on few mixed), [bold]eval[/], [bold]models[/].")

ArchChoice = choices("ArchChoice", tuple(available()))
DeviceChoice = choices("DeviceChoice", DEVICES)

Out = typer.Option(..., "--out", help="Run folder: best.pt, last.pt, metrics.json, curves.png.")
Arch = typer.Option(ArchChoice("vgg16-unet"), "--arch", help="Registered architecture (see `csc-train models`).")
Steps = typer.Option(2000, "--steps", help="Training steps (batches).")
Batch = typer.Option(4, "--batch", help="Images per batch (paper: 4).")
Size = typer.Option(256, "--size", help="Training crop size in px (a multiple of the model's stride).")
Device = typer.Option(DeviceChoice("auto"), "--device", help="auto (CUDA when PyTorch sees a GPU), cpu or cuda (AMP is used on CUDA).")
Seed = typer.Option(0, "--seed", help="Seed for splits, batches and augmentation.")
ValEvery = typer.Option(200, "--val-every", help="Validate and checkpoint every N steps.")
Resume = typer.Option(False, "--resume", help="Continue exactly from RUN/last.pt.")
EncoderWeights = typer.Option(None, "--encoder-weights", help="Local torchvision VGG16 state dict (ImageNet); default: paper init.")
AugmentChoice = choices("AugmentChoice", tuple(AUGMENTS))
AugmentOption = typer.Option(AugmentChoice("paper"), "--augment", help="paper: rotation, scale, grey values, flips; microscope: also stain colour, uneven light, defocus and scales 0.7–1.4 (for real images).")
TouchingGap = typer.Option(0, "--touching-gap", min=0, help="Carve a background gap this many px wide between touching cells of the training masks (datasets with instances/), so the network draws the line between them.")


def _config(regime: str, arch, steps, batch, size, device, seed, val_every, lr, encoder_weights, augment="paper",
            touching_gap=0):
    from trainer.train import TrainConfig

    try:
        return TrainConfig(regime=regime, arch=arch, steps=steps, batch=batch, size=size, device=device, seed=seed,
                           val_every=val_every, lr=lr, encoder_weights=None if encoder_weights is None else str(encoder_weights),
                           augment=augment, touching_gap=touching_gap)
    except ValueError as err:
        raise CscError(str(err), fix="see `csc-train --help`") from None


def _run(make_plan, out: Path, resume: bool, datasets: list[Path], checkpoint: Path | None = None) -> None:
    """Check every input (run folder, data, device) before anything starts, then train the plan with a progress bar
    and a result line. ``datasets`` and ``checkpoint`` are the inputs the run folder must keep clear of."""
    from trainer.regimes import check_run_folder

    check_run_folder(out, resume, datasets, checkpoint)
    plan = make_plan()
    config = plan.config
    if resume:  # a last.pt of another model or other settings is refused before the progress bar
        from trainer.train import resumable

        resumable(out, config)
    try:
        with progress_bar() as bar:
            task = bar.add_task(f"{config.regime} {config.arch}", total=config.steps)

            def progress(done, total, loss, rate):
                bar.update(task, completed=done, description=f"{config.regime} {config.arch} loss {loss:.4f} {rate:.2f} it/s")

            result = plan.run(out, resume=resume, progress=progress)
    except TrainingInterrupted as stop:
        _interrupted(stop, out)
    if result.get("val_metrics"):
        m = result["val_metrics"]
        console.print(f"best validation: mIoU {m['miou']:.4f} FWIoU {m['fwiou']:.4f} Dice {m['dice']:.4f} → "
                      f"{escape(str(out / 'best.pt'))}", highlight=False)


def _interrupted(stop: TrainingInterrupted, out: Path) -> NoReturn:
    """Ctrl-C: say what the run folder holds and how to go on (typer's own exit 130 said nothing, leaving a user to
    guess whether --resume would continue or start over), then exit 130, the shell's code for Ctrl-C."""
    if stop.saved is None:
        state = "no checkpoint written yet (one every --val-every steps) — run the same command to start again"
    else:
        state = f"{out / 'last.pt'} holds step {stop.saved} — the same command with --resume continues from there"
    console.print(f"[yellow]interrupted:[/] at step {stop.done} of {stop.steps}; {escape(state)}", highlight=False,
                  soft_wrap=True)
    raise typer.Exit(130)


@app.command()
def base(data: Path = typer.Argument(..., help="Labelled mixed dataset."), out: Path = Out, arch: ArchChoice = Arch,
         steps: int = Steps, batch: int = Batch, size: int = Size, device: DeviceChoice = Device, seed: int = Seed,
         val_every: int = ValEvery, lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate (paper 1e-3)."),
         encoder_weights: Path = EncoderWeights, resume: bool = Resume, augment: AugmentChoice = AugmentOption,
         touching_gap: int = TouchingGap) -> None:
    """U-Base: train on hand-labelled mixed images (split 75/12.5/12.5 %)."""
    from trainer.regimes import plan_base

    config = _config("U-Base", arch.value, steps, batch, size, device.value, seed, val_every, lr, encoder_weights,
                     augment.value, touching_gap)
    _run(lambda: plan_base(data, config), out, resume, [data])


@app.command()
def single(rbc: Path = typer.Argument(..., help="Auto-labelled RBC dataset."),
           macrophage: Path = typer.Argument(..., help="Auto-labelled macrophage dataset."),
           more: list[Path] = typer.Argument(None, help="More auto-labelled single-kind datasets (same classes and pixel size)."),
           out: Path = Out,
           arch: ArchChoice = Arch, steps: int = Steps, batch: int = Batch, size: int = Size,
           device: DeviceChoice = Device, seed: int = Seed, val_every: int = ValEvery,
           lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate (paper 1e-3)."),
           encoder_weights: Path = EncoderWeights, resume: bool = Resume, augment: AugmentChoice = AugmentOption,
           touching_gap: int = TouchingGap) -> None:
    """U-Single: train only on auto-labelled single-kind images; each batch draws from every set."""
    from trainer.regimes import plan_single

    config = _config("U-Single", arch.value, steps, batch, size, device.value, seed, val_every, lr, encoder_weights,
                     augment.value, touching_gap)
    _run(lambda: plan_single(rbc, macrophage, config, more or []), out, resume, [rbc, macrophage, *(more or [])])


@app.command()
def transfer(checkpoint: Path = typer.Argument(..., help="U-Single checkpoint to start from."),
             mixed: Path = typer.Argument(..., help="Labelled mixed dataset."),
             more: list[Path] = typer.Argument(None, help="More labelled mixed datasets (same pixel size); --n images of each."),
             n: int = typer.Option(50, "--n", min=1, help="Labelled mixed images to fine-tune on (paper 50)."),
             out: Path = Out, steps: int = typer.Option(1000, "--steps", help="Fine-tuning steps."), batch: int = Batch,
             size: int = Size, device: DeviceChoice = Device, seed: int = Seed, val_every: int = ValEvery,
             lr: float = typer.Option(5e-4, "--lr", help="Adam learning rate (paper 5e-4)."),
             resume: bool = Resume, augment: AugmentChoice = AugmentOption, touching_gap: int = TouchingGap) -> None:
    """U-Transfer: fine-tune a U-Single model on N labelled mixed images (of each set given)."""
    from trainer.checkpoint import load_checkpoint
    from trainer.regimes import plan_transfer

    arch = load_checkpoint(checkpoint)["arch"]
    config = _config("U-Transfer", arch, steps, batch, size, device.value, seed, val_every, lr, None, augment.value,
                     touching_gap)
    _run(lambda: plan_transfer(checkpoint, mixed, n, config, more or []), out, resume, [mixed, *(more or [])],
         checkpoint)


@app.command("eval")
def evaluate_cmd(checkpoint: Path = typer.Argument(..., help="Checkpoint (best.pt)."),
                 data: Path = typer.Argument(..., help="Labelled dataset to evaluate on (all its images); a count-only one (points/boxes) gives counts only."),
                 json_path: Path = typer.Option(None, "--json", help="Write miou, fwiou, dice, per_class_iou, counts here."),
                 device: DeviceChoice = Device) -> None:
    """mIoU and FWIoU (paper eq. 5, 6), Dice, per-class IoU, confusion matrix and counts against ground truth;
    against count-only points or boxes: count ratio, MAE per image and point F1."""
    from runtime.data.count_dataset import is_count_only
    from runtime.data.dataset import check_outside_dataset, is_ground_truth, label_origin, open_dataset
    from runtime.io.writers import write_json
    from trainer.checkpoint import model_from_checkpoint
    from trainer.train import resolve_device

    if json_path is not None:  # before the evaluation: onto the dataset's dataset.json or the checkpoint it wrote over
        check_outputs({"--json": json_path}, [("CHECKPOINT", checkpoint)])
        check_outside_dataset(json_path, data, "--json")
    model, meta = model_from_checkpoint(checkpoint)
    dev = resolve_device(device.value)
    if is_count_only(data):
        result = _evaluate_counts_only(model.to(dev), meta, data, dev)
    else:
        dataset = open_dataset(data)
        if dataset.classes != list(meta["classes"]):
            raise CscError(f"dataset classes {dataset.classes} differ from the model's {meta['classes']}", path=data)
        result = _evaluate_pixels(model.to(dev), meta, dataset, dev)
        result["labels"] = label_origin(dataset.meta)
        if not is_ground_truth(result["labels"]):
            console.print("[yellow]note:[/] this dataset's labels are the auto-labeller's: the figures measure "
                          "agreement with the auto-labels, not accuracy", highlight=False)
    result.update(checkpoint=str(checkpoint), data=str(data), arch=meta["arch"], regime=meta["regime"])
    if json_path is not None:
        write_json(json_path, result)
        console.print(f"wrote {escape(str(json_path))}", highlight=False)


def _evaluate_pixels(model, meta: dict, dataset, dev) -> dict:
    from trainer.evaluate import evaluate
    from trainer.models import get_arch

    # Images of a known other scale are segmented at the model's, as csc-run and the count-only path do, and
    # scored at their own pixels: segmented as they were, a 0.2 µm/px set met a 0.4 µm/px model's cells at twice
    # their size. An estimated or unrecorded scale is taken as the model's.
    model_pixel = float(meta["config"].get("pixel_size_um", DEFAULT_PIXEL_SIZE_UM))
    zoom = dataset.pixel_size_um / model_pixel if dataset.scale_known else 1.0
    with progress_bar() as bar:
        task = bar.add_task("evaluate", total=len(dataset))
        result = evaluate(model, (dataset.load(i) for i in range(len(dataset))), get_arch(meta["arch"]).stride,
                          dev, tuple(meta["classes"]), dataset.pixel_size_um, on_image=lambda: bar.advance(task),
                          zoom=zoom)
    result["zoom"] = round(zoom, 4)
    if abs(zoom - 1.0) > 1e-3:
        console.print(f"scale: the images ({dataset.pixel_size_um:g} µm/px) segmented at the model's "
                      f"{model_pixel:g} µm/px (×{zoom:.3g}), scored at their own pixels", highlight=False)
    table = Table(title=f"{meta['regime']} ({meta['arch']}) on {escape(str(dataset.root))}")
    for col in ("mIoU", "FWIoU", "Dice", *(f"IoU {n}" for n in meta["classes"])):
        table.add_column(col, justify="right")
    table.add_row(f"{result['miou']:.4f}", f"{result['fwiou']:.4f}", f"{result['dice']:.4f}",
                  *(f"{v:.4f}" if v is not None else "—" for v in result["per_class_iou"].values()))
    console.print(table)
    if "counts" in result:
        acc = result["counts"]["count_accuracy"]  # None for a class without annotated cells: no ratio to give
        console.print("count accuracy: " + (", ".join(f"{k} {100 * v:.2f} %" for k, v in acc.items() if v is not None)
                                            or "— (no annotated cell of any class)"), highlight=False)
    return result


def _evaluate_counts_only(model, meta: dict, data: Path, dev) -> dict:
    from runtime.counting.calibration import FRAMES as CALIBRATION_FRAMES
    from runtime.data.count_dataset import open_count_dataset
    from runtime.data.dataset import label_origin
    from runtime.counting.evaluation import Reference, scored_classes
    from trainer.evaluate import evaluate_counts
    from trainer.models import get_arch

    truth = open_count_dataset(data)
    scored_classes(meta["classes"], truth.classes)  # before the calibration, which segments a few images first
    model_pixel = float(meta["config"].get("pixel_size_um", DEFAULT_PIXEL_SIZE_UM))
    stride = get_arch(meta["arch"]).stride
    # The images' scale where the import recorded it, else calibrated from the first images as `csc-run` does.
    pixel_size_um, calibration = truth.meta.get("pixel_size_um"), None
    if not pixel_size_um:
        calibration = _calibrate(model, meta, [s.image for s in truth.samples[:CALIBRATION_FRAMES]], stride, dev)
        pixel_size_um = calibration.pixel_size_um or model_pixel
        console.print(f"scale: {calibration.describe()}" + ("" if calibration.found else
                      f"; images taken at the model's {model_pixel:g} µm/px — give the import a --pixel-size"),
                      highlight=False)
    with progress_bar() as bar:
        task = bar.add_task("evaluate counts", total=len(truth))
        counts = evaluate_counts(model, truth.samples, stride, dev, tuple(meta["classes"]), truth.classes,
                                 float(pixel_size_um), on_image=lambda: bar.advance(task),
                                 zoom=float(pixel_size_um) / model_pixel)
    table = Table(title=f"{meta['regime']} ({meta['arch']}) on {escape(str(data))} ({truth.kind}, counts only)")
    for col in ("class", "counted (scored)", "annotated", "ratio", "MAE/image", "precision", "recall", "point F1"):
        table.add_column(col, justify="right")
    for name in counts["counts"]:
        m = counts.get("instances", {}).get(name, dict.fromkeys(("precision", "recall", "f1")))
        ratio = counts["count_accuracy"][name]
        table.add_row(name, str(counts["counts"][name]), str(counts["true_counts"][name]),
                      "—" if ratio is None else f"{100 * ratio:.2f} %", str(counts["mean_abs_error"][name]),
                      *("—" if m[k] is None else f"{m[k]:.3f}" for k in ("precision", "recall", "f1")))
    console.print(table)
    for name, n in counts.get("not_predicted", {}).items():
        console.print(f"{name}: {n} annotated, not a class of the model (not scored)", highlight=False)
    return {"counts": counts, "reference": Reference(str(data), truth.kind, label_origin(truth.meta)).as_json(),
            "pixel_size_um": float(pixel_size_um), "calibration": calibration.as_dict() if calibration else None}


def _calibrate(model, meta: dict, images: list[Path], stride: int, dev):
    """The images' pixel size by `runtime.counting.calibration` — one code path with `csc-run` — segmenting with this
    checkpoint (the torch model) where the runtime uses its runner."""
    import cv2

    from runtime.counting.calibration import calibrate
    from runtime.io.imageio import read_image
    from runtime.backends.model_meta import ModelMetadata
    from trainer.evaluate import predict_class_map

    config = meta["config"]
    metadata = ModelMetadata(classes=list(meta["classes"]), input_size=(config["size"], config["size"]),
                             arch=meta["arch"], pixel_size_um=float(config.get("pixel_size_um", 0.4)),
                             cell_diameter_px=dict(config.get("cell_diameter_px", {})))
    frames = [read_image(path) for path in images]

    def segment(frame, zoom):
        small = cv2.resize(frame, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR)
        return predict_class_map(model, small, stride, dev)
    return calibrate(frames, metadata, segment)


@app.command()
def models() -> None:
    """List the registered architectures with parameters (M) and GFLOPs at 512×512."""
    from trainer.models import available, build_model, get_arch
    from trainer.profile import count_flops

    table = Table(title="registered architectures")
    for col in ("name", "params (M)", "GFLOPs @512²", "stride", "summary"):
        table.add_column(col)
    for name in available():
        model = build_model(name)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        flops = count_flops(model, 512) / 1e9
        spec = get_arch(name)
        table.add_row(name, f"{params:.2f}", f"{flops:.1f}", str(spec.stride), spec.summary)
    console.print(table)


main = entry(app)
if __name__ == "__main__":  # python -m trainer.cli.train (torchrun)
    main()
