"""Frame sources for `csc-run`: camera (index, device, RTSP URL or GStreamer pipeline), video file, image folder or
glob, and the simulated microscope (`demo`). Each yields `Frame`s; `live` sources may drop frames when behind."""
from __future__ import annotations

import glob
import os
import queue
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
    blank: bool = False  # nothing but background and noise (runtime/counting/blank.py): set by the pipeline's capture
    # (and by `ReadAhead`)
    optics: ModalityEvidence | None = None  # see `detected_optics`

    def detected_optics(self) -> ModalityEvidence:
        """The frame's optics (`detect_modality`, 60–100 ms a frame), detected once: `csc-run --modality auto`, the
        run's calibration and its optics check (`DomainCheck`) look at the same first frames."""
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
    """A folder or a glob of images (``**`` reaching into subfolders); unreadable files are skipped and listed, the
    run goes on."""

    def __init__(self, spec: str):
        super().__init__(spec, live=False)
        path = Path(spec)
        # `glob` reads ``**`` as one folder level unless asked: 'runs/**/*.png' left out every image deeper down
        found = path.iterdir() if path.is_dir() else map(Path, glob.glob(spec, recursive=True))
        files = sorted(p for p in found if is_image_name(p) and p.is_file())  # a folder named x.png is no image
        if not files:
            raise CscError("no images found", path=spec,
                           fix="pass a folder or a glob like 'data/*.png' (or 'data/**/*.png', subfolders too)")
        self.files = files
        self.names = _source_names(files)

    def frames(self) -> Iterator[Frame]:
        for i, (path, name) in enumerate(zip(self.files, self.names)):
            try:
                image = read_image(path)
            except CscError as err:
                self.skipped.append((str(path), err.reason))
                continue
            yield Frame(i, image, name)


def _source_names(files: list[Path]) -> list[str]:
    """What each image is called in the results (the CSVs' ``source``): its file name, or, where a glob found two of
    one name in different folders ('day*/001.png'), every image's path below the folder they share, so that no two
    rows of different images read alike."""
    names = [p.name for p in files]
    if len(set(names)) == len(names):
        return names
    root = os.path.commonpath([p.parent for p in files])
    return [p.relative_to(root).as_posix() for p in files]


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
        lost = 0  # reconnections since the last frame: a camera that opens again but gives no frame is not back
        while True:
            ok, image = self.capture.read() if self.capture is not None else (False, None)
            # OpenCV hands an empty frame over as None, and some backends (GStreamer, RTSP) report it as read: for
            # the run it is no frame, as a failed read is
            if ok and image is not None and image.size:
                lost = 0
                yield Frame(i, image, self.name)
                i += 1
                continue
            lost += 1
            if lost > self.retries:
                raise CscError(f"camera {self.spec!r} lost and not back after {self.retries} attempts",
                               fix="check the cable/stream; the files written so far are complete")
            self._reconnect(lost)

    def _reconnect(self, attempt: int) -> None:
        """Reopen the camera after a wait that doubles with each ``attempt`` (0.5 s, 1 s, … 8 s at most)."""
        delay = min(0.5 * 2 ** (attempt - 1), 8.0)
        self.on_message(f"camera {self.spec} lost; reconnecting ({attempt}/{self.retries}) in {delay:.1f} s")
        time.sleep(delay)
        if self.capture is not None:
            self.capture.release()
        self.capture = self._open()

    def close(self) -> None:
        if self.capture is not None:
            self.capture.release()


# The most frames `ReadAhead` reads before a run: a camera's first frames may be dark while it adjusts its exposure.
READ_AHEAD = 10
# The longest `ReadAhead` waits for a frame before the model is chosen by those that came (the run then waits for
# the rest under its own stall timeout).
READ_AHEAD_WAIT = 5.0
# The longest `ReadAhead.close` waits for its reader to finish the read it is in (a frame period, unless stalled).
READER_JOIN = 2.0
_ENOUGH, _ENDED = object(), object()  # the read ahead's outcomes besides an error: done, or the source ended


