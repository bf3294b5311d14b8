"""The newest frame for every viewer: the counting thread hands each frame over and returns at once; viewers get
the newest one when they are ready for it, never a queue.

A slow or stalled viewer therefore costs nothing but the frames it misses: the hub holds one set of counts and one
encoded JPEG, each with a sequence number, and each viewer waits for a number higher than the last it sent. The
overlay is drawn and JPEG-encoded in the hub's own low-priority thread, once per frame whoever watches, at most
`ViewSettings.stream_fps` times a second while someone watches and once every `idle_period_s` otherwise (for
/snapshot.jpg).
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from runtime.counting.counter import FrameCounts
from runtime.pipeline.overlay import OverlayRenderer
from runtime.serve.priority import lower_thread_priority
from runtime.io.sources import Frame


@dataclass(frozen=True)
class ViewSettings:
    # What a person can follow: 64 FPS counting is drawn one frame in four, which keeps the drawing and the 20
    # viewers' bytes from taking cores the counting needs.
    stream_fps: float = 15.0
    idle_period_s: float = 1.0  # nobody watching: a frame drawn this often still, so /snapshot.jpg is recent
    jpeg_quality: int = 80
    history_s: int = 300  # the page's chart: per-second means over the last five minutes
    keepalive_s: float = 15.0  # an SSE comment this often without frames: proxies keep the stream open


class Signal:
    """A sequence number bumped from any thread, awaited in the server's event loop."""

    def __init__(self) -> None:
        self.seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._lock = threading.Lock()

    def fire(self) -> None:
        with self._lock:
            self.seq += 1
            loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop closed: the server has stopped
                pass

    def _wake(self) -> None:
        event, self._event = self._event, asyncio.Event()
        if event is not None:
            event.set()

    async def wait(self, after: int, timeout: float | None = None) -> bool:
        """True once ``seq`` is past ``after``; False at the timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.seq <= after:
            loop = asyncio.get_running_loop()
            if self._loop is not loop:  # the first wait in this loop (a test client starts one per client)
                with self._lock:
                    self._loop, self._event = loop, asyncio.Event()
            event = self._event
            if self.seq > after:  # fired while binding
                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except asyncio.TimeoutError:
                return self.seq > after
        return True


class FrameHub:
    """Counts, chart history and the overlay JPEG of the newest frame (the pipeline's observer)."""

    def __init__(self, class_names: tuple[str, ...], to_frame: Callable[[np.ndarray, tuple[int, ...]], np.ndarray],
                 settings: ViewSettings = ViewSettings()):
        self.class_names = class_names  # with the background first, as the model's metadata has them
        self.names = class_names[1:]
        self.to_frame = to_frame
        self.settings = settings
        self.counts = Signal()
        self.jpegs = Signal()
        self.closed = False
        self.viewers = 0  # open /stream.mjpg responses
        self.frames = 0
        self.last_frame_at: float | None = None  # time.time() of the last frame counted (a watchdog's clock)
        self.cell_totals = {name: 0.0 for name in self.names}
        self.started = time.time()
        self._lock = threading.Lock()
        self._state: dict | None = None
        self._state_json: bytes | None = None
        self._pending: tuple | None = None  # (frame index, image, class map, counts, fps) not yet drawn
        self._jpeg: tuple[int, bytes] | None = None  # (frame index, JPEG)
        self._last_drawn = 0.0
        self._history: deque[dict] = deque(maxlen=settings.history_s)
        self._second: int | None = None
        self._sums = np.zeros(len(self.names))
        self._in_second = 0
        self._wake = threading.Event()
        self._drawer = threading.Thread(target=self._draw_loop, daemon=True, name="frame-hub")
        self._drawer.start()

    # -- the counting thread --------------------------------------------------------------------------------
    def observe(self, frame: Frame, class_map: np.ndarray, result: FrameCounts, fps: float, pixel_size_um: float) -> None:
        """The pipeline's observer: a few dictionary writes and a wake-up; no drawing, no encoding, no waiting."""
        counts = dict(result.counts)
        state = {"frame": frame.index, "source": frame.source, "counts": counts, "fps": round(fps, 2),
                 "pixel_size_um": round(pixel_size_um, 4)}
        now = time.time()
        with self._lock:
            self._state, self._state_json = state, None
            self._pending = (frame.index, frame.image, class_map, counts, fps)
            self.frames += 1
            self.last_frame_at = now
            for i, name in enumerate(self.names):
                self.cell_totals[name] += counts[name]
            self._add_to_history(int(now), counts)
            due = self.viewers > 0 or now - self._last_drawn >= self.settings.idle_period_s
        self.counts.fire()
        if due:
            self._wake.set()

    def _add_to_history(self, second: int, counts: dict[str, float]) -> None:
        if second != self._second:
            if self._second is not None and self._in_second:
                self._history.append({"t": self._second, "counts": dict(zip(self.names,
                                                                            np.round(self._sums / self._in_second, 2).tolist()))})
            self._second, self._in_second = second, 0
            self._sums[:] = 0
        self._sums += [counts[name] for name in self.names]
        self._in_second += 1

    # -- the drawing thread -----------------------------------------------------------------------------------
    def _draw_loop(self) -> None:
        lower_thread_priority()
        renderer = OverlayRenderer(self.class_names)
        quality = [cv2.IMWRITE_JPEG_QUALITY, self.settings.jpeg_quality]
        while not self.closed:
            if not self._wake.wait(0.5):
                continue
            self._wake.clear()
            pause = self._last_drawn + 1.0 / self.settings.stream_fps - time.time()
            if pause > 0:
                time.sleep(pause)  # frames that arrive meanwhile replace the pending one
            with self._lock:
                pending, self._pending = self._pending, None
            if pending is None or self.closed:
                continue
            index, image, class_map, counts, fps = pending
            shown = renderer.render(image, self.to_frame(class_map, image.shape), counts, fps)
            ok, jpeg = cv2.imencode(".jpg", shown, quality)
            self._last_drawn = time.time()
            if ok:
                with self._lock:
                    self._jpeg = (index, jpeg.tobytes())
                self.jpegs.fire()

    # -- the server's side ------------------------------------------------------------------------------------
    def state(self) -> dict | None:
        """The newest frame's {frame, source, counts, fps, pixel_size_um}; None before the first."""
        with self._lock:
            return self._state

    def state_json(self) -> bytes | None:
        with self._lock:
            if self._state_json is None and self._state is not None:
                self._state_json = json.dumps(self._state).encode()
            return self._state_json

    def jpeg(self) -> tuple[int, bytes] | None:
        """(frame index, JPEG) of the newest drawn frame; None before the first."""
        with self._lock:
            return self._jpeg

    def history(self) -> list[dict]:
        """Per-second means of the counts, oldest first: {"t": unix second, "counts": {...}}."""
        with self._lock:
            return list(self._history)

    def watch(self) -> None:
        with self._lock:
            self.viewers += 1
        self._wake.set()

    def unwatch(self) -> None:
        with self._lock:
            self.viewers -= 1

    async def next_state(self, after: int) -> tuple[int, bytes] | None:
        """(seq, JSON) once there are counts newer than ``after``; (after, b"") at the keep-alive timeout; None once
        closed."""
        fresh = await self.counts.wait(after, self.settings.keepalive_s)
        if self.closed:
            return None
        if not fresh:
            return after, b""
        seq = self.counts.seq
        return seq, self.state_json() or b""

    async def next_jpeg(self, after: int) -> tuple[int, bytes] | None:
        """(seq, JPEG) once one newer than ``after`` is drawn; None once closed."""
        while not self.closed:
            if await self.jpegs.wait(after, self.settings.keepalive_s):
                if self.closed:
                    return None
                seq, drawn = self.jpegs.seq, self.jpeg()
                if drawn is not None:
                    return seq, drawn[1]
        return None

    def close(self) -> None:
        """Release every waiting viewer and stop drawing."""
        self.closed = True
        self._wake.set()
        self.counts.fire()
        self.jpegs.fire()
        self._drawer.join(timeout=2.0)
