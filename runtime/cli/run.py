"""`csc-run`: segment and count cells live from a camera, a video, images or the simulated microscope."""
from __future__ import annotations

import math
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from runtime.backends.select import BACKENDS
from runtime.counting.gpu import DEVICES, counts_on_gpu
from runtime.cli.common import VersionOption, check_outputs, choices, console, entry
from runtime.data.modality import LABEL_FREE, MODALITIES
from runtime.classes import CLASS_NAMES
from runtime.io.signals import sigterm_as_interrupt
from runtime.io.sources import READ_AHEAD_WAIT, ReadAhead
from runtime.pipeline.domain import OPTICS_FRAMES

app = typer.Typer(add_completion=False, rich_markup_mode="rich", pretty_exceptions_show_locals=False)

Backend = choices("Backend", BACKENDS)
CountingDevice = choices("CountingDevice", DEVICES)
Modality = choices("Modality", ("auto",) + MODALITIES)
MODELS = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = MODELS / "default.onnx"  # trained on stained smears
LABEL_FREE_MODEL = MODELS / "label-free.onnx"  # trained on unstained cells (brightfield, phase contrast, DIC)


@app.command(help="Segment and count RBCs and macrophages live. Exactly one source: --camera, --video, --images "
                  "or --source demo (the simulated microscope). Ctrl-C stops cleanly.")
