"""Capture → inference → counting/overlay/output, concurrently (threads and bounded queues).

Capture and inference run in their own threads; counting, overlay, writers and the display run in the caller's
thread. A live source drops its oldest queued frame when the pipeline is behind (and counts the drops); a file
source waits and loses nothing. Ctrl-C, a lost camera or a bad frame end the run cleanly: files are closed and
complete, and the summary is returned.
"""
from __future__ import annotations

import itertools
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from runtime.backends.base import Runner
from runtime.counting.metrics import CountTally
from runtime.classes import DEFAULT_PIXEL_SIZE_UM
from runtime.counting.counter import MIN_SIDE, CountingConfig, FrameCounts
from runtime.counting.gpu import make_counter
from runtime.counting.blank import is_blank
from runtime.counting.calibration import (FRAMES as CALIBRATION_FRAMES, MAX_ENLARGE, Calibration, ScaleWatch, calibrate,
                                          check_ruler, disagreement, vote_warning)
from runtime.data.rescale import resize_to, zoomed_size
from runtime.pipeline.domain import DomainCheck
from runtime.errors import CscError
from runtime.io.heap import commit_heap, keep_freed_memory
from runtime.pipeline.overlay import OverlayRenderer
from runtime.pipeline.running_stats import LatencyHistogram, Tally
from runtime.io.sources import Frame, Source
from runtime.pipeline.tiling import Tiler
from runtime.io.writers import CellsCsvWriter, CountsCsvWriter

_END = object()
BLANK_WAIT = 50  # blank frames a run waits through at its start for frames to calibrate on
JOIN_TIMEOUT = 5.0  # seconds to wait at the end of a run for a capture thread that may be stuck in the source
# With the host budget, the heap's held pages are made resident (runtime/io/heap.py: commit_heap) after the first
# counted frame, then again after these many seconds, the gap doubling up to the last: the arenas grow in a run's
# first minutes, if at all, and each call is a walk of the page tables on the writing thread.
HEAP_COMMIT_FIRST_S, HEAP_COMMIT_LAST_S = 30.0, 1800.0


class CommitSchedule:
    """When a run commits its heap: at once, then after gaps of ``first`` seconds doubling up to ``last``."""

    def __init__(self, first: float = HEAP_COMMIT_FIRST_S, last: float = HEAP_COMMIT_LAST_S):
        self.gap, self.last, self.next = first, last, float("-inf")

    def due(self, now: float) -> bool:
        """Whether to commit at ``now`` (seconds on any steady clock); if so, the next time is set from it."""
        if now < self.next:
            return False
        self.next, self.gap = now + self.gap, min(2 * self.gap, self.last)
        return True


@dataclass
class RunOptions:
    max_frames: int | None = None
    duration: float | None = None
    show: bool = False
    save_csv: Path | None = None
    save_video: Path | None = None
    save_cells: Path | None = None
    queue_size: int = 4
    tile_overlap: int = 64
    pixel_size_um: float | None = None  # the frames' (camera's) pixel size; None: calibrated (below), else the model's
    # Calibrate from the first frames (runtime/counting/calibration.py): the pixel size where none is given, a check of the
    # given one otherwise. Off: a missing pixel size is the model's.
    calibrate: bool = True
    # The cell class the frames show most of, as the user knows it (`csc-run --calibrate-on`): the calibration's ruler
    # without the model's vote (`runtime.counting.calibration.calibrate`). None: the model votes.
    calibrate_on: str | None = None
    host_budget: bool = True  # False: leave OpenCV's threads and the allocator as the embedding program set them
    # A source that has not returned a frame for this many seconds (a camera unplugged mid-read, an RTSP stream
    # that stopped sending) has stalled: the run says so and stops with its files closed. None: wait forever.
    stall_timeout: float | None = 30.0
    # Threads counting consecutive frames at once (results still written in frame order). None: the cores the
    # backend leaves free (one on a 2-core box with ONNX Runtime on the CPU; most of them beside a GPU).
    count_workers: int | None = None
    # Caps on the counts and cells CSVs, in bytes (None: whole): past it a file keeps only its newest rows. For CSVs
    # nobody asked for, such as the web view's temporary ones; a --save-csv or --save-cells file is never trimmed.
    counts_csv_max_bytes: int | None = None
    cells_csv_max_bytes: int | None = None
    # Where class maps are counted (`runtime.counting.gpu.make_counter`): "cpu" (OpenCV), "cuda" (torch on the GPU),
    # "auto" (the GPU where torch sees one). CPU by default: the GPU counter's speed has not been measured yet.
    counting_device: str = "cpu"


