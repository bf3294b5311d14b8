"""The whole pipeline with ONNX Runtime and the bundled model: demo, video, images, interrupts, tiling, sources."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.backends import open_runner
from runtime.backends.base import Runner
from runtime.backends.onnxruntime import OnnxRuntimeRunner
from runtime.cli.run import DEFAULT_MODEL
from runtime.counting.counter import CellCounter
from runtime.errors import CscError
from runtime.backends.model_meta import ModelMetadata
from runtime.pipeline.stream import Pipeline, RunOptions, Segmenter
from runtime.data.simulator import SimConfig, SimulatedMicroscope
from runtime.io.sources import (READ_AHEAD, CameraSource, DemoSource, Frame, ImageSource, MemorySource, ReadAhead, Source,
                                VideoSource)
from runtime.pipeline.tiling import Tiler, tile_starts


@pytest.fixture(scope="module")
def runner():
    with OnnxRuntimeRunner(DEFAULT_MODEL) as r:
        yield r


def test_bundled_model_ships_with_metadata():
    assert DEFAULT_MODEL.is_file() and DEFAULT_MODEL.stat().st_size < 10e6
    with OnnxRuntimeRunner(DEFAULT_MODEL) as r:
        assert r.metadata.classes == ["background", "rbc", "macrophage"] and r.input_size == (512, 512)


def test_demo_pipeline_counts_match_the_simulated_truth(runner, tmp_path):
    summary = Pipeline(DemoSource(seed=3), runner, options=RunOptions(max_frames=12, save_csv=tmp_path / "c.csv")).run()
    assert summary["frames"] == 12 and summary["dropped"] == 0 and not summary["errors"]
    truth = summary["versus_truth"]
    assert abs(truth["count_accuracy"]["rbc"] - 1) < 0.1, truth
    # ~5 macrophages per frame on a slowly drifting slide: one missed cell is 20 %, so judge the error per frame
    assert truth["mean_abs_error"]["macrophage"] <= 1.5, truth
    rows = (tmp_path / "c.csv").read_text().splitlines()
    assert rows[0] == "frame,source,rbc,macrophage,fps,pixel_size_um" and len(rows) == 13
    assert set(summary["stages"]) == {"capture", "infer", "post"}


def test_video_file_nothing_dropped_and_overlay_video_written(runner, tmp_path):
    microscope = SimulatedMicroscope(SimConfig(height=512, width=512), seed=8)
    path = tmp_path / "in.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (512, 512))
    truth = []
    for i in range(6):
        frame = microscope.frame(i)
        writer.write(frame.image)
        truth.append(frame.counts)
    writer.release()
    counted = []
    summary = Pipeline(VideoSource(str(path)), runner,
                       options=RunOptions(save_video=tmp_path / "out.avi", save_cells=tmp_path / "cells.csv"),
                       on_frame=lambda f, r, fps: counted.append(r.counts)).run()
    assert summary["frames"] == 6 and summary["dropped"] == 0
    for got, want in zip(counted, truth):
        assert abs(got["rbc"] - want["rbc"]) <= max(3, 0.15 * want["rbc"])
    assert cv2.VideoCapture(str(tmp_path / "out.avi")).get(cv2.CAP_PROP_FRAME_COUNT) == 6
    assert (tmp_path / "cells.csv").read_text().count("\n") > 6


def test_frames_of_another_size_are_fitted_into_the_overlay_video(runner, tmp_path):
    """A video has one frame size (the first frame's): OpenCV's writer dropped the others without a word."""
    microscope = SimulatedMicroscope(SimConfig(height=512, width=512), seed=1)
    images = [microscope.frame(i).image for i in range(3)]
    images[1] = cv2.resize(images[1], (700, 300))
    for i, image in enumerate(images):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), image)
    warnings = []
    summary = Pipeline(ImageSource(str(tmp_path / "*.png")), runner, on_warning=warnings.append,
                       options=RunOptions(save_video=tmp_path / "out.avi", pixel_size_um=0.4)).run()
    assert summary["frames"] == 3
    assert cv2.VideoCapture(str(tmp_path / "out.avi")).get(cv2.CAP_PROP_FRAME_COUNT) == 3
    assert [w for w in warnings if "fitted into the video's 512×512 px" in w and "f1.png" in w], warnings


def test_a_glob_with_two_stars_reaches_into_subfolders_and_names_its_images_apart(tmp_path):
    """'runs/**/*.png' is how a shell says "every PNG below runs/"; glob without recursive=True took ``**`` for one
    folder level and left out the deeper images, and two images of one name in different folders gave CSV rows
    that read alike. A folder whose name ends in .png is no image."""
    image = np.zeros((8, 8, 3), np.uint8)
    for path in ("runs/day1/001.png", "runs/day1/002.png", "runs/day2/late/001.png", "runs/top.png"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / path), image)
    (tmp_path / "runs" / "folder.png").mkdir()
    source = ImageSource(str(tmp_path / "runs" / "**" / "*.png"))
    assert [f.source for f in source.frames()] == ["day1/001.png", "day1/002.png", "day2/late/001.png", "top.png"]
    assert [f.source for f in ImageSource(str(tmp_path / "runs" / "day1")).frames()] == ["001.png", "002.png"]


def test_corrupt_image_in_a_folder_is_skipped_and_listed(runner, tmp_path):
    microscope = SimulatedMicroscope(SimConfig(height=512, width=512), seed=1)
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), microscope.frame(i).image)
    (tmp_path / "f1.png").write_bytes(b"broken")
    summary = Pipeline(ImageSource(str(tmp_path)), runner).run()
    assert summary["frames"] == 2
    assert summary["skipped"][0]["file"].endswith("f1.png")


@pytest.mark.parametrize("strip, pixel_size, reason", [
    (1, None, "300×1 px: too small"), (2, 0.194, "300×2 px, 146×1 px at the model's scale: too small")])
def test_a_strip_in_a_folder_is_skipped_and_listed(runner, tmp_path, strip, pixel_size, reason):
    """An image too small to count at the model's scale (a class map under 2 px across, `MIN_SIDE`) is listed as
    an unreadable file is, and the images after it are counted, with and without calibration."""
    microscope = SimulatedMicroscope(SimConfig(height=512, width=512), seed=1)
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), microscope.frame(i).image)
    cv2.imwrite(str(tmp_path / "f1.png"), microscope.frame(1).image[:strip, :300])
    cv2.imwrite(str(tmp_path / "f0.png"), microscope.frame(0).image[:1, :1])
    summary = Pipeline(ImageSource(str(tmp_path)), runner, options=RunOptions(pixel_size_um=pixel_size)).run()
    assert summary["frames"] == 1 and not summary["errors"], summary
    assert [Path(s["file"]).name for s in summary["skipped"]] == ["f0.png", "f1.png"]
    assert reason in summary["skipped"][1]["reason"]


def test_a_stream_of_frames_too_small_is_listed_once():
    """A camera or video whose every frame is too small at the model's scale (a pixel size typed in mm: ×0.0005)
    was listed once a frame: a list, and a summary, that grew for as long as the run lasted (400 entries a second
    on the demo) and printed as many lines at its end. Frames of one name and size are listed once."""

    class Strips(Source):
        def frames(self):
            for i in range(50):
                yield Frame(i, np.full((1, 300, 3), 200, np.uint8), self.name)

    summary = Pipeline(Strips("camera:0", live=True), ThresholdRunner(128),
                       options=RunOptions(calibrate=False, host_budget=False)).run()
    assert summary["frames"] == 0 and summary["skipped"] == [
        {"file": "camera:0", "reason": "300×1 px: too small to count (a cell needs 2 px a side or more)"}]


def test_csv_complete_after_ctrl_c(runner, tmp_path):
    def interrupt(frame, result, fps):
        if frame.index == 4:
            raise KeyboardInterrupt

    summary = Pipeline(DemoSource(seed=1), runner, options=RunOptions(save_csv=tmp_path / "c.csv"),
                       on_frame=interrupt).run()
    assert summary["interrupted"] and summary["frames"] == 5
    rows = (tmp_path / "c.csv").read_text().splitlines()
    assert len(rows) == 6 and all(len(r.split(",")) == 6 for r in rows)


class ThresholdRunner(Runner):
    """A stand-in model: class 1 where the blue channel is dark. Tiling must reproduce it exactly."""

    name = "threshold"

    def __init__(self, size=128, batch="dynamic"):
        super().__init__()
        self.metadata = ModelMetadata(classes=["background", "rbc", "macrophage"], input_size=(size, size),
                                      arch="test", batch=batch)
        self.calls = 0

    def activate(self):
        """Nothing to load: the stand-in model is a threshold."""

    def deactivate(self):
        """Nothing to release."""

    def infer(self, frames):
        self.check_frames(frames)
        self.calls += 1
        return (frames[..., 0] < 100).astype(np.uint8)


def test_tiling_stitches_exactly_and_counts_seam_cells_once():
    image = np.full((300, 420, 3), 200, np.uint8)
    for x in (64, 100, 128, 170, 300):  # discs across tile seams
        cv2.circle(image, (x, 150), 14, (50, 50, 50), -1)
    runner = ThresholdRunner(128)
    stitched = Segmenter(runner, overlap=32).segment_tiled(image)
    assert np.array_equal(stitched, (image[..., 0] < 100).astype(np.uint8))
    assert CellCounter().count(stitched).counts["rbc"] == 5  # each disc once, seams and a touching pair included
    assert tile_starts(420, 128, 32) == [0, 96, 192, 288, 292] and tile_starts(100, 128, 32) == [0]
    small = np.full((90, 100, 3), 200, np.uint8)
    assert Segmenter(runner).segment_tiled(small).shape == (90, 100)


def test_frames_reach_the_models_scale_by_the_datasets_resize():
    """`csc-run --pixel-size` and `csc-data rescale` resize with one function (issue #27)."""
    from runtime.data.rescale import resize_to, zoomed_size

    image = np.random.default_rng(0).integers(0, 255, (301, 207, 3), np.uint8)
    for zoom in (0.485, 1.7):
        segmenter = Segmenter(ThresholdRunner(128), zoom=zoom)
        assert segmenter.model_shape(image.shape) == zoomed_size(image.shape, zoom) == resize_to(image, zoom).shape[:2]
        assert np.array_equal(segmenter.to_model(image), resize_to(image, zoom))
    assert Segmenter(ThresholdRunner(128)).to_model(image) is image


def test_large_frame_tiled_through_the_model_matches_its_ground_truth(runner):
    microscope = SimulatedMicroscope(SimConfig(mode="mixed", height=900, width=1200), seed=5)
    frame = microscope.frame(0)
    class_map = Segmenter(runner, overlap=64).segment_tiled(frame.image)
    counts = CellCounter().count(class_map).counts
    for name, true in frame.counts.items():
        assert abs(counts[name] - true) <= max(2, 0.1 * true), (name, counts[name], true)


def test_tiler_split_shapes():
    tiles, origins = Tiler(128, 128, 32).split(np.zeros((300, 420, 3), np.uint8))
    assert tiles.shape == (len(origins), 128, 128, 3) and origins[0] == (0, 0) and origins[-1] == (172, 292)


def test_a_tile_no_wider_than_the_overlap_overlaps_by_half_a_tile():
    frame = np.random.default_rng(0).integers(0, 3, (159, 131, 3), dtype=np.uint8)
    tiler = Tiler(64, 64, 64)
    tiles, origins = tiler.split(frame)
    assert sorted({y for y, _ in origins}) == [0, 32, 64, 95] and sorted({x for _, x in origins}) == [0, 32, 64, 67]
    assert np.array_equal(tiler.stitch(tiles[..., 0], origins, 159, 131), frame[..., 0])
    with pytest.raises(ValueError, match="overlap"):
        Tiler(64, 64, -1).split(frame)


class FastLiveSource(Source):
    def __init__(self, n=60):
        super().__init__("fake-camera", live=True)
        self.n = n

    def frames(self):
        image = np.full((128, 128, 3), 200, np.uint8)
        cv2.circle(image, (64, 64), 14, (50, 50, 50), -1)  # not blank: blank frames skip the (slow) model
        for i in range(self.n):
            yield Frame(i, image, self.name)


class SlowRunner(ThresholdRunner):
    def infer(self, frames):
        import time

        time.sleep(0.02)
        return super().infer(frames)


def test_live_source_drops_oldest_frames_when_behind():
    summary = Pipeline(FastLiveSource(), SlowRunner(128), options=RunOptions(queue_size=2)).run()
    assert summary["dropped"] > 0 and summary["frames"] + summary["dropped"] <= 60 and summary["frames"] > 0


class FakeCapture:
    def __init__(self, opened=True, reads=0):
        self.opened, self.reads = opened, reads

    def isOpened(self):
        return self.opened

    def set(self, *a):
        return True

    def read(self):
        if self.reads > 0:
            self.reads -= 1
            return True, np.zeros((8, 8, 3), np.uint8)
        return False, None

    def release(self):
        pass


def test_camera_that_does_not_exist():
    with pytest.raises(CscError, match="cannot open camera '7'"):
        CameraSource("7", opener=lambda *a: FakeCapture(opened=False))


def test_lost_camera_is_retried_with_backoff_then_a_clear_error(monkeypatch):
    import runtime.io.sources as sources

    sleeps, messages = [], []
    monkeypatch.setattr(sources.time, "sleep", sleeps.append)
    captures = iter([FakeCapture(reads=3)] + [FakeCapture(opened=False)] * 5)
    camera = CameraSource("0", retries=3, on_message=messages.append, opener=lambda *a: next(captures))
    frames = camera.frames()
    assert len([next(frames) for _ in range(3)]) == 3
    with pytest.raises(CscError, match="lost and not back after 3 attempts"):
        next(frames)
    assert sleeps == [0.5, 1.0, 2.0] and "reconnecting (1/3)" in messages[0]


def test_a_camera_that_reopens_but_gives_no_frame_is_not_back(monkeypatch):
    """A camera that opens again after each loss yet never delivers a frame (a busy V4L2 device, an RTSP server that
    accepts and sends nothing): the attempts count since the last frame, so the backoff grows and the run gets the
    clear error, instead of "reconnecting (1/3)" every 0.5 s for ever."""
    import runtime.io.sources as sources

    sleeps, messages = [], []
    monkeypatch.setattr(sources.time, "sleep", sleeps.append)
    captures = iter([FakeCapture(reads=1)] + [FakeCapture(opened=True)] * 4)  # opened, and not one frame
    camera = CameraSource("0", retries=3, on_message=messages.append, opener=lambda *a: next(captures))
    frames = camera.frames()
    next(frames)
    with pytest.raises(CscError, match="lost and not back after 3 attempts"):
        next(frames)
    assert sleeps == [0.5, 1.0, 2.0] and "reconnecting (3/3)" in messages[-1]


def test_an_empty_frame_from_a_camera_is_a_failed_read_not_a_crash(monkeypatch):
    """A read that succeeds with no image (OpenCV's None for an empty frame, which GStreamer and RTSP backends give
    while a stream restarts) is a failed read: the camera is reopened, and the run never meets a None image (the
    capture ended with "AttributeError: 'NoneType' object has no attribute 'size'")."""
    import runtime.io.sources as sources

    class EmptyThenFrames(FakeCapture):
        def read(self):
            self.reads += 1
            return (True, None) if self.reads == 2 else (True, np.zeros((0, 0, 3), np.uint8)) if self.reads == 3 else \
                (True, np.zeros((8, 8, 3), np.uint8))

    sleeps = []
    monkeypatch.setattr(sources.time, "sleep", sleeps.append)
    capture = EmptyThenFrames()
    camera = CameraSource("0", opener=lambda *a: capture)
    frames = camera.frames()
    images = [next(frames).image for _ in range(3)]
    assert all(image.shape == (8, 8, 3) for image in images) and sleeps == [0.5, 1.0]


@pytest.mark.skipif(sys.platform != "linux", reason="X displays are Linux's here")
def test_a_display_that_does_not_answer_is_no_display(monkeypatch):
    """$DISPLAY naming an X server that is gone (an ssh -X session that ended): OpenCV's Qt window aborted the whole
    process at the first frame, so the run must go headless instead."""
    from runtime.pipeline.stream import display_available

    monkeypatch.setenv("DISPLAY", ":9999")  # no server there
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert not display_available()


def test_runner_selection(tmp_path, monkeypatch):
    import runtime.backends.openvino as openvino_backend

    monkeypatch.setattr(openvino_backend, "openvino_available", lambda: False)
    runner, reason = open_runner(DEFAULT_MODEL, "auto")
    assert isinstance(runner, OnnxRuntimeRunner) and "no TensorRT engine" in reason and "not installed" in reason
    with pytest.raises(CscError, match="cannot run a TensorRT engine"):
        open_runner(tmp_path / "m.engine", "ort")
    with pytest.raises(CscError, match="needs an engine file — build one: csc-export build-engine"):
        open_runner(DEFAULT_MODEL, "trt")
    (tmp_path / "m.engine").write_bytes(b"x")
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(CscError, match=f"needs an engine file — pass the one beside it: --model {tmp_path / 'm.engine'}"):
        open_runner(tmp_path / "m.onnx", "trt")
    trt_runner, reason = open_runner(tmp_path / "m.engine", "auto")
    assert trt_runner.name == "tensorrt" and reason == "a TensorRT engine was given"
    # A file without a sidecar is no engine on any machine: the sidecar names the flavour to import, so its absence
    # is the first thing activation says; never a traceback, never a runner that pretends to run.
    with pytest.raises(CscError, match="engine has no sidecar"):
        trt_runner.activate()


def test_wrong_frame_size_is_a_clear_error(runner):
    with pytest.raises(CscError, match=r"frames must be uint8 \(N, 512, 512, 3\)"):
        runner.infer(np.zeros((1, 256, 256, 3), np.uint8))


def _csc_run(*args):
    return subprocess.run([sys.executable, "-c", "from runtime.cli.run import main; main()", *args],
                          capture_output=True, text=True, timeout=300)


def test_cli_demo_run_writes_the_counts_csv(tmp_path):
    run = _csc_run("--source", "demo", "--no-show", "--max-frames", "4", "--save-csv", str(tmp_path / "c.csv"),
                   "--summary", str(tmp_path / "s.json"))
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "c.csv").read_text().splitlines()[0] == "frame,source,rbc,macrophage,fps,pixel_size_um"
    assert "FPS" in run.stderr


@pytest.mark.parametrize("args, message", [
    (["--source", "demo", "--model", "/nonexistent/model.onnx", "--no-show"], "model file not found"),
    (["--no-show"], "give exactly one source"),
    (["--video", "/nonexistent.mp4", "--no-show"], "video file not found"),
    # camera capture settings were ignored without a word on other sources (a smaller demo frame asked for in vain)
    (["--source", "demo", "--width", "256", "--height", "256", "--max-frames", "1", "--no-show"],
     "--width, --height without --camera"),
    (["--images", "/nonexistent", "--fps", "5", "--no-show"], "--fps without --camera"),
])
def test_cli_failures_are_one_line_without_traceback(args, message):
    run = _csc_run(*args)
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr


def test_opencv_gets_only_the_cores_the_backend_leaves_free(runner):
    import os

    assert runner.host_threads == runner.threads >= 1  # ONNX Runtime on the CPU keeps its threads busy
    seen = []
    before = cv2.getNumThreads()
    gpu_like = ThresholdRunner(128)  # host_threads 0: inference happens elsewhere
    for backend, expected in ((runner, max(1, (os.cpu_count() or 1) - runner.threads)), (gpu_like, os.cpu_count())):
        size = backend.input_size[0]
        Pipeline(DemoSource(size=size, seed=0), backend, options=RunOptions(max_frames=2),
                 on_frame=lambda *_: seen.append(cv2.getNumThreads())).run()
        assert seen[-1] == expected
        assert cv2.getNumThreads() == before, "the process-wide setting is restored after the run"
    cv2.setNumThreads(before + 3)  # an embedding program's own choice is left alone when asked
    Pipeline(DemoSource(size=512, seed=0), runner, options=RunOptions(max_frames=2, host_budget=False),
             on_frame=lambda *_: seen.append(cv2.getNumThreads())).run()
    cv2.setNumThreads(before)
    assert seen[-1] == before + 3


def test_the_heap_is_committed_after_the_first_frame_then_at_doubling_gaps():
    """Under the host budget the allocator's held pages are made resident (runtime/io/heap.py) once the first frame
    is counted, then after gaps that double up to a ceiling."""
    from runtime.pipeline.stream import CommitSchedule

    schedule = CommitSchedule(first=30, last=100)
    due = [t for t in range(0, 400) if schedule.due(float(t))]
    assert due == [0, 30, 90, 190, 290, 390]  # gaps 30, 60, 100 (not 120), 100, 100


def test_a_run_commits_its_heap_only_under_the_host_budget(monkeypatch):
    from runtime.pipeline import stream

    calls, frames = [], []
    monkeypatch.setattr(stream, "commit_heap", lambda: calls.append(len(frames)))
    backend = ThresholdRunner(128)
    for budget in (True, False):
        Pipeline(DemoSource(size=128, seed=0), backend, options=RunOptions(max_frames=3, calibrate=False,
                                                                          host_budget=budget),
                 on_frame=lambda *_: frames.append(1)).run()
    assert calls == [1], "committed once, right after the first counted frame of the run with the budget"


def test_cli_images_all_unreadable_is_a_failure_listing_every_file(tmp_path):
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"not an image")
    earlier = tmp_path / "results"  # an earlier run's files, which this one never gets to replace
    earlier.mkdir()
    (earlier / "counts.csv").write_text("frame,source,rbc,macrophage,fps,pixel_size_um\n0,old.png,5,1,,0.4\n")
    (earlier / "cells.csv").write_text("frame,source,id\n0,old.png,1\n")
    kept = {path: path.read_text() for path in earlier.iterdir()}
    run = _csc_run("--images", str(tmp_path), "--no-show", "--summary", str(tmp_path / "s.json"),
                   "--save-csv", str(earlier / "counts.csv"), "--save-cells", str(earlier / "cells.csv"))
    assert run.returncode != 0 and "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no frame processed" in errors[0] and "2 images" in errors[0], run.stderr
    skipped = [line for line in run.stderr.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 2 and "a.png" in skipped[0] and "b.png" in skipped[1]
    assert json.loads((tmp_path / "s.json").read_text())["frames"] == 0, "the summary is still written"
    assert {path: path.read_text() for path in earlier.iterdir()} == kept, "the earlier CSVs left whole"


def test_a_pixel_size_that_would_enlarge_frames_past_the_calibrations_limit_is_refused():
    """--pixel-size 40 on a 0.4 µm/px model (a value in the wrong unit) enlarged each frame ×100 a side: a 512 px
    frame became 7.8 GB and the run died of memory; refused before a frame, as a calibration that far is."""
    with pytest.raises(CscError, match=r"40 µm/px would be enlarged ×100 .*at most ×4"):
        Pipeline(MemorySource([]), ThresholdRunner(128), options=RunOptions(pixel_size_um=40.0))
    assert Pipeline(MemorySource([]), ThresholdRunner(128), options=RunOptions(pixel_size_um=1.6)).segmenter.zoom == 4


def test_a_frame_at_half_the_pixel_size_gives_the_same_counts_mapped_back_to_its_pixels(runner, tmp_path):
    """--pixel-size: the same field at twice the magnification (0.2 µm/px) is shrunk to the model's 0.4 µm/px, so
    it counts like the original, and the cell table is in the enlarged frame's own pixels."""
    frame = SimulatedMicroscope(SimConfig(mode="mixed", height=512, width=512), seed=9).frame(0).image
    enlarged = cv2.resize(frame, (1024, 1024), interpolation=cv2.INTER_LINEAR)
    runs = []
    for image, pixel_size in ((frame, None), (enlarged, 0.2)):
        options = RunOptions(save_cells=tmp_path / f"{pixel_size}.csv", pixel_size_um=pixel_size)
        runs.append(Pipeline(MemorySource([image]), runner, options=options).run())
    assert runs[1]["scale"]["zoom"] == 0.5 and "rescaled" in runs[1]["scale"]["note"]
    assert runs[0]["scale"]["zoom"] == 1.0 and "calibrated" in runs[0]["scale"]["note"], "not given: calibrated"
    for name in ("rbc", "macrophage"):
        assert abs(runs[0]["counts"][name]["total"] - runs[1]["counts"][name]["total"]) <= 1, name
    import csv

    rows = [list(csv.DictReader(open(tmp_path / f"{p}.csv"))) for p in (None, 0.2)]
    cx = [sorted(float(r["cx"]) for r in table if r["class"] == "macrophage") for table in rows]
    assert len(cx[0]) == len(cx[1]) and np.allclose(cx[1], 2 * np.asarray(cx[0]), atol=3)
    assert max(cx[1]) > 512, "positions in the enlarged frame's pixels"


class AllMacrophageRunner(ThresholdRunner):
    """A model lost on foreign frames: everything is "macrophage"."""

    def infer(self, frames):
        self.check_frames(frames)
        return np.full(frames.shape[:3], 2, np.uint8)


def test_frames_unlike_the_training_data_are_warned_about_once(tmp_path):
    warnings = []
    runner = AllMacrophageRunner(64)
    runner.metadata.class_fractions = {"rbc": 0.3, "macrophage": 0.25}
    frame = np.full((64, 64, 3), 200, np.uint8)
    cv2.circle(frame, (20, 30), 9, (90, 90, 90), -1)  # not blank: a blank frame is never segmented
    source = MemorySource([frame] * 5)
    summary = Pipeline(source, runner, options=RunOptions(calibrate=False), on_warning=warnings.append).run()
    assert len(warnings) == 1 and "100 % macrophage" in warnings[0] and "at most 25 %" in warnings[0]
    assert summary["domain"]["frames_unlike_training"] == 5 and summary["domain"]["warning"] == warnings[0]
    plausible = ThresholdRunner(64)  # dark-blue pixels only: a few "rbc", within what it was trained on
    plausible.metadata.class_fractions = {"rbc": 0.3, "macrophage": 0.25}
    image = np.full((64, 64, 3), 200, np.uint8)
    cv2.circle(image, (32, 32), 8, (50, 50, 50), -1)
    quiet = []
    options = RunOptions(calibrate=False)  # one cell a frame is too few to calibrate on, and says so (tested apart)
    assert Pipeline(MemorySource([image] * 3), plausible, options=options, on_warning=quiet.append).run()["domain"]["warning"] is None
    assert not quiet


def test_frames_of_other_optics_than_the_models_are_warned_about_once():
    """A model records the optics it learnt from; a run on frames of another family (label-free DIC frames for a
    stained-smear model) is warned about once, from its first frames; matching frames, or a model that records
    nothing, stay quiet."""
    from runtime.data.simulator import make_microscope

    dic = [make_microscope("rbc", size=256, seed=7, optics="dic").frame(i).image for i in range(5)]
    stained = [make_microscope("rbc", size=256, seed=7).frame(i).image for i in range(5)]
    for trained, frames, warns in ((["stained"], dic, True), (["stained"], stained, False),
                                   (["brightfield", "dic", "phase"], dic, False), ([], dic, False)):
        runner = ThresholdRunner(256)
        runner.metadata.modalities = trained
        warnings = []
        # the ruler named: a label-free model's vote on the ruler is warned about too (test_calibration.py)
        summary = Pipeline(MemorySource(frames), runner, options=RunOptions(calibrate_on="rbc"),
                           on_warning=warnings.append).run()
        optics = summary["domain"]["optics"]
        assert (len(warnings) == 1 and "label-free images (dic)" in warnings[0]) if warns else not warnings, trained
        assert optics["warning"] == (warnings[0] if warns else None) and optics["model"] == trained
        assert sum(optics["frames"].values()) == (3 if trained else 0), "only the first frames are looked at"


def test_modality_picks_the_bundled_model(tmp_path, monkeypatch):
    from runtime.cli import run

    monkeypatch.setattr(run, "LABEL_FREE_MODEL", tmp_path / "label-free.onnx")
    assert run._bundled_model("dic") == run.DEFAULT_MODEL, "none bundled: the smear model, with a note"
    (tmp_path / "label-free.onnx").write_bytes(b"")
    assert run._bundled_model("phase") == tmp_path / "label-free.onnx"
    assert run._bundled_model("stained") == run._bundled_model("auto") == run.DEFAULT_MODEL


def test_the_bundled_label_free_model_counts_the_label_free_frames_the_smear_model_misses():
    """`--modality dic|phase|brightfield` runs `runtime/models/label-free.onnx` (issue #21): on simulated mixed
    label-free frames it counts the cells of both classes with no optics warning; the smear model, on DIC and
    unstained brightfield, finds a few RBCs among many false macrophages, and warns."""
    from runtime.cli import run
    from runtime.data.simulator import make_microscope

    assert run._bundled_model("dic") == run.LABEL_FREE_MODEL and run.LABEL_FREE_MODEL.is_file()
    options = RunOptions(pixel_size_um=0.4, calibrate=False)
    for optics in ("dic", "phase", "brightfield"):
        frames = [make_microscope("mixed", size=512, seed=77, optics=optics).frame(i) for i in range(2)]
        truth = {name: sum(f.counts[name] for f in frames) for name in ("rbc", "macrophage")}
        counted = {}
        for model in (run.LABEL_FREE_MODEL, DEFAULT_MODEL):
            warnings = []
            with OnnxRuntimeRunner(model) as runner:
                summary = Pipeline(MemorySource([f.image for f in frames]), runner, options=options,
                                   on_warning=warnings.append).run()
            counted[model.name] = ({name: summary["counts"][name]["total"] for name in truth}, warnings)
        label_free, quiet = counted[run.LABEL_FREE_MODEL.name]
        assert not quiet and abs(label_free["rbc"] / truth["rbc"] - 1) <= 0.15, (optics, truth, label_free)
        assert abs(label_free["macrophage"] - truth["macrophage"]) <= 3, (optics, truth, label_free)
        smear, warned = counted[DEFAULT_MODEL.name]
        assert len(warned) == 1 and f"label-free images ({optics})" in warned[0]
        if optics != "phase":
            assert smear["rbc"] < 0.2 * truth["rbc"] and smear["macrophage"] > 2 * truth["macrophage"], (optics, smear)


def test_a_folder_of_label_free_images_runs_the_label_free_model_untold(tmp_path):
    """`csc-run --images DIR` with no --model and no --modality: a folder whose first images look label-free (DIC)
    runs the bundled label-free model and says so; stained images keep the smear model; --modality stained keeps
    it too."""
    from typer.testing import CliRunner

    from runtime.cli.run import app
    from runtime.data.simulator import make_microscope

    for optics in ("dic", "stained"):
        folder = tmp_path / optics
        folder.mkdir()
        for i in range(2):
            cv2.imwrite(str(folder / f"f{i}.png"), make_microscope("mixed", size=256, seed=8, optics=optics).frame(i).image)
    summaries = {}
    for name, extra in (("dic", []), ("stained", []), ("dic", ["--modality", "stained"])):
        out = tmp_path / f"{name}{len(extra)}.json"
        result = CliRunner().invoke(app, ["--images", str(tmp_path / name), "--no-show", "--pixel-size", "0.4",
                                          "--summary", str(out), *extra])
        assert result.exit_code == 0, result.output
        summaries[name, bool(extra)] = (json.loads(out.read_text())["model"], " ".join(result.output.split()))
    model, said = summaries["dic", False]
    assert model.endswith("label-free.onnx") and "the first frames look dic" in said
    smear_model, smear_said = summaries["stained", False]
    assert smear_model.endswith("default.onnx") and "first frames look" not in smear_said
    assert summaries["dic", True][0].endswith("default.onnx")


class ImagesCapture(FakeCapture):
    """A camera (cv2.VideoCapture's interface) that delivers these images, then nothing."""

    def __init__(self, images):
        super().__init__()
        self.images = list(images)

    def read(self):
        return (True, self.images.pop(0)) if self.images else (False, None)


def test_a_camera_on_label_free_cells_runs_the_label_free_model_untold(tmp_path, monkeypatch):
    """`csc-run --camera 0`, nothing else, on an inverted microscope's unstained cells (the paper's own setup): the
    first lit frames are read ahead — past the dark frames a camera gives while it adjusts, which do not vote — and
    choose the bundled label-free model; the camera is opened once, and every frame read goes on to the run (a
    camera's may be dropped there when the run falls behind, as any live frame), the dark ones as blank."""
    from typer.testing import CliRunner

    import runtime.cli.run as run_cli
    from runtime.data.simulator import make_microscope

    microscope = make_microscope("mixed", size=256, seed=8, optics="dic")
    dark = np.zeros((256, 256, 3), np.uint8)
    images = [dark] * 4 + [microscope.frame(i).image for i in range(4)]
    opened = []
    monkeypatch.setattr(run_cli, "_open_source", lambda *args: opened.append(args) or CameraSource(
        "0", retries=0, opener=lambda *a: ImagesCapture(images)))
    out = tmp_path / "s.json"
    result = CliRunner().invoke(run_cli.app, ["--camera", "0", "--no-show", "--pixel-size", "0.4",
                                              "--save-csv", str(tmp_path / "c.csv"), "--summary", str(out)])
    summary = json.loads(out.read_text())
    assert summary["model"].endswith("label-free.onnx"), result.output
    assert "the first frames look dic" in " ".join(result.output.split())
    assert len(opened) == 1
    assert summary["frames"] + summary["dropped"] == 8 and summary["frames"] >= 2
    assert len((tmp_path / "c.csv").read_text().splitlines()) == summary["frames"] + 1


def test_options_that_need_no_frame_are_refused_before_the_camera_opens(monkeypatch):
    """Under --modality auto the camera is opened and read before the model: a wrong option must not wait for it."""
    from typer.testing import CliRunner

    import runtime.cli.run as run_cli

    opened = []
    monkeypatch.setattr(run_cli, "_open_source", lambda *args: opened.append(args) or StallingSource(n=0))
    for option, said in ((["--calibrate-on", "wbc"], "not a cell class"), (["--pixel-size", "abc"], "--pixel-size"),
                         (["--counting-device", "cuda"], "GPU"), (["--token", "t"], "--token without --serve")):
        result = CliRunner().invoke(run_cli.app, ["--camera", "0", "--no-show", *option])
        assert result.exit_code != 0 and said in str(result.exception), (option, result.exception)
    assert opened == []


def test_a_camera_that_stalls_at_the_start_stops_the_run_in_bounded_time(tmp_path, monkeypatch):
    """A camera that gives one frame and stalls while read ahead: the read ahead waits no longer than the stall
    timeout for a frame, the run's own timeout then stops it, with its summary and exit 1, as for any stall."""
    from typer.testing import CliRunner

    import runtime.cli.run as run_cli
    import runtime.pipeline.stream as pipeline_module

    from contextlib import nullcontext

    monkeypatch.setattr(pipeline_module, "JOIN_TIMEOUT", 0.2)
    monkeypatch.setattr(run_cli, "_open_source", lambda *args: StallingSource(n=1))
    monkeypatch.setattr(run_cli, "sigterm_as_interrupt", nullcontext)  # signal handlers: main thread only
    result = within(20, lambda: CliRunner().invoke(run_cli.app, [
        "--camera", "0", "--no-show", "--stall-timeout", "0.5", "--pixel-size", "0.4",
        "--summary", str(tmp_path / "s.json")]))
    summary = json.loads((tmp_path / "s.json").read_text())
    assert result.exit_code != 0 and summary["stalled"] and summary["frames"] == 1


def test_camera_config_beside_the_model_sets_the_pixel_size(tmp_path):
    from runtime.cli.run import _pixel_size

    model = tmp_path / "m.onnx"
    assert _pixel_size(None, model) == (None, "")
    (tmp_path / "m.camera.json").write_text('{"pixel_size_um": 0.194}')
    assert _pixel_size(None, model) == (0.194, " (from m.camera.json)")
    assert _pixel_size(0.3, model)[0] == 0.3, "--pixel-size wins"
    for bad in ('"big"', "NaN", "Infinity", "-0.2"):  # json reads NaN and Infinity as floats
        (tmp_path / "m.camera.json").write_text(f'{{"pixel_size_um": {bad}}}')
        with pytest.raises(CscError, match="m.camera.json.*positive number"):
            _pixel_size(None, model)


@pytest.mark.parametrize("args, message", [
    (["--summary", "{tmp}"], "--summary names a folder"),
    (["--save-csv", "{tmp}/a.csv", "--save-cells", "{tmp}/./a.csv"], "--save-cells and --save-csv name the same file"),
    (["--video", "{tmp}/in.avi", "--save-video", "{tmp}/in.avi"], "--save-video and --video name the same file"),
    # OpenCV has no container for it: the writer failed at the first counted frame, the summary lost
    (["--save-csv", "{tmp}/a.csv", "--save-video", "{tmp}/overlay.txt"], "overlay.txt: cannot write video"),
])
def test_outputs_that_would_clash_are_refused_before_the_run(tmp_path, args, message):
    """Nothing is read or written: the input video is still there as it was."""
    from typer.testing import CliRunner

    import runtime.cli.run as run_cli

    (tmp_path / "in.avi").write_bytes(b"a video")
    args = [a.format(tmp=tmp_path) for a in args]
    result = CliRunner().invoke(run_cli.app, [*(["--source", "demo"] if "--video" not in args else []), "--no-show",
                                              *args])
    assert isinstance(result.exception, CscError) and message in str(result.exception), result.output
    assert (tmp_path / "in.avi").read_bytes() == b"a video" and [p.name for p in tmp_path.iterdir()] == ["in.avi"]


def test_a_long_run_keeps_no_per_frame_lists():
    """Stage times and per-class counts are running figures: memory held at frame 1700 is what it was at frame
    200 (the per-frame lists they replace grew by ≈150 bytes a frame: 225 kB here)."""
    import tracemalloc

    image = np.full((128, 128, 3), 200, np.uint8)
    cv2.circle(image, (64, 64), 14, (50, 50, 50), -1)
    held = {}

    def sample(frame, result, fps):
        if frame.index in (200, 1700):
            held[frame.index] = tracemalloc.get_traced_memory()[0]

    tracemalloc.start()
    try:
        summary = Pipeline(MemorySource([image] * 1701), ThresholdRunner(128), on_frame=sample,
                           options=RunOptions(calibrate=False)).run()
    finally:
        tracemalloc.stop()
    assert summary["frames"] == 1701
    assert summary["counts"]["rbc"] == {"mean": 1.0, "min": 1.0, "max": 1.0, "total": 1701.0}
    assert set(summary["stages"]) == {"capture", "infer", "post"}
    assert held[1700] - held[200] < 100_000, held


class StallingSource(Source):
    """A camera that delivers a few frames, then blocks inside its read forever (a stalled RTSP stream)."""

    def __init__(self, n=5):
        super().__init__("stalling-camera", live=True)
        self.n, self.closed = n, False
        self._never = __import__("threading").Event()

    def frames(self):
        image = np.full((128, 128, 3), 200, np.uint8)
        cv2.circle(image, (64, 64), 14, (50, 50, 50), -1)
        for i in range(self.n):
            yield Frame(i, image, self.name)
        self._never.wait()  # blocks: no frame, no end

    def close(self):
        self.closed = True


def within(seconds, work):
    """``work()`` on a thread of its own: a run or a read ahead that hangs fails the test instead of hanging it."""
    import threading

    done = []
    worker = threading.Thread(target=lambda: done.append(work()), daemon=True)
    worker.start()
    worker.join(timeout=seconds)
    assert done, f"still running after {seconds} s"
    return done[0]


def run_within(seconds, pipeline):
    return within(seconds, pipeline.run)


def read_ahead_within(seconds, *args, **kwargs):
    return within(seconds, lambda: ReadAhead(*args, **kwargs))


def test_a_stalled_source_stops_the_run_with_its_files_closed(tmp_path, monkeypatch):
    import runtime.pipeline.stream as pipeline_module

    monkeypatch.setattr(pipeline_module, "JOIN_TIMEOUT", 0.2)
    source = StallingSource()
    pipeline = Pipeline(source, ThresholdRunner(128),
                        options=RunOptions(calibrate=False, stall_timeout=0.5, save_csv=tmp_path / "c.csv"))
    summary = run_within(15, pipeline)
    assert summary["stalled"] and "no frame for 0.5 s" in summary["errors"][0]
    assert summary["frames"] + summary["dropped"] == 5 and summary["frames"] >= 4, "the frame in flight finished too"
    assert source.closed
    rows = (tmp_path / "c.csv").read_text().splitlines()
    assert len(rows) == summary["frames"] + 1, "every frame's row written and flushed"


def test_frames_before_a_stall_are_counted_while_the_run_still_calibrates(tmp_path, monkeypatch):
    """A camera that gives two frames and stalls, while the run (no pixel size given) waits for a third lit frame to
    calibrate on: the two are calibrated on, counted and written before the run stops (they were lost)."""
    import runtime.pipeline.stream as pipeline_module

    monkeypatch.setattr(pipeline_module, "JOIN_TIMEOUT", 0.2)
    summary = Pipeline(StallingSource(n=2), ThresholdRunner(128),
                       options=RunOptions(stall_timeout=0.5, save_csv=tmp_path / "c.csv")).run()
    assert summary["stalled"] and summary["frames"] == 2 and len(summary["errors"]) == 1
    assert summary["scale"]["calibration"]["frames"] == 2
    assert len((tmp_path / "c.csv").read_text().splitlines()) == 3


def test_a_stall_while_inference_fails_on_a_full_queue_does_not_hang_the_run(monkeypatch):
    """The stall ends the source without blocking the main thread: with the frame queue full and the inference
    thread dead (a frame's inference failed), a blocking put of the end would wait forever."""
    import time

    import runtime.pipeline.stream as pipeline_module

    class FailingRunner(ThresholdRunner):
        def infer(self, frames):
            time.sleep(1.0)
            raise RuntimeError("device lost")

    monkeypatch.setattr(pipeline_module, "JOIN_TIMEOUT", 0.2)
    pipeline = Pipeline(StallingSource(n=6), FailingRunner(128),
                        options=RunOptions(stall_timeout=0.3, calibrate=False, host_budget=False))
    summary = run_within(15, pipeline)
    assert summary["stalled"] and any("device lost" in error for error in summary["errors"])


def test_a_source_back_after_its_stall_does_not_keep_the_run_going(monkeypatch):
    """A source that stalls past the timeout and then sends again: the run ends with the frames from before the
    stall (the capture stops there), rather than running on, stalled, for as long as the source sends."""
    import time

    import runtime.pipeline.stream as pipeline_module

    class Resuming(Source):
        def frames(self):
            image = np.full((128, 128, 3), 200, np.uint8)
            cv2.circle(image, (64, 64), 14, (50, 50, 50), -1)
            for i in range(6):
                yield Frame(i, image, "r")
            time.sleep(0.7)
            for i in range(6, 306):  # a few seconds more, then the end: a run that takes them ends too (not hangs)
                yield Frame(i, image, "r")
                time.sleep(0.01)

    class SlowerRunner(ThresholdRunner):  # still busy with the frames from before the stall when the source is back
        def infer(self, frames):
            if self.calls < 6:
                time.sleep(0.25)
            return super().infer(frames)

    monkeypatch.setattr(pipeline_module, "JOIN_TIMEOUT", 0.2)
    pipeline = Pipeline(Resuming("resuming"), SlowerRunner(128),
                        options=RunOptions(stall_timeout=0.3, calibrate=False, host_budget=False))
    summary = run_within(15, pipeline)
    assert summary["stalled"] and 6 <= summary["frames"] <= 7, summary["frames"]


def test_cli_exits_1_when_the_source_stalls(tmp_path, monkeypatch, capsys):
    """Exit 1, as --stall-timeout's help and docs/running.md say (it was 2, a usage error's status), through the
    console-script entry point that turns the error into a status."""
    import runtime.cli.run as run_cli
    import runtime.pipeline.stream as pipeline_module

    monkeypatch.setattr(pipeline_module, "JOIN_TIMEOUT", 0.2)
    monkeypatch.setattr(run_cli, "_open_source", lambda *args: StallingSource())
    monkeypatch.setattr(sys, "argv", ["csc-run", "--camera", "0", "--no-show", "--stall-timeout", "0.5", "--pixel-size",
                                      "0.4", "--summary", str(tmp_path / "s.json")])
    with pytest.raises(SystemExit) as stopped:
        run_cli.main()
    assert stopped.value.code == 1
    assert "stalled" in capsys.readouterr().err and json.loads((tmp_path / "s.json").read_text())["stalled"]


@pytest.mark.parametrize("frames", [2, 0])
def test_cli_exits_1_when_the_camera_is_lost_for_good(tmp_path, monkeypatch, capsys, frames):
    """A camera lost and not back after its reconnections (an RTSP server down for a minute) ended the run with a
    yellow "stopped:" line and exit 0, so a supervisor's Restart=on-failure never restarted it; it exits 1, as a
    stall does, also where it was lost before its first frame."""
    import runtime.cli.run as run_cli

    class Lost(Source):
        def __init__(self):
            super().__init__("lost-camera", live=True)

        def frames(self):
            image = np.full((128, 128, 3), 200, np.uint8)
            cv2.circle(image, (64, 64), 14, (50, 50, 50), -1)
            for i in range(frames):
                yield Frame(i, image, self.name)
            raise CscError("camera '0' lost and not back after 5 attempts")

    monkeypatch.setattr(run_cli, "_open_source", lambda *args: Lost())
    monkeypatch.setattr(sys, "argv", ["csc-run", "--camera", "0", "--no-show", "--pixel-size", "0.4", "--summary",
                                      str(tmp_path / "s.json")])
    with pytest.raises(SystemExit) as stopped:
        run_cli.main()
    assert stopped.value.code == 1 and "lost and not back" in capsys.readouterr().err
    assert json.loads((tmp_path / "s.json").read_text())["frames"] == frames


def test_read_ahead_reads_until_enough_lit_frames_and_loses_none():
    """`ReadAhead`: reads until ``lit`` frames that are not blank (or READ_AHEAD, or the end), marks each, and plays
    them first, then the rest, each frame once and in order."""
    lit = np.full((64, 64, 3), 200, np.uint8)
    cv2.circle(lit, (32, 32), 10, (40, 40, 40), -1)
    dark = np.zeros((64, 64, 3), np.uint8)
    images = [dark, lit, dark, lit, lit, lit, dark]
    ahead = ReadAhead(MemorySource(images), lit=2)
    assert [f.index for f in ahead.first] == [0, 1, 2, 3]
    assert [f.blank for f in ahead.first] == [True, False, True, False]
    assert [f.index for f in ahead.frames()] == list(range(7)) and ahead.first == []
    never_lit = ReadAhead(MemorySource([dark] * (READ_AHEAD + 5)), lit=1)
    assert len(never_lit.first) == READ_AHEAD and len(list(never_lit.frames())) == READ_AHEAD + 5
    short = ReadAhead(MemorySource([lit]), lit=3)
    assert len(short.first) == 1 and short.ended and not ahead.ended and not never_lit.ended


def test_read_ahead_leaves_a_stalled_or_failing_source_to_the_run(monkeypatch):
    """A source that stalls while read ahead: the read ahead stops waiting after ``wait`` s with what it has, and
    the run's own stall timeout then stops the run with its summary; a source that fails while read ahead fails
    where the run reads it, after the frames read before."""
    import runtime.pipeline.stream as pipeline_module

    ahead = read_ahead_within(10, StallingSource(n=2), lit=3, wait=0.3)
    assert len(ahead.first) == 2 and not ahead.ended
    monkeypatch.setattr(pipeline_module, "JOIN_TIMEOUT", 0.2)
    pipeline = Pipeline(ahead, ThresholdRunner(128), options=RunOptions(stall_timeout=0.5))
    summary = run_within(15, pipeline)
    assert summary["stalled"] and summary["frames"] + summary["dropped"] == 2

    class Failing(Source):
        def frames(self):
            yield Frame(0, np.zeros((64, 64, 3), np.uint8), "f0")
            raise CscError("camera lost")

    failing = read_ahead_within(10, Failing("failing"), lit=3)
    frames = failing.frames()
    assert next(frames).index == 0
    with pytest.raises(CscError, match="camera lost"):
        next(frames)


def test_a_slow_start_read_ahead_plays_each_frame_as_it_comes():
    """A camera whose first frame comes after the read ahead stopped waiting, then one every 0.2 s: the run gets
    each as it comes (it waited for the whole read ahead, and reported a stall while frames kept coming), and the
    read ahead reads no more than READ_AHEAD."""
    import time

    class SlowStart(Source):
        def __init__(self):
            super().__init__("slow-camera")
            self.read = 0

        def frames(self):
            time.sleep(0.8)
            for i in range(READ_AHEAD + 4):
                self.read = i + 1
                yield Frame(i, np.zeros((64, 64, 3), np.uint8), "slow")
                time.sleep(0.2)

    source = SlowStart()
    ahead = read_ahead_within(10, source, lit=3, wait=0.3)
    assert ahead.first == []
    frames = ahead.frames()
    next(frames)
    assert source.read < READ_AHEAD, "the first frame waited for the whole read ahead"
    gaps, last = [], time.monotonic()
    for _ in range(READ_AHEAD - 1):
        next(frames)
        gaps.append(time.monotonic() - last)
        last = time.monotonic()
    assert max(gaps) < 0.6, gaps
    assert source.read <= READ_AHEAD + 1 and len(list(frames)) == 4


def test_a_read_ahead_closed_before_the_run_stops_reading_its_camera():
    """The command fails before the run (a bad option, a model that does not open): closing the read ahead stops
    its reader before the camera is released — released under a read, the camera reconnected and was read on."""
    import time

    opened = []

    class Capture(ImagesCapture):
        def __init__(self):
            lit = np.full((64, 64, 3), 200, np.uint8)
            cv2.circle(lit, (32, 32), 10, (40, 40, 40), -1)
            super().__init__([lit] * 10_000)
            self.released = False

        def read(self):
            time.sleep(0.005)
            return (False, None) if self.released else super().read()

        def release(self):
            self.released = True

    camera = CameraSource("0", retries=3, opener=lambda *a: opened.append(Capture()) or opened[-1])
    ahead = read_ahead_within(10, camera, lit=3)
    time.sleep(0.1)  # read on while the model would load
    ahead.close()
    time.sleep(0.3)
    assert len(opened) == 1 and opened[0].released and not ahead._reader.is_alive()


def test_a_live_source_is_read_on_while_the_model_loads():
    """A camera read ahead is read on until the run takes over, its newest frame kept (a stream left unread fills
    its buffers): the run gets the frames read ahead, then that newest one, then the rest."""
    import time

    class Streaming(Source):
        def __init__(self):
            super().__init__("streaming-camera", live=True)

        def frames(self):
            lit = np.full((64, 64, 3), 200, np.uint8)
            cv2.circle(lit, (32, 32), 10, (40, 40, 40), -1)
            for i in range(10_000):
                time.sleep(0.005)
                yield Frame(i, lit, "camera")

    ahead = read_ahead_within(10, Streaming(), lit=3)
    assert [f.index for f in ahead.first] == [0, 1, 2]
    time.sleep(0.3)  # the model loads
    frames = ahead.frames()
    played = [next(frames).index for _ in range(5)]
    assert played[:3] == [0, 1, 2] and played[3] > 10 and played[4] == played[3] + 1, played


def test_blank_frames_count_zero_and_calibration_waits_for_lit_ones(runner):
    """The bundled model drew two RBCs on every black frame; a run that starts with the lamp off calibrated on
    nothing and kept the model's scale, and its optics check took the black frames for fluorescence."""
    rng = np.random.default_rng(0)
    black = np.zeros((512, 512, 3), np.uint8)
    dark = np.clip(3 + rng.normal(0, 2, (512, 512, 3)), 0, 255).astype(np.uint8)
    microscope = SimulatedMicroscope(SimConfig(mode="mixed", height=512, width=512), seed=4)
    lit = [microscope.frame(i) for i in range(3)]
    frames = [black, dark, black] + [f.image for f in lit]
    summary = Pipeline(MemorySource(frames), runner, options=RunOptions(host_budget=False)).run()
    assert summary["frames"] == 6 and summary["blank_frames"] == 3
    assert summary["counts"]["rbc"]["min"] == 0 and summary["counts"]["macrophage"]["min"] == 0
    calibration = summary["scale"]["calibration"]
    assert calibration["pixel_size_um"] and calibration["frames"] == 3, "calibrated on the lit frames"
    optics = summary["domain"]["optics"]
    assert optics["warning"] is None and sum(optics["frames"].values()) == 3, "the optics of the lit frames only"
    true_rbc = sum(f.counts["rbc"] for f in lit)
    assert abs(summary["counts"]["rbc"]["total"] - true_rbc) <= 0.1 * true_rbc


def test_consecutive_frames_are_counted_in_parallel_and_written_in_order(runner, tmp_path, monkeypatch):
    """With several counting workers, frames are counted at once (a slow count overlaps the next ones) and the
    CSV still lists them in frame order with the counts one worker gives."""
    import threading
    import time as clock

    inline = Pipeline(DemoSource(seed=5), runner,
                      options=RunOptions(max_frames=8, save_csv=tmp_path / "one.csv", count_workers=1)).run()
    active, most, lock = [0], [0], threading.Lock()
    real_count = CellCounter.count

    def slow_count(self, class_map, *args, **kwargs):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        clock.sleep(0.05 if int(class_map.sum()) % 2 else 0.01)  # uneven: later frames may finish first
        try:
            return real_count(self, class_map, *args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(CellCounter, "count", slow_count)
    parallel = Pipeline(DemoSource(seed=5), runner,
                        options=RunOptions(max_frames=8, save_csv=tmp_path / "three.csv", count_workers=3)).run()
    assert most[0] > 1, "no two frames were counted at once"
    assert parallel["frames"] == inline["frames"] == 8 and not parallel["errors"]
    columns = lambda path: [row.split(",")[:4] for row in path.read_text().splitlines()]  # frame, source, counts
    assert columns(tmp_path / "three.csv") == columns(tmp_path / "one.csv")


def test_an_opencv_without_a_gui_runs_on_headless(tmp_path, monkeypatch):
    """A display, and an OpenCV built without a GUI (opencv-python-headless, a Jetson's own build): imshow raised
    cv2.error out of the run after its first frame, a traceback and no summary; now a warning, and the run goes on."""
    import runtime.pipeline.stream as pipeline_module

    def not_implemented(*args):
        cv2.resize(np.zeros((0, 0), np.uint8), (1, 1))  # a real cv2.error, as imshow's "not implemented" is

    monkeypatch.setattr(pipeline_module.cv2, "imshow", not_implemented)
    monkeypatch.setattr(pipeline_module.cv2, "destroyAllWindows", not_implemented)
    warnings = []
    image = np.full((128, 128, 3), 200, np.uint8)
    cv2.circle(image, (64, 64), 14, (50, 50, 50), -1)
    summary = Pipeline(MemorySource([image] * 4), ThresholdRunner(128), on_warning=warnings.append,
                       options=RunOptions(calibrate=False, show=True, save_csv=tmp_path / "c.csv")).run()
    assert summary["frames"] == 4 and not summary["errors"]
    assert sum(w.startswith("no window: this OpenCV cannot show one (!ssize.empty())") for w in warnings) == 1, warnings
    assert len((tmp_path / "c.csv").read_text().splitlines()) == 5


def test_sigterm_stops_csc_run_like_ctrl_c_with_its_files_closed(tmp_path):
    """systemd and `docker stop` send SIGTERM: the run must end as on Ctrl-C — every written frame whole in the CSV,
    the summary written, exit 0 — not die mid-row."""
    import signal
    import time

    csv_path, summary_path = tmp_path / "c.csv", tmp_path / "s.json"
    process = subprocess.Popen([sys.executable, "-c", "from runtime.cli.run import main; main()", "--source", "demo",
                                "--no-show",
                                "--save-csv", str(csv_path), "--summary", str(summary_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not csv_path.exists() or len(csv_path.read_text().splitlines()) < 4):
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, output
    summary = json.loads(summary_path.read_text())
    rows = csv_path.read_text().splitlines()
    assert summary["interrupted"] and summary["frames"] == len(rows) - 1 >= 3
    assert all(len(row.split(",")) == 6 for row in rows)


def test_a_grey_field_read_as_a_stain_is_no_evidence_against_a_label_free_model():
    """A stain's verdict without a stain's colour (a sparse DIC field reads like that: `ModalityEvidence.tentative`)
    does not warn a label-free model's run; a colour smear does, and the grey field warns nothing on a smear
    model either (it is a stain there)."""
    from runtime.data.modality import detect_modality
    from runtime.data.simulator import make_microscope
    from runtime.pipeline.domain import DomainCheck

    grey = np.full((256, 256), 180, np.uint8)
    for x, y in ((60, 60), (180, 100), (100, 190)):
        cv2.circle(grey, (x, y), 14, 120, -1)
    grey = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    assert detect_modality(grey).tentative
    smear = make_microscope("rbc", size=256, seed=7).frame(0).image
    runner = ThresholdRunner(256)
    for trained, image, warns in ((["brightfield", "dic", "phase"], grey, False),
                                  (["brightfield", "dic", "phase"], smear, True), (["stained"], grey, False)):
        runner.metadata.modalities = trained
        check = DomainCheck(runner.metadata, ("background", "rbc", "macrophage"))
        assert (check.check_optics(Frame(0, image, "f0")) is not None) == warns, trained