def run(
    camera: str = typer.Option(None, "--camera", help="Camera index (0), device (/dev/video0), rtsp:// URL or GStreamer pipeline."),
    video: Path = typer.Option(None, "--video", help="Video file."),
    images: str = typer.Option(None, "--images", help="Folder of images or a glob such as 'data/*.png' ('data/**/*.png': subfolders too; quote it)."),
    source: str = typer.Option(None, "--source", help="'demo': the simulated microscope (no hardware needed)."),
    model: Path = typer.Option(None, "--model", help="ONNX file or TensorRT engine (default: the bundled model for --modality)."),
    modality: Modality = typer.Option("auto", "--modality", help="The optics (stained, brightfield, phase, dic, fluorescence). Without --model, label-free optics pick the bundled label-free model; auto does too where the first lit frames of a camera, a video or --images look label-free (read ahead, then counted as every frame), and otherwise keeps the stained-smear model (the run warns when the frames' optics are not the model's)."),
    backend: Backend = typer.Option("auto", "--backend", help="auto: TensorRT when an engine beside the model runs here, else ONNX Runtime on a GPU, else OpenVINO or ONNX Runtime on the CPU, whichever ran the model faster in a short trial here; or trt, openvino, ort."),
    cuda_graph: bool = typer.Option(False, "--cuda-graph", help="TensorRT: capture each batch size's enqueue once as a CUDA graph and replay it."),
    no_show: bool = typer.Option(False, "--no-show", help="No window (headless)."),
    max_frames: int = typer.Option(None, "--max-frames", min=1, help="Stop after N frames."),
    duration: float = typer.Option(None, "--duration", min=0.1, help="Stop after S seconds."),
    stall_timeout: float = typer.Option(30.0, "--stall-timeout", min=0.1, help="Seconds without a frame from the source (a camera unplugged mid-read, a stream that stopped) after which the run stops with its files closed and exits 1."),
    save_csv: Path = typer.Option(None, "--save-csv", help="Per-frame counts CSV (frame, source, one column per class of the model — rbc, macrophage by default — fps, pixel_size_um: the frames' µm per pixel in use), flushed every frame."),
    save_video: Path = typer.Option(None, "--save-video", help="Overlay video (.mp4 or .avi)."),
    save_cells: Path = typer.Option(None, "--save-cells", help="Per-cell CSV (id, class, centroid, area, bbox, diameter)."),
    summary_json: Path = typer.Option(None, "--summary", help="Write the end-of-run summary as JSON."),
    threads: int = typer.Option(None, "--threads", min=1, help="ONNX Runtime threads (default: all cores but one, left to capture and counting)."),
    count_workers: int = typer.Option(None, "--count-workers", min=1, help="Threads counting consecutive frames at once, written in frame order (default: the cores the backend leaves free)."),
    split_touching: bool = typer.Option(True, "--split-touching/--no-split-touching", help="Split touching cells when counting."),
    counting_device: CountingDevice = typer.Option("cpu", "--counting-device", help="Where class maps are counted: cpu (OpenCV, the default), cuda (torch on the GPU: the same counts and cell tables; needs a CUDA build of torch; its speed is not measured yet), or auto (cuda where torch sees a GPU, else cpu)."),
    pixel_size: str = typer.Option("auto", "--pixel-size", help="The camera's µm per pixel: frames are rescaled to the model's pixel size before inference, counts and cell tables mapped back. auto (default): MODEL.camera.json beside the model, else calibrated from the first frames' cells (printed with its spread; the model's own pixel size, with a warning, where that is impossible). A given value is checked against the frames too."),
    calibrate_on: str = typer.Option("auto", "--calibrate-on", metavar="CLASS", help="The cell class the frames show most of (rbc or macrophage for the bundled models), whose typical size calibrates the scale without --pixel-size (with it: checks it) and whose cells the run watches for a change of magnification. auto (default): the model votes, which on stained smears is reliable but on label-free frames cannot tell a field of one kind of cell: there macrophages alone may be read as RBCs at 2–3× the pixel size (the run warns)."),
    save_calibration: bool = typer.Option(False, "--save-calibration", help="Write the calibrated pixel size to MODEL.camera.json beside the model, so that the next run starts from it."),
    width: int = typer.Option(None, "--width", help="Camera capture width."),
    height: int = typer.Option(None, "--height", help="Camera capture height."),
    fps: float = typer.Option(None, "--fps", help="Camera capture frame rate."),
    seed: int = typer.Option(0, "--seed", help="Seed of the demo source."),
    serve: str = typer.Option(None, "--serve", metavar="[HOST:]PORT", help="While counting, serve a live web view (overlay video, counts, chart, CSV downloads) and the HTTP API (POST /api/count, /metrics, /docs) on PORT; HOST defaults to 127.0.0.1 (this machine only). Any other address requires a token. Needs the serve extra: pip install 'auto-csc\\[serve]'."),
    token: str = typer.Option(None, "--token", help="With --serve: the token every request must carry (Authorization: Bearer TOKEN, or open /?token=TOKEN once in a browser); default: the CSC_TOKEN environment variable, else none on loopback and a random one, printed once, on any other address."),
    version: bool = VersionOption,  # noqa: ARG001
) -> None:
    from runtime.backends import open_runner
    from runtime.counting.calibration import check_ruler
    from runtime.counting.counter import CountingConfig
    from runtime.errors import CscError
    from runtime.pipeline.stream import Pipeline, RunOptions, check_video_target, display_available
    from runtime.io.writers import write_json

    chosen = [s for s in (camera, video, images, source) if s is not None]
    if len(chosen) != 1:
        raise CscError("give exactly one source", fix="--camera N, --video PATH, --images DIR|GLOB or --source demo")
    if source is not None and source != "demo":
        raise CscError(f"unknown --source {source!r}", fix="the only named source is 'demo'")
    # Usage errors before a source is opened or read ahead: a camera may take seconds to give its first frames.
    given_pixel_size = _parse_pixel_size(pixel_size)
    check_outputs({"--save-csv": save_csv, "--save-video": save_video, "--save-cells": save_cells,
                   "--summary": summary_json}, [] if video is None else [("--video", video)])
    if save_video is not None:
        check_video_target(save_video)
    capture = [flag for flag, value in (("--width", width), ("--height", height), ("--fps", fps)) if value is not None]
    if capture and camera is None:  # else ignored without a word: the demo's frames are the model's input size
        raise CscError(f"{', '.join(capture)} without --camera: they set a camera's capture",
                       fix="drop them: a video's and images' frames keep their size, the demo's are the model's input")
    if token is not None and serve is None:
        raise CscError("--token without --serve", fix="add --serve [HOST:]PORT, or drop --token")
    ruler = None if calibrate_on == "auto" else calibrate_on
    read_ahead = model is None and modality == "auto" and source is None and LABEL_FREE_MODEL.exists()
    if read_ahead:
        check_ruler(ruler, CLASS_NAMES)  # the bundled models' classes, checked again on the one chosen
        counts_on_gpu(CountingDevice(counting_device).value)
    # Whatever is opened closes when the command ends, or fails, before the run or in it (the run closes its
    # source itself; a second close does nothing).
    with ExitStack() as opened:
        web = None
        if serve is not None:
            from runtime.serve.live import WebView  # the serve extra: checked there, imported only when asked for

            web = opened.enter_context(WebView(serve, token, say=lambda text: console.print(text, highlight=False,
                                                                                               soft_wrap=True)))
        src = _read_ahead(camera, video, images, seed, width, height, fps, stall_timeout) if read_ahead else None
        if src is not None:
            opened.callback(src.close)
            modality = _first_optics(src)
        model = model or _bundled_model(Modality(modality).value)
        if not model.exists():
            raise CscError("model file not found", path=model,
                           fix="pass --model PATH (an .onnx from `csc-export onnx` or an engine)")
        pixel_size, pixel_source = _pixel_size(given_pixel_size, model)
        runner, reason = open_runner(model, Backend(backend).value, threads, cuda_graph)
        with runner:
            check_ruler(ruler, runner.metadata.classes if runner.metadata else None)  # before the run reads a frame
            console.print(f"backend: {runner.name} — {reason}; {runner.detail}", highlight=False)
            for note in runner.notes:
                console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
            if src is None:
                src = _open_source(camera, video, images, runner.input_size[0], seed, width, height, fps)
                opened.callback(src.close)
            show = not no_show and display_available()
            if not no_show and not show:
                console.print("no display found: running headless (--no-show)")
            pipeline = Pipeline(src, runner, CountingConfig(pixel_size_um=runner.metadata.pixel_size_um,
                                                            class_names=tuple(runner.metadata.classes),
                                                            split_touching=split_touching),
                                RunOptions(max_frames=max_frames, duration=duration, show=show, save_csv=save_csv,
                                           save_video=save_video, save_cells=save_cells, pixel_size_um=pixel_size,
                                           calibrate_on=ruler,
                                           stall_timeout=stall_timeout, count_workers=count_workers,
                                           counting_device=CountingDevice(counting_device).value),
                                on_warning=lambda text: console.print(f"[bold yellow]warning:[/] {escape(text)}",
                                                                      highlight=False, soft_wrap=True))
            if web is not None:
                web.start(pipeline, model, Backend(backend).value)
            with sigterm_as_interrupt():  # systemd, `docker stop`: frames in flight finished, summary written, exit 0
                summary = pipeline.run()
            summary["model"] = str(model)  # which file counted: --modality may have chosen it
            console.print(f"scale: {pipeline.scale_note}{pixel_source}", highlight=False)
    if summary["frames"]:
        _print_summary(summary)
    for skipped in summary["skipped"]:
        console.print(f"[yellow]skipped[/] {escape(skipped['file'])}: {escape(skipped['reason'])}", highlight=False,
                      soft_wrap=True)
    if summary_json:
        write_json(summary_json, summary)
    if save_calibration:
        _save_calibration(model, summary["scale"]["calibration"])
    if not summary["frames"]:
        raise _nothing_processed(summary)
    if summary["errors"]:  # a stalled source, a camera lost for good, a failed inference: the run ended early
        raise CscError(f"stopped after {summary['frames']} frames: {summary['errors'][0]}",
                       fix="check the camera or stream; a supervisor (e.g. systemd Restart=on-failure) can restart "
                           "the run", exit_code=1)


