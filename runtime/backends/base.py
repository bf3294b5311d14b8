"""The runner contract every backend meets: uint8 BGR frames (N, H, W, 3) in, uint8 class maps (N, H, W) out.

Pre- and post-processing live in the exported graph, so a runner only moves bytes. ``submit``/``collect`` let a
pipeline keep frames in flight; backends without asynchronous work run at ``submit``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np

from runtime.errors import CscError
from runtime.backends.model_meta import ModelMetadata


class Runner(ABC):
    name = "runner"

    def __init__(self) -> None:
        self.metadata: ModelMetadata | None = None
        self.detail = ""  # what the runner actually uses (providers, GPU), for the user and reports
        self.host_threads = 0  # CPU cores the backend keeps busy while it infers (0: the work is on a GPU)
        self.notes: list[str] = []  # things the user should know (ignored metadata keys, a feature turned off)

    @abstractmethod
    def activate(self) -> None: ...

    @abstractmethod
    def deactivate(self) -> None: ...

    @abstractmethod
    def infer(self, frames: np.ndarray) -> np.ndarray: ...

    def submit(self, frames: np.ndarray) -> Any:
        return self.infer(frames)

    def collect(self, handle: Any) -> np.ndarray:
        return handle

    @property
    def input_size(self) -> tuple[int, int]:
        assert self.metadata is not None
        return tuple(self.metadata.input_size)

    @property
    def max_batch(self) -> int | None:
        """The largest batch one call runs at once: None for no limit (a dynamic ONNX batch), else the model's."""
        assert self.metadata is not None
        return None if self.metadata.batch == "dynamic" else int(self.metadata.batch)

    @property
    def min_batch(self) -> int:
        """The smallest batch the model runs as it is (smaller ones are padded): its fixed batch, or 1."""
        return self.max_batch or 1

    def in_batches(self, frames: np.ndarray, run: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """``run`` over ``frames`` in chunks of the model's fixed batch, the last one padded with black frames (a
        dynamic batch runs whole): for backends whose graph has the batch it was exported with."""
        fixed = self.max_batch
        if fixed is None or len(frames) == fixed:
            return run(frames)
        out = []
        for i in range(0, len(frames), fixed):
            chunk = frames[i : i + fixed]
            if len(chunk) < fixed:
                chunk = np.concatenate([chunk, np.zeros((fixed - len(chunk), *chunk.shape[1:]), np.uint8)])
            out.append(run(chunk)[: min(fixed, len(frames) - i)])
        return np.concatenate(out)

    def check_frames(self, frames: np.ndarray) -> None:
        h, w = self.input_size
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (h, w, 3):
            raise CscError(f"{self.name}: frames must be uint8 (N, {h}, {w}, 3), got {frames.dtype} {frames.shape}",
                           fix="resize frames to the model's input size (the pipeline does this)")

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()
