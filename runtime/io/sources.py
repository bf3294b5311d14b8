"""Frame sources for `csc-run`: camera (index, device, RTSP URL or GStreamer pipeline), video file, image folder or
glob, and the simulated microscope (`demo`). Each yields `Frame`s; `live` sources may drop frames when behind."""
from __future__ import annotations

import glob
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from runtime.counting.blank import is_blank
from runtime.data.modality import ModalityEvidence, detect_modality
from runtime.errors import CscError
from runtime.io.imageio import is_image_name, read_image


@dataclass
class Frame:
    index: int
    image: np.ndarray  # uint8 BGR
    source: str
    truth: dict[str, int] | None = None  # exact counts, for the simulated microscope
    blank: bool = False  # nothing but background and noise (runtime/counting/blank.py), set by the pipeline's capture
    optics: ModalityEvidence | None = None  # see `detected_optics`

    def detected_optics(self) -> ModalityEvidence:
        """The frame's optics (`detect_modality`, 60–100 ms a frame), detected once: `csc-run --modality auto` and the
        run's optics check (`DomainCheck`) look at the same first frames."""
        if self.optics is None:
            self.optics = detect_modality(self.image)
        return self.optics


class Source(ABC):
    """A stream of frames. ``live`` sources (cameras) run at their own pace, so the pipeline drops the oldest
    frame when it falls behind; file sources wait for the pipeline and lose nothing."""

    def __init__(self, name: str, live: bool = False):
        self.name = name
        self.live = live
        self.skipped: list[tuple[str, str]] = []

    @abstractmethod
    def frames(self) -> Iterator[Frame]: ...

    def close(self) -> None:
        """Release the device or file; sources without one have nothing to do."""


class DemoSource(Source):
    """The simulated microscope drifting over a slide: a camera with exact ground truth."""

    def __init__(self, size: int = 512, seed: int = 0, kind: str = "mixed"):
        super().__init__("demo", live=False)
        from runtime.data.simulator import make_microscope

        self.microscope = make_microscope(kind, size=size, seed=seed)
        # Its slide rendered now (a third of a second), as a camera opens in its constructor: not in the run it feeds.
        self.slide = self.microscope.slide()

    def frames(self) -> Iterator[Frame]:
        for i, sim in enumerate(self.slide.frames(maps=False)):  # a camera gives no maps
            yield Frame(i, sim.image, "demo", sim.counts)


class MemorySource(Source):
    """Frames already in memory (an embedding program's, a test's), named ``frame0``, ``frame1``, …"""

    def __init__(self, images: Sequence[np.ndarray], name: str = "frames"):
        super().__init__(name)
        self.images = images

    def frames(self) -> Iterator[Frame]:
        for i, image in enumerate(self.images):
            yield Frame(i, image, f"frame{i}")


class ImageSource(Source):
    """A folder or a glob of images; unreadable files are skipped and listed, the run goes on."""

    def __init__(self, spec: str):
        super().__init__(spec, live=False)
        path = Path(spec)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if is_image_name(p))
        else:
            files = sorted(Path(p) for p in glob.glob(spec) if is_image_name(Path(p)))
        if not files:
            raise CscError("no images found", path=spec, fix="pass a folder or a glob like 'data/*.png'")
        self.files = files

    def frames(self) -> Iterator[Frame]:
        for i, path in enumerate(self.files):
            try:
                image = read_image(path)
            except CscError as err:
                self.skipped.append((str(path), err.reason))
                continue
            yield Frame(i, image, path.name)


class VideoSource(Source):
    def __init__(self, path: str):
        super().__init__(path, live=False)
        if not Path(path).is_file():
            raise CscError("video file not found", path=path, fix="check the path")
        self.capture = cv2.VideoCapture(path)
        if not self.capture.isOpened():
            raise CscError("cannot open video (unknown format or codec)", path=path,
                           fix="convert it to MP4 (H.264) or AVI (MJPG)")
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or 25.0

    def frames(self) -> Iterator[Frame]:
        i = 0
        while True:
            ok, image = self.capture.read()
            if not ok:
                return
            yield Frame(i, image, Path(self.name).name)
            i += 1

    def close(self) -> None:
        self.capture.release()