def _read_ahead(camera, video, images, seed, width, height, fps, stall_timeout: float) -> ReadAhead:
    """`--modality auto` on a camera, a video or images: the source opened and its first frames read ahead
    (`ReadAhead`), waiting for a frame at most READ_AHEAD_WAIT s (or the stall timeout, if shorter). Ctrl-C while
    it waits closes the source first."""
    opened = _open_source(camera, video, images, None, seed, width, height, fps)
    if opened.live:
        console.print("reading the first frames, to choose the model by their optics …", highlight=False)
    try:
        return ReadAhead(opened, OPTICS_FRAMES, min(stall_timeout, READ_AHEAD_WAIT))
    except BaseException:
        opened.close()
        raise


def _first_optics(read: ReadAhead) -> str:
    """`--modality auto`: the optics most of the lit frames among a camera's, a video's or a folder's first frames
    (`ReadAhead`: up to OPTICS_FRAMES lit ones, as many as the run's optics check looks at) show, where most are
    label-free — so that unstained cells under an inverted microscope run the bundled label-free model untold —
    else ``auto`` (the smear model; the run's optics check warns where it does not suit)."""
    found = Counter(frame.detected_optics().modality for frame in read.first if not frame.blank)
    if not found:
        seen = (f"no lit frame among the first {len(read.first)}" if read.first else
                "no frame (the source ended)" if read.ended else f"no frame in the first {read.wait:g} s")
        console.print(f"optics: {seen} to judge them by: the stained-smear model (--modality names the optics)",
                      highlight=False)
        return "auto"
    label_free = Counter({name: n for name, n in found.items() if name in LABEL_FREE})
    if 2 * sum(label_free.values()) <= sum(found.values()):
        return "auto"
    optics = label_free.most_common(1)[0][0]
    console.print(f"optics: the first frames look {optics}: the bundled label-free model ({LABEL_FREE_MODEL.name}; "
                  "--modality stained keeps the smear model)", highlight=False)
    return optics