class ReadAhead(Source):
    """A source whose first frames are read before the run starts — `csc-run --modality auto` chooses its model by
    their optics — and then played first, so that nothing is read twice or lost: a camera's, a video's or a folder's.

    A thread of its own reads until ``lit`` frames that are not blank (`runtime.counting.blank`; marked on each
    frame), or READ_AHEAD frames, or the end; ``first`` is what came before a wait of ``wait`` s for one frame. The
    rest of a read ahead that stalled is played as it comes, and an error of the source is raised, where the run
    reads them, under its stall timeout and error reporting as for any source. A live source is read on while the
    model loads (`_drain`), its newest frame kept for the run: a camera stream left unread fills its buffers."""

    def __init__(self, source: Source, lit: int, wait: float | None = READ_AHEAD_WAIT):
        super().__init__(source.name, source.live)
        self.source = source
        self.skipped = source.skipped  # the same list: files skipped while reading ahead are listed too
        self.wait = wait
        self._frames = source.frames()
        self._queue: queue.Queue = queue.Queue()  # the frames read ahead, then _ENOUGH, _ENDED or the error
        self._outcome: object | None = None  # the last of those, once taken off the queue
        self._handed_over = threading.Event()  # set when the run starts reading, or the source is closed
        self._closing = threading.Event()
        self._newest: Frame | None = None  # a live source's newest frame read while the model loaded
        self._drained: object | None = None  # _ENDED or the error that ended that reading, if anything did
        self._reader = threading.Thread(target=self._read_ahead, args=(lit,), name="read-ahead", daemon=True)
        self._reader.start()
        self.first: list[Frame] = []
        while self._outcome is None:
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                break  # no frame for `wait` s: the model is chosen by what came
            if isinstance(item, Frame):
                self.first.append(item)
            else:
                self._outcome = item

    @property
    def ended(self) -> bool:
        """Whether the source ended while it was read ahead (a folder of unreadable files gives no frame at once)."""
        return self._outcome is _ENDED

    def _read_ahead(self, lit: int) -> None:
        outcome: object = _ENOUGH
        try:
            seen = read = 0
            while seen < lit and read < READ_AHEAD and not self._closing.is_set():
                frame = next(self._frames, None)
                if frame is None:
                    outcome = _ENDED
                    return
                frame.blank = is_blank(frame.image)
                read, seen = read + 1, seen + (not frame.blank)
                self._queue.put(frame)
        except BaseException as err:  # raised where the run reads the frames
            outcome = err
            return
        finally:
            self._queue.put(outcome)  # whatever ends the read ahead: `frames` must not wait for it forever
        if self.live:
            self._drain()

    def _drain(self) -> None:
        """A live source's frames until the run takes over, the newest kept: a camera left unread while the model
        loads buffers stale frames, and an RTSP stream over UDP loses packets."""
        try:
            while not self._handed_over.is_set():
                frame = next(self._frames, None)
                if frame is None:
                    self._drained = _ENDED
                    return
                self._newest = frame
        except BaseException as err:
            self._drained = err

    def frames(self) -> Iterator[Frame]:
        self._handed_over.set()
        held, self.first = self.first, []  # handed over one by one: a run does not hold its first frames to the end
        while held:
            yield held.pop(0)
        while self._outcome is None:  # a read ahead that stalled: its frames as they come (the run's timeout watches)
            item = self._queue.get()
            if isinstance(item, Frame):
                yield item
            else:
                self._outcome = item
        if self._outcome is not _ENOUGH:
            if self._outcome is _ENDED:
                return
            raise self._outcome
        self._reader.join()  # a live source's reader stops after its current read
        if self._newest is not None:
            newest, self._newest = self._newest, None
            yield newest
        if self._drained is _ENDED:
            return
        if self._drained is not None:
            raise self._drained
        yield from self._frames

    def close(self) -> None:
        """The reader stopped (after the read it is in, READER_JOIN s at most: a camera released under a read may
        crash, and one released after it reconnects), then the source closed."""
        self._closing.set()
        self._handed_over.set()
        self._reader.join(READER_JOIN)
        self.source.close()
