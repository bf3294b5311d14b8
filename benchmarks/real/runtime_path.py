"""`csc-run`'s path for one image, as the real-image benchmarks score it: one place for what real_counts.py,
label_free_model.py and label_free_scale.py each wrote out before — the frame rescaled to the model's pixel size and
segmented (tiled) by ONNX Runtime, counted by the runtime counter at the model's scale, the instances of the classes
asked for mapped back to the frame; and the calibration a run without a pixel size makes. torch-free, like the
runtime it measures."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from runtime.backends.onnxruntime import OnnxRuntimeRunner
from runtime.counting.calibration import Calibration, calibrate
from runtime.counting.counter import CellCounter, CountingConfig
from runtime.pipeline.stream import Segmenter


class RuntimePath:
    """One model, activated once, as `csc-run` runs it (``counting``: CountingConfig options beside its classes and
    pixel size)."""

    def __init__(self, model: Path, **counting):
        self.runner = OnnxRuntimeRunner(model)
        self.runner.activate()
        self.meta = self.runner.metadata
        self.counter = CellCounter(CountingConfig(class_names=tuple(self.meta.classes),
                                                  pixel_size_um=self.meta.pixel_size_um, **counting))

    def calibrated(self, frames: Sequence[np.ndarray], ruler: str | None = None, model: bool = True) -> Calibration:
        """The calibration of a run starting with ``frames`` (`--calibrate-on` ``ruler``); ``model`` False: the
        classical measure alone."""
        segment = (lambda frame, zoom: Segmenter(self.runner, zoom=zoom).segment(frame)) if model else None
        return calibrate(frames, self.meta, segment, ruler)

    def cells(self, image: np.ndarray, pixel_size_um: float,
              classes: Iterable[str] | None = None) -> tuple[np.ndarray, dict[str, float]]:
        """The image's instances of ``classes`` (every cell class: None) as frame-sized labels, and its counts per
        class; a grey image is read as `csc-run` reads it, in colour."""
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image
        segmenter = Segmenter(self.runner, zoom=pixel_size_um / self.meta.pixel_size_um)
        result = self.counter.count(segmenter.segment(image), return_labels=True)
        labels = result.labels
        if classes is not None:
            wanted = [self.meta.classes.index(name) for name in classes]
            labels = np.where(np.isin(labels, result.cells["id"][np.isin(result.cells["class_id"], wanted)]), labels, 0)
        return segmenter.to_frame(labels, image.shape), result.counts