def _bundled_model(modality: str) -> Path:
    """The bundled model for these optics: the label-free one for label-free optics where it is bundled, else the
    stained-smear model (with a note, since the run's optics check will then warn)."""
    if modality in LABEL_FREE:
        if LABEL_FREE_MODEL.exists():
            return LABEL_FREE_MODEL
        console.print(f"[yellow]note:[/] no bundled label-free model ({LABEL_FREE_MODEL.name}); using the stained-smear "
                      "model — train one with `python -m benchmarks.real.label_free_model`, or pass --model", highlight=False)
    return DEFAULT_MODEL


CAMERA_CONFIG = ".camera.json"  # beside the model: {"pixel_size_um": 0.194} for the microscope it serves


def _parse_pixel_size(text: str) -> float | None:
    """--pixel-size: ``auto`` (None) or a positive number of µm per pixel."""
    from runtime.errors import CscError

    if text.strip().lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise CscError(f"--pixel-size must be 'auto' or a positive number of µm per pixel, got {text!r}",
                       fix="e.g. --pixel-size 0.194, or leave it out to calibrate from the frames")
    return value


def _save_calibration(model: Path, calibration: dict | None) -> None:
    """MODEL.camera.json with the calibrated pixel size (and how it was found), written atomically."""
    from runtime.errors import CscError
    from runtime.io.writers import write_json

    if not calibration or calibration["pixel_size_um"] is None:
        raise CscError("nothing to save: the run made no calibration", path=model.with_suffix(CAMERA_CONFIG),
                       fix="run on frames with cells in view, without --pixel-size")
    path = model.with_suffix(CAMERA_CONFIG)
    write_json(path, {"pixel_size_um": calibration["pixel_size_um"], "calibration": calibration})
    console.print(f"calibration saved: {escape(str(path))}", highlight=False)