class StageTimes:
    """Per-stage durations as histograms (runtime/pipeline/running_stats.py): constant memory however long the run."""

    STAGES = ("capture", "infer", "post")

    def __init__(self) -> None:
        self.capture, self.infer, self.post = (LatencyHistogram() for _ in self.STAGES)

    def summary(self) -> dict[str, dict[str, float]]:
        return {name: getattr(self, name).summary_ms() for name in self.STAGES if len(getattr(self, name))}


@contextmanager
def host_budget(runner: Runner) -> Iterator[None]:
    """Give OpenCV (capture, counting, overlay) only the cores the backend leaves free, and keep freed image
    buffers in the heap for the next frame.

    OpenCV's pool defaults to every core, so with ONNX Runtime holding one of two cores its second thread took
    turns with inference; and each frame's counting temporaries page-faulted fresh memory (runtime/io/heap.py).
    """
    keep_freed_memory()
    previous = cv2.getNumThreads()
    cv2.setNumThreads(max(1, (os.cpu_count() or 1) - runner.host_threads))
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


class Segmenter:
    """Frame → class map with a runner: rescaled to the model's pixel size where the frame's differs, then straight
    through at the model's input size, or tiled and stitched.

    ``zoom`` is the frame's pixel size over the model's (0.194 µm/px frames for a 0.4 µm/px model: 0.485): the
    network saw cells of one size in pixels while training, so frames are shrunk or enlarged to that size first.
    Class maps come back at the model's scale (counting runs there, at the model's pixel size) and `to_frame`
    maps them, and the cell tables, back to frame pixels.
    """

    def __init__(self, runner: Runner, overlap: int = 64, zoom: float = 1.0):
        if zoom <= 0:
            raise CscError(f"pixel size ratio must be positive, got {zoom}")
        self.runner = runner
        h, w = runner.input_size
        self.tiler = Tiler(h, w, overlap)
        self.batch = runner.max_batch or 8
        self.zoom = zoom

    @property
    def rescales(self) -> bool:
        return abs(self.zoom - 1.0) > 1e-3

    def model_shape(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """(h, w) of a frame of this shape at the model's pixel size."""
        if not self.rescales:
            return shape[0], shape[1]
        return zoomed_size(shape, self.zoom)

    def to_model(self, image: np.ndarray) -> np.ndarray:
        """The frame at the model's pixel size (area averaging when shrinking, linear when enlarging)."""
        return resize_to(image, self.zoom) if self.rescales else image

    def fits(self, image: np.ndarray) -> bool:
        return image.shape[:2] == tuple(self.runner.input_size)

    def segment_tiled(self, image: np.ndarray) -> np.ndarray:
        tiles, origins = self.tiler.split(image)
        maps = np.concatenate([self.runner.infer(tiles[i : i + self.batch]) for i in range(0, len(tiles), self.batch)])
        return self.tiler.stitch(maps, origins, *image.shape[:2])

    def segment(self, frame: np.ndarray) -> np.ndarray:
        """The class map of one frame at the model's scale (synchronous: benchmarks and tools; the pipeline keeps
        a frame in flight instead)."""
        image = self.to_model(frame)
        return self.runner.infer(image[None])[0] if self.fits(image) else self.segment_tiled(image)

    def to_frame(self, labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """A class map or instance labels at the model's scale, back at the frame's size (nearest neighbour)."""
        if labels.shape[:2] == tuple(shape[:2]):
            return labels
        return cv2.resize(labels, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)

    def cells_to_frame(self, cells: np.ndarray, zoom: float | None = None) -> np.ndarray:
        """The counter's cell table with positions and pixel sizes in frame pixels (µm values are unchanged);
        ``zoom``: the one the frame was segmented at, where it may since have changed (a recalibration)."""
        zoom = self.zoom if zoom is None else zoom
        if abs(zoom - 1.0) <= 1e-3 or not len(cells):
            return cells
        cells = cells.copy()
        for column in ("cx", "cy", "eq_diameter_px"):
            cells[column] = cells[column] / zoom
        for column in ("x", "y", "w", "h"):
            cells[column] = np.round(cells[column] / zoom).astype(cells[column].dtype)
        cells["area_px"] = np.round(cells["area_px"] / zoom**2).astype(cells["area_px"].dtype)
        return cells


class Pipeline:
    def __init__(self, source: Source, runner: Runner, counting: CountingConfig | None = None,
                 options: RunOptions | None = None, on_frame: Callable[[Frame, FrameCounts, float], None] | None = None,
                 on_warning: Callable[[str], None] | None = None,
                 observer: Callable[[Frame, np.ndarray, FrameCounts, float, float], None] | None = None):
        self.source, self.runner = source, runner
        self.options = options or RunOptions()
        if counting is None:
            counting = CountingConfig(pixel_size_um=runner.metadata.pixel_size_um) if runner.metadata else CountingConfig()
        self.counter = make_counter(counting, self.options.counting_device)  # fails here, before a frame, if that device is absent
        self.names = self.counter.config.class_names[1:]
        model_pixel = runner.metadata.pixel_size_um if runner.metadata else DEFAULT_PIXEL_SIZE_UM
        frame_pixel = self.options.pixel_size_um or model_pixel
        if frame_pixel / model_pixel > MAX_ENLARGE:  # as a calibration is refused: ×100 made a 512 px frame 7.8 GB
            raise CscError(f"frames at {frame_pixel:g} µm/px would be enlarged ×{frame_pixel / model_pixel:.3g} to the "
                           f"model's {model_pixel:g} µm/px (at most ×{MAX_ENLARGE:g}: the tiles grow with its square)",
                           fix="give --pixel-size in µm per pixel (e.g. 0.194), or use a model trained at a coarser "
                               "pixel size")
        self.segmenter = Segmenter(runner, self.options.tile_overlap, zoom=frame_pixel / model_pixel)
        self.calibrating = self.options.calibrate and runner.metadata is not None
        self.calibration: Calibration | None = None
        self.scale_warning: str | None = None
        if self.options.calibrate_on is not None:
            check_ruler(self.options.calibrate_on, runner.metadata.classes if runner.metadata else None)
        classes = self.counter.config.class_names
        ruler = self.options.calibrate_on or ("rbc" if "rbc" in classes else classes[1])
        # until the calibration has taken its ruler (`_calibrate`), which the watch then follows
        self.scale_watch = ScaleWatch(classes.index(ruler)) if self.calibrating else None
        self.scale_changes: list[dict] = []
        self._recalibrate = threading.Event()
        self.scale_note = (f"frames at {frame_pixel:g} µm/px, rescaled ×{frame_pixel / model_pixel:.3g} to the "
                           f"model's {model_pixel:g} µm/px" if self.options.pixel_size_um else
                           "pixel size not given: calibrating from the first frames" if self.calibrating else
                           f"pixel size not given: frames assumed at the model's {model_pixel:g} µm/px "
                           "(give --pixel-size for another camera or magnification)")
        self.domain = DomainCheck(runner.metadata, self.counter.config.class_names)
        self.renderer = OverlayRenderer(self.counter.config.class_names)
        self.on_frame = on_frame
        self.on_warning = on_warning
        # Called per frame with the frame, its class map at the model's scale, the counts, the FPS and the pixel size
        # counted at (the live web view, runtime/serve): it must return at once, so drawing and encoding happen in its
        # own thread, and only while someone watches. Neither array is written to after the call.
        self.observer = observer
        self.times = StageTimes()
        self.dropped = 0
        self.errors: list[str] = []
        self.stalled = False
        self.blank_frames = 0  # frames judged blank (runtime/counting/blank.py): counted zero, not segmented
        self._waiting_since: float | None = None  # when the capture thread began waiting on the source, if it is
        self._stop = threading.Event()
        # Set by the main thread when the source stalls: the inference thread takes the frames captured before as
        # all there are (the capture thread, stuck in the source's read, cannot say so, and a put could block).
        self._source_over = threading.Event()
        self._frames_q: queue.Queue = queue.Queue(self.options.queue_size)
        self._results_q: queue.Queue = queue.Queue(self.options.queue_size)
        self._counters = threading.local()  # one counter per counting thread: each keeps its own buffers

    # -- threads ----------------------------------------------------------------------------------------------
    def _put_frame(self, item) -> None:
        while not self._stop.is_set():
            if self.source.live and item is not _END:
                try:
                    self._frames_q.put_nowait(item)
                    return
                except queue.Full:
                    try:
                        self._frames_q.get_nowait()  # the oldest frame goes: a live view must stay current
                        self.dropped += 1
                    except queue.Empty:
                        pass
                    continue
            try:
                self._frames_q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _capture(self) -> None:
        try:
            frames = self.source.frames()
            while not self._stop.is_set():
                start = time.perf_counter()
                self._waiting_since = time.monotonic()
                frame = next(frames, None)
                self._waiting_since = None
                if frame is None or self._source_over.is_set():  # a frame after the stall: the run is ending
                    break
                frame.blank = is_blank(frame.image)  # here, beside the reads: inference is the busier thread
                self.times.capture.add(time.perf_counter() - start)
                self._put_frame(frame)
        except CscError as err:
            self.errors.append(str(err))
        except Exception as err:  # a source must never take the run down with a traceback
            self.errors.append(f"{self.source.name}: {type(err).__name__}: {err}")
        finally:
            self._put_frame(_END)

    def _infer(self) -> None:
        pending: tuple[Frame, object, float, float] | None = None  # frame, handle, submit time, zoom
        try:
            first = self._first_frames() if self.calibrating else []
            if first:
                lit = [frame for frame in first if not frame.blank]
                self._calibrate(lit or first)
            for frame in itertools.chain(first, self._queued_frames(idle=True)):
                if frame is None:  # no new frame for a moment: finish the one in flight rather than hold it back
                    if pending is not None:
                        self._finish(pending)
                        pending = None
                    continue
                pending = self._segment(frame, pending)
            if pending is not None:
                self._finish(pending)
        except CscError as err:
            self.errors.append(str(err))
        except Exception as err:
            self.errors.append(f"inference: {type(err).__name__}: {err}")
        finally:
            while not self._stop.is_set():
                try:
                    self._results_q.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    continue

    def _queued_frames(self, idle: bool = False) -> Iterator[Frame | None]:
        """Frames from the capture queue until its end; with ``idle``, None after each 0.1 s without one."""
        while not self._stop.is_set():
            try:
                item = self._frames_q.get(timeout=0.1)
            except queue.Empty:
                if self._source_over.is_set():
                    return
                if idle:
                    yield None
                continue
            if item is _END:
                return
            yield item

    def _first_frames(self) -> list[Frame]:
        """The first frames, up to the CALIBRATION_FRAMES-th that is not blank (a run may start with the lamp off),
        but no more than BLANK_WAIT beyond it; fewer when the source ends first."""
        frames = []
        for frame in self._queued_frames():
            frames.append(frame)
            if sum(not f.blank for f in frames) == CALIBRATION_FRAMES or len(frames) == CALIBRATION_FRAMES + BLANK_WAIT:
                return frames
        if not self._source_over.is_set():
            self._frames_q.put(_END)  # the source ended: let the frame loop see it too
        return frames

    def _segment(self, frame: Frame, pending):
        """Segment one frame; returns the frame now in flight (if the whole frame went in one batch). A scale change
        seen by the main thread is recalibrated on this frame first."""
        if self._recalibrate.is_set():
            self._recalibrate.clear()
            self._calibrate([frame], change_at=frame.index)
        size = self.segmenter.model_shape(frame.image.shape)
        if min(size) < MIN_SIDE:  # a strip or a thumbnail: listed as an unreadable file is, and the run goes on
            scaled = f", {size[1]}×{size[0]} px at the model's scale" if size != frame.image.shape[:2] else ""
            skipped = (frame.source, f"{frame.image.shape[1]}×{frame.image.shape[0]} px{scaled}: too small to count "
                                     f"(a cell needs {MIN_SIDE} px a side or more)")
            # A camera's or a video's frames share one name and size: listed once, not once a frame for weeks.
            if not self.source.skipped or self.source.skipped[-1] != skipped:
                self.source.skipped.append(skipped)
            return pending
        if frame.blank:  # no cells to find: the network would draw some in the noise (two RBCs on a black frame)
            if pending is not None:
                self._finish(pending)
            self.blank_frames += 1
            self._results_q.put((frame, np.zeros(self.segmenter.model_shape(frame.image.shape), np.uint8),
                                 self.segmenter.zoom))
            return None
        start = time.perf_counter()
        image = self.segmenter.to_model(frame.image)
        if self.segmenter.fits(image):
            # Keep one frame in flight: submit this one, then collect the previous one.
            handle = self.runner.submit(image[None])
            submitted = time.perf_counter() - start
            if pending is not None:
                self._finish(pending)
            return frame, handle, submitted, self.segmenter.zoom
        if pending is not None:
            self._finish(pending)
        class_map = self.segmenter.segment_tiled(image)
        self.times.infer.add(time.perf_counter() - start)
        self._results_q.put((frame, class_map, self.segmenter.zoom))
        return None

    def _calibrate(self, frames: list[Frame], change_at: int | None = None) -> None:
        """The frames' pixel size from the first frames (runtime/counting/calibration.py): set where none was given, checked
        against the given one otherwise; a calibration that fails says so and the model's pixel size stays. With
        ``change_at``, a recalibration after a scale change seen at that frame: recorded, and a failed one keeps
        the last scale."""
        meta = self.runner.metadata
        overlap = self.options.tile_overlap
        # A recalibration keeps the first one's ruler (the sample is the same, only the magnification changed), and
        # with it whether the model voted it.
        carried = self.options.calibrate_on is None and self.calibration is not None and self.calibration.found
        ruler = self.calibration.ruler if carried else self.options.calibrate_on
        found = calibrate([frame.image for frame in frames], meta,
                          lambda image, zoom: Segmenter(self.runner, overlap, zoom).segment(image), ruler,
                          [frame.detected_optics() for frame in frames])
        if carried:
            found = replace(found, voted=self.calibration.voted)
        if change_at is not None:
            before = self.frame_pixel_size_um
            if found.found:
                self.segmenter.zoom = found.pixel_size_um / meta.pixel_size_um
            self.scale_changes.append({"frame": change_at, "pixel_size_um_before": round(before, 4),
                                       "pixel_size_um": round(self.frame_pixel_size_um, 4), "calibration": found.as_dict()})
            return
        self.calibration = found
        names = self.counter.config.class_names
        if found.found and found.ruler in names:  # the watch follows the ruler's cells, where a given scale is checked too
            self.scale_watch = ScaleWatch(names.index(found.ruler))
        given = self.options.pixel_size_um
        if given is not None:
            self.scale_warning = disagreement(given, self.calibration)
        elif self.calibration.found:
            self.segmenter.zoom = self.calibration.pixel_size_um / meta.pixel_size_um
            self.scale_note = (f"frames at {self.calibration.describe()}, rescaled ×{self.segmenter.zoom:.3g} to the "
                               f"model's {meta.pixel_size_um:g} µm/px")
            self.scale_warning = vote_warning(self.calibration, meta)
        else:
            self.scale_note = f"{self.calibration.describe()}; frames taken at the model's {meta.pixel_size_um:g} µm/px"
            self.scale_warning = (f"{self.calibration.describe()}: frames assumed at the model's "
                                  f"{meta.pixel_size_um:g} µm/px — counts are off by the square of the true pixel "
                                  "size's ratio to it; give --pixel-size")
        if self.scale_warning and self.on_warning is not None:
            self.on_warning(self.scale_warning)

    def _watch_scale(self, frame: Frame, result: FrameCounts) -> None:
        """After calibration, a change of the cells' size (ScaleWatch) is warned about once and recalibrated on the
        next frame segmented."""
        if self.scale_watch is None or self.calibration is None or not self.calibration.found:
            return
        ratio = self.scale_watch.observe(result.cells)
        if ratio is None:
            return
        self._recalibrate.set()
        if self.on_warning is not None:
            self.on_warning(f"frame {frame.index}: cells are {ratio:.2f}× the size they had — the scale changed "
                            "(objective or zoom?); recalibrating")

    @property
    def model_pixel_size_um(self) -> float:
        return self.runner.metadata.pixel_size_um if self.runner.metadata else DEFAULT_PIXEL_SIZE_UM

    @property
    def frame_pixel_size_um(self) -> float:
        """The pixel size the frames are segmented at now: given, calibrated, or the model's."""
        return self.segmenter.zoom * self.model_pixel_size_um

    def _finish(self, pending) -> None:
        """Collect a frame in flight; its inference time is its submit plus its collect, not the wait between."""
        frame, handle, submitted, zoom = pending
        start = time.perf_counter()
        class_map = self.runner.collect(handle)[0]
        self.times.infer.add(submitted + time.perf_counter() - start)
        self._results_q.put((frame, class_map, zoom))

    # -- counting ---------------------------------------------------------------------------------------------
    @property
    def count_workers(self) -> int:
        workers = self.options.count_workers
        return workers if workers else max(1, (os.cpu_count() or 1) - self.runner.host_threads)

    def _count(self, class_map: np.ndarray) -> tuple[FrameCounts, float]:
        """Count one class map with this thread's counter; returns the counts and the seconds it took."""
        counter = getattr(self._counters, "counter", None)
        if counter is None:
            counter = self._counters.counter = make_counter(self.counter.config, self.options.counting_device)
        start = time.perf_counter()
        return counter.count(class_map), time.perf_counter() - start

    def _counted(self) -> Iterator[tuple[Frame, np.ndarray, float, FrameCounts, float]]:
        """(frame, class map, zoom, counts, counting seconds) in frame order until the inference thread ends, which
        it does at the source's end or stall. With several workers, up to that many consecutive frames are counted
        at once (OpenCV's calls release the GIL), and each result waits for the frames before it."""
        workers = self.count_workers
        pool = ThreadPoolExecutor(workers, thread_name_prefix="count") if workers > 1 else None
        in_flight: deque[tuple[Frame, np.ndarray, float, Future]] = deque()
        ended = False
        try:
            while not ended or in_flight:
                if in_flight and (ended or len(in_flight) >= workers or in_flight[0][3].done()):
                    frame, class_map, zoom, future = in_flight.popleft()
                    yield (frame, class_map, zoom, *future.result())
                    continue
                try:
                    item = self._results_q.get(timeout=0.005 if in_flight else 0.2)
                except queue.Empty:
                    if not in_flight and not self.stalled and self._source_stalled():
                        # The source's end, as far as the run goes: frames captured before the stall are still
                        # counted (a run still gathering its calibration frames held them unsegmented).
                        self._source_over.set()
                    continue
                if item is _END:
                    ended = True
                elif pool is None:
                    yield (*item, *self._count(item[1]))
                else:
                    in_flight.append((*item, pool.submit(self._count, item[1])))
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    # -- main thread ------------------------------------------------------------------------------------------
    def _source_stalled(self) -> bool:
        """Whether the source has kept the capture thread waiting past ``stall_timeout`` (recorded as an error)."""
        timeout, since = self.options.stall_timeout, self._waiting_since
        if timeout is None or since is None or time.monotonic() - since < timeout:
            return False
        self.stalled = True
        self.errors.append(f"{self.source.name}: no frame for {timeout:g} s — the source stalled (camera unplugged, "
                           "stream stopped?); the run stopped with its files closed")
        return True

    def run(self) -> dict:
        """Run until the source ends, a limit is reached, the window is closed or Ctrl-C; returns the summary."""
        if not self.options.host_budget:
            return self._run()
        with host_budget(self.runner):
            return self._run()

    def _run(self) -> dict:
        opts = self.options
        names = self.counter.config.class_names
        counts_csv = CountsCsvWriter(opts.save_csv, names, opts.counts_csv_max_bytes) if opts.save_csv else None
        cells_csv = CellsCsvWriter(opts.save_cells, names, opts.cells_csv_max_bytes) if opts.save_cells else None
        video, video_shape, refitted = None, (), False  # refitted: the warning about other frame sizes given
        show = opts.show  # off once OpenCV says it cannot show a window
        tally = CountTally(self.names)
        per_class = {n: Tally() for n in self.names}  # running figures: nothing kept per frame
        threads = [threading.Thread(target=self._capture, daemon=True, name="capture"),
                   threading.Thread(target=self._infer, daemon=True, name="infer")]
        began = time.perf_counter()
        n = 0
        interrupted = False
        commits = CommitSchedule() if opts.host_budget else None
        for t in threads:
            t.start()
        counted = self._counted()
        try:
            for frame, class_map, zoom, result, counting in counted:
                start = time.perf_counter()
                self._watch_scale(frame, result)
                result.cells = self.segmenter.cells_to_frame(result.cells, zoom)
                # A blank frame (lamp off, lens cap) shows no optics: a black one passed for fluorescence.
                optics = None if frame.blank else self.domain.check_optics(frame)
                for warning in (optics, self.domain.check(class_map)):
                    if warning and self.on_warning is not None:
                        self.on_warning(warning)
                fps = (n + 1) / max(time.perf_counter() - began, 1e-9)
                if counts_csv:
                    counts_csv.write(frame.index, frame.source, result.counts, fps, zoom * self.model_pixel_size_um)
                if cells_csv:
                    cells_csv.write(frame.index, frame.source, result)
                # Counted once its rows are written: a SIGTERM or Ctrl-C just before them made the summary count a
                # frame the CSV lacked (10 frames, 9 rows, under load).
                n += 1
                for name in self.names:
                    per_class[name].add(float(result.counts[name]))
                if frame.truth is not None:
                    tally.add(result.counts, frame.truth)
                if show or opts.save_video:
                    shown = self.renderer.render(frame.image, self.segmenter.to_frame(class_map, frame.image.shape),
                                                 result.counts, fps)
                    if opts.save_video:
                        if video is None:
                            video, video_shape = _open_video(opts.save_video, shown.shape), shown.shape
                        elif shown.shape != video_shape and not refitted:
                            refitted = True
                            if self.on_warning is not None:
                                self.on_warning(f"{frame.source}: {shown.shape[1]}×{shown.shape[0]} px frames are "
                                                f"fitted into the video's {video_shape[1]}×{video_shape[0]} px "
                                                f"(its size is the first frame's)")
                        video.write(shown if shown.shape == video_shape else _letterboxed(shown, video_shape))
                    if show:
                        try:
                            cv2.imshow("auto-CSC", shown)
                        except cv2.error as err:  # an OpenCV without a GUI (opencv-python-headless, a Jetson build)
                            show = False
                            if self.on_warning is not None:
                                reason = (err.err or str(err)).strip()
                                self.on_warning(f"no window: this OpenCV cannot show one ({reason}); going on headless "
                                                "(--no-show)")
                        else:
                            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                                break
                self.times.post.add(counting + time.perf_counter() - start)
                if self.on_frame is not None:
                    self.on_frame(frame, result, fps)
                if self.observer is not None:
                    self.observer(frame, class_map, result, fps, zoom * self.model_pixel_size_um)
                if (opts.max_frames and n >= opts.max_frames) or (opts.duration and time.perf_counter() - began >= opts.duration):
                    break
                if commits is not None and commits.due(time.perf_counter()):
                    commit_heap()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            elapsed = time.perf_counter() - began
            self._stop.set()
            counted.close()  # its counting threads finish the frames they hold
            # Inference ends between frames once stopped (the runner is closed after this: wait for it); capture
            # may be stuck inside the source's read, so it gets JOIN_TIMEOUT, then, a daemon, is left behind.
            capture, infer = threads
            deadline = time.monotonic() + JOIN_TIMEOUT
            while infer.is_alive() or (capture.is_alive() and time.monotonic() < deadline):
                for q in (self._frames_q, self._results_q):  # unblock threads waiting on a full queue
                    try:
                        q.get_nowait()
                    except queue.Empty:
                        pass
                time.sleep(0.01)
            self.source.close()
            for writer in (counts_csv, cells_csv):
                if writer:
                    writer.close()
            if video is not None:
                video.release()
            if show:
                cv2.destroyAllWindows()
        summary = {
            "frames": n, "seconds": round(elapsed, 2), "fps": round(n / max(elapsed, 1e-9), 2),
            "dropped": self.dropped, "blank_frames": self.blank_frames, "interrupted": interrupted,
            "stalled": self.stalled, "source": self.source.name,
            "backend": f"{self.runner.name} ({self.runner.detail})", "count_workers": self.count_workers,
            "stages": self.times.summary(),
            "counts": {name: tally.summary() for name, tally in per_class.items()},
            "skipped": [{"file": f, "reason": r} for f, r in self.source.skipped], "errors": self.errors,
            "scale": {"note": self.scale_note, "zoom": round(self.segmenter.zoom, 4),
                      "pixel_size_um": round(self.frame_pixel_size_um, 4), "warning": self.scale_warning,
                      "calibration": self.calibration.as_dict() if self.calibration else None,
                      "changes": self.scale_changes},
            "domain": self.domain.summary(),
        }
        if tally.images:
            summary["versus_truth"] = {k: tally.summary()[k] for k in ("count_accuracy", "mean_abs_error")}
        return summary


def _letterboxed(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``image`` scaled to fit a frame of ``shape`` whole, centred on black: a video has one frame size, and
    OpenCV's writer drops frames of any other without a word (a folder of images of two sizes)."""
    height, width = shape[:2]
    scale = min(height / image.shape[0], width / image.shape[1])
    h, w = max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale))
    out = np.zeros(shape, image.dtype)
    y, x = (height - h) // 2, (width - w) // 2
    out[y:y + h, x:x + w] = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return out


def check_video_target(path: Path) -> None:
    """An error where OpenCV cannot write the overlay video at ``path`` (an extension no container it has takes:
    none, .txt, .webm), found by opening a writer on a temporary file beside it: before the run, where the run's
    own writer fails only at the first counted frame, its summary lost."""
    path = Path(path)
    probe = path.with_name(f".{path.stem}.{os.getpid()}.probe{path.suffix}")
    try:
        _open_video(probe, (16, 16, 3)).release()
    except CscError as err:
        raise CscError(err.reason, path=path, fix=err.fix) from None
    finally:
        probe.unlink(missing_ok=True)


def _open_video(path: Path, shape: tuple[int, ...], fps: float = 25.0) -> cv2.VideoWriter:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fourcc = cv2.VideoWriter_fourcc(*("mp4v" if path.suffix.lower() == ".mp4" else "MJPG"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, (shape[1], shape[0]))
    if not writer.isOpened():
        raise CscError("cannot write video", path=path, fix="use a .mp4 or .avi file in a writable folder")
    return writer


def display_available() -> bool:
    """Whether a window can be shown: always on Windows and macOS; on Linux an X server that accepts a connection,
    else a Wayland display. $DISPLAY alone is not enough: left from an ssh -X session that ended, or set for a
    service started before the X login, it names a server that is gone, and OpenCV's Qt window then aborts the
    whole process at the first frame (no summary, the files unclosed)."""
    if os.name == "nt" or os.uname().sysname == "Darwin":
        return True
    if os.environ.get("DISPLAY"):
        return _x_server_answers()
    return bool(os.environ.get("WAYLAND_DISPLAY"))


def _x_server_answers() -> bool:
    """Whether the X server $DISPLAY names accepts a connection, asked through libxcb as Qt's and GTK's X backends
    ask it (no libxcb: no X client, and no window, here)."""
    import ctypes

    try:
        xcb = ctypes.CDLL("libxcb.so.1")
    except OSError:
        return False
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = (ctypes.c_char_p, ctypes.c_void_p)
    xcb.xcb_connection_has_error.argtypes = (ctypes.c_void_p,)
    xcb.xcb_disconnect.argtypes = (ctypes.c_void_p,)
    connection = xcb.xcb_connect(None, None)  # never NULL: a failed connection is an object with its error
    try:
        return xcb.xcb_connection_has_error(connection) == 0
    finally:
        xcb.xcb_disconnect(connection)