class CameraSource(Source):
    """OpenCV camera: an index, a device path, an RTSP/HTTP URL or a GStreamer pipeline (contains '!', e.g.
    Jetson CSI cameras through nvarguscamerasrc). A lost camera is reopened with exponential backoff."""

    def __init__(self, spec: str, width: int | None = None, height: int | None = None, fps: float | None = None,
                 retries: int = 5, on_message: Callable[[str], None] | None = None, opener=cv2.VideoCapture):
        super().__init__(f"camera:{spec}", live=True)
        self.spec, self.width, self.height, self.fps = spec, width, height, fps
        self.retries = retries
        self.on_message = on_message or (lambda _m: None)
        self.opener = opener
        self.capture = self._open()
        if self.capture is None:
            raise CscError(f"cannot open camera {spec!r}", fix="check `--camera` (an index such as 0, /dev/video0, "
                                                               "an rtsp:// URL or a GStreamer pipeline) and that no other program uses it")

    def _open(self):
        # OpenCV logs every backend it tries; a missing camera gets our one clear message instead.
        previous = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        try:
            if self.spec.isdigit():
                capture = self.opener(int(self.spec))
            elif "!" in self.spec:
                capture = self.opener(self.spec, cv2.CAP_GSTREAMER)
            else:
                capture = self.opener(self.spec)
        finally:
            cv2.utils.logging.setLogLevel(previous)
        if not capture.isOpened():
            return None
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, self.width), (cv2.CAP_PROP_FRAME_HEIGHT, self.height),
                            (cv2.CAP_PROP_FPS, self.fps)):
            if value:
                capture.set(prop, value)
        return capture

    def frames(self) -> Iterator[Frame]:
        i = 0
        while True:
            ok, image = self.capture.read() if self.capture is not None else (False, None)
            if ok:
                yield Frame(i, image, self.name)
                i += 1
                continue
            self._reconnect()

    def _reconnect(self) -> None:
        delay = 0.5
        for attempt in range(1, self.retries + 1):
            self.on_message(f"camera {self.spec} lost; reconnecting ({attempt}/{self.retries}) in {delay:.1f} s")
            time.sleep(delay)
            if self.capture is not None:
                self.capture.release()
            self.capture = self._open()
            if self.capture is not None:
                return
            delay = min(delay * 2, 8.0)
        raise CscError(f"camera {self.spec!r} lost and not back after {self.retries} attempts",
                       fix="check the cable/stream; the files written so far are complete")

    def close(self) -> None:
        if self.capture is not None:
            self.capture.release()


# The most frames `ReadAhead` reads before a run: a camera's first frames may be dark while it adjusts its exposure.
READ_AHEAD = 10


class ReadAhead(Source):
    """A source whose first frames are read before the run starts — `csc-run --modality auto` chooses its model by
    their optics — and then played first, so that nothing is read twice or lost: a camera's, a video's or a folder's.

    It reads until ``lit`` frames that are not blank (`runtime.counting.blank`; marked on each frame), or READ_AHEAD
    frames, or the end, on a thread of its own, and waits while frames keep coming, at most ``stall_timeout`` s for
    each: ``first`` is what was read by then. A source that stalls or fails meanwhile is left to the run, as any
    source is: its frames go on from the read ahead (waiting for it to end), and its error is raised there, so that
    the run's stall timeout and error reporting (`RunOptions.stall_timeout`, the summary) apply as to every source."""

    def __init__(self, source: Source, lit: int, stall_timeout: float | None = None):
        super().__init__(source.name, source.live)
        self.source = source
        self.skipped = source.skipped  # the same list: files skipped while reading ahead are listed too
        self._frames = source.frames()
        self._read: list[Frame] = []
        self._failed: list[BaseException] = []
        self._reader = threading.Thread(target=self._read_ahead, args=(lit,), name="read-ahead", daemon=True)
        self._reader.start()
        while self._reader.is_alive():
            read_so_far = len(self._read)
            self._reader.join(stall_timeout)
            if self._reader.is_alive() and len(self._read) == read_so_far:
                break  # stalled: the run waits for the source from here, under its own timeout
        self.first = list(self._read)

    def _read_ahead(self, lit: int) -> None:
        try:
            seen = 0
            while seen < lit and len(self._read) < READ_AHEAD:
                frame = next(self._frames, None)
                if frame is None:
                    return
                frame.blank = is_blank(frame.image)
                self._read.append(frame)
                seen += not frame.blank
        except BaseException as err:  # raised where the run reads the frames
            self._failed.append(err)

    def frames(self) -> Iterator[Frame]:
        self.first = []  # handed over one by one: a run does not hold its first frames to the end
        while True:
            reading = self._reader.is_alive()  # before the list is looked at: a frame appended after is not missed
            if self._read:
                yield self._read.pop(0)
            elif not reading:
                break
            else:
                self._reader.join()  # a source that stalled while read ahead: the run's own timeout watches this
        if self._failed:
            raise self._failed[0]
        yield from self._frames

    def close(self) -> None:
        self.source.close()