def _pixel_size(given: float | None, model: Path) -> tuple[float | None, str]:
    """The frames' pixel size: --pixel-size, else MODEL.camera.json beside the model, else None (the model's)."""
    from runtime.errors import CscError

    if given is not None:
        return given, ""
    config = model.with_suffix(CAMERA_CONFIG)
    if not config.is_file():
        return None, ""
    import json

    try:
        value = json.loads(config.read_text(encoding="utf-8"))["pixel_size_um"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise ValueError(f"'pixel_size_um' must be a positive number, got {value!r}")  # NaN fails too
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise CscError(f"unreadable camera config ({type(err).__name__}: {err})", path=config,
                       fix='write {"pixel_size_um": 0.194} (the camera\'s µm per pixel), or pass --pixel-size') from None
    return float(value), f" (from {config.name})"


def _open_source(camera, video, images, size, seed, width, height, fps):
    from runtime.io.sources import CameraSource, DemoSource, ImageSource, VideoSource

    if camera is not None:
        return CameraSource(camera, width, height, fps, on_message=lambda m: console.print(f"[yellow]{escape(m)}[/]"))
    if video is not None:
        return VideoSource(str(video))
    if images is not None:
        return ImageSource(images)
    return DemoSource(size=size, seed=seed)


def _print_summary(summary: dict) -> None:
    console.print(f"{summary['frames']} frames in {summary['seconds']} s: [bold]{summary['fps']} FPS[/] end-to-end "
                  f"({summary['backend']}); dropped {summary['dropped']}"
                  + (f"; {summary['blank_frames']} blank (lens cap, lamp off, empty field: counted 0)"
                     if summary["blank_frames"] else "")
                  + (" — interrupted" if summary["interrupted"] else ""), highlight=False)
    table = Table(title="per-stage latency (ms)")
    for col in ("stage", "mean", "p50", "p90"):
        table.add_column(col, justify="right")
    for stage, s in summary["stages"].items():
        table.add_row(stage, str(s["mean_ms"]), str(s["p50_ms"]), str(s["p90_ms"]))
    console.print(table)
    counts = Table(title="cells per frame")
    for col in ("class", "mean", "min", "max", "accuracy vs truth"):
        counts.add_column(col, justify="right")
    acc = summary.get("versus_truth", {}).get("count_accuracy", {})
    for name, s in summary["counts"].items():
        a = acc.get(name)
        counts.add_row(name, str(s["mean"]), f"{s['min']:g}", f"{s['max']:g}", "—" if a is None else f"{100 * a:.1f} %")
    console.print(counts)
    if summary["scale"]["warning"]:
        console.print(f"[bold yellow]{escape(summary['scale']['warning'])}[/]", highlight=False)
    if summary["domain"]["optics"]["warning"]:
        console.print(f"[bold yellow]{escape(summary['domain']['optics']['warning'])}[/]", highlight=False)
    if summary["domain"]["warning"]:
        console.print(f"[bold yellow]{summary['domain']['frames_unlike_training']} of {summary['frames']} frames "
                      "looked unlike the training data: counts above are unreliable[/]", highlight=False)


def _nothing_processed(summary: dict):
    """The error for a run that processed no frame: scripts must not read an exit 0 with no counts as success."""
    from runtime.errors import CscError

    if summary["errors"]:
        return CscError(f"no frame processed: {summary['errors'][0]}", exit_code=1)
    if summary["interrupted"]:
        return CscError("no frame processed: interrupted before the first frame")
    if summary["skipped"]:
        n = len(summary["skipped"])
        return CscError(f"no frame processed: all {n} images unreadable (each listed above)", path=summary["source"],
                        fix="re-export them as PNG, TIFF or JPEG")
    return CscError("no frame processed: the source gave no frames", path=summary["source"])


main = entry(app)
