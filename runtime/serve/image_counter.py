"""`POST /api/count`: one uploaded image counted as `csc-run` counts a frame — the same model, at the same pixel size,
with the same blank check, segmenter, counter and cell table.

Uploads are counted one at a time in one low-priority thread with a runner of their own: a runner is not safe to
call from two threads (OpenVINO's request, TensorRT's context), and the live run's keeps its frames in flight. Beside
a live run that runner has one thread and opens on the first upload, so a run nobody uploads to pays nothing.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from runtime.backends.base import Runner
from runtime.counting.blank import is_blank
from runtime.classes import DEFAULT_PIXEL_SIZE_UM
from runtime.counting.counter import CellCounter, CountingConfig, FrameCounts
from runtime.pipeline.stream import Segmenter
from runtime.serve.priority import lower_thread_priority
from runtime.serve.uploads import UploadLimits, check_dimensions, decode_upload
from runtime.io.writers import CELL_COLUMNS, cell_rows

_INTEGER_COLUMNS = frozenset({"frame", "id", "area_px", "x", "y", "w", "h", "touches_border"})
_TEXT_COLUMNS = frozenset({"source", "class"})


def cell_records(result: FrameCounts, class_names: tuple[str, ...], source: str, frame: int = 0) -> list[dict]:
    """One dict per cell with the cells CSV's columns and values (numbers as numbers): the --save-cells rows."""
    return [{column: value if column in _TEXT_COLUMNS else int(value) if column in _INTEGER_COLUMNS else float(value)
             for column, value in zip(CELL_COLUMNS, row)} for row in cell_rows(frame, source, result, class_names)]


class ImageCounter:
    """Counts images with a runner of its own, one at a time, in a thread below the counting's priority.

    ``open_runner`` makes the (inactive) runner; ``counting`` is the run's counting configuration (None: the model's
    defaults); ``pixel_size_um`` gives the frames' pixel size at the moment of the upload (a live run's may be
    recalibrated), None for the model's.
    """

    def __init__(self, open_runner: Callable[[], Runner], counting: CountingConfig | None = None,
                 pixel_size_um: Callable[[], float | None] = lambda: None, tile_overlap: int = 64):
        self._open_runner = open_runner
        self._counting = counting
        self._pixel_size_um = pixel_size_um
        self._overlap = tile_overlap
        self._runner: Runner | None = None
        self._counter: CellCounter | None = None
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="uploads", initializer=lower_thread_priority)

    def open(self) -> Runner:
        """Open the runner now (a bad model is then an error at start, not at the first upload)."""
        return self._worker.submit(self._activate).result()

    def _activate(self) -> Runner:
        if self._runner is None:
            runner = self._open_runner()
            runner.activate()
            self._runner = runner
            meta = runner.metadata
            self._counter = CellCounter(self._counting or (
                CountingConfig(pixel_size_um=meta.pixel_size_um, class_names=tuple(meta.classes)) if meta
                else CountingConfig()))
        return self._runner

    async def count_upload(self, data: bytes, limits: UploadLimits, source: str,
                           pixel_size_um: float | None = None) -> dict:
        """An uploaded body decoded (runtime/serve/uploads.py) and counted in the worker thread, awaited: decoding
        is CPU work too, and waits its turn below the counting like the rest."""
        def decode_and_count() -> dict:
            return self.count_now(decode_upload(data, limits), source, pixel_size_um, limits)

        return await asyncio.wrap_future(self._worker.submit(decode_and_count))

    def count_now(self, image: np.ndarray, source: str, pixel_size_um: float | None = None,
                  limits: UploadLimits = UploadLimits()) -> dict:
        """{"counts", "cells", "pixel_size_um", "width", "height"} of one uint8 BGR image; ``pixel_size_um``
        overrides the run's. UploadRejected where the image at the model's pixel size passes ``limits``."""
        runner = self._activate()
        model_pixel = runner.metadata.pixel_size_um if runner.metadata else DEFAULT_PIXEL_SIZE_UM
        pixel = pixel_size_um or self._pixel_size_um() or model_pixel
        check_dimensions(image.shape[1], image.shape[0], limits, zoom=pixel / model_pixel)
        segmenter = Segmenter(runner, self._overlap, zoom=pixel / model_pixel)
        if is_blank(image):  # as the live run: the network would draw cells in the noise
            class_map = np.zeros(segmenter.model_shape(image.shape), np.uint8)
        else:
            class_map = segmenter.segment(image)
        result = self._counter.count(class_map)
        result.cells = segmenter.cells_to_frame(result.cells)
        return {"counts": result.counts, "cells": cell_records(result, self._counter.config.class_names, source),
                "pixel_size_um": round(pixel, 4), "width": int(image.shape[1]), "height": int(image.shape[0])}

    def close(self) -> None:
        """Drop the uploads not yet started, finish the one being counted, close the runner."""
        self._worker.shutdown(wait=True, cancel_futures=True)
        if self._runner is not None:
            self._runner.deactivate()
            self._runner = None
