"""Frames to compare two runs of a model on: used by the export checks (`checks`), the engine's accuracy guard
(`tensorrt`) and the graph upgrade (`upgrade`). Kept apart from all three so that none imports another for it."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from runtime.data.simulator import SimConfig, SimulatedMicroscope
from runtime.io.imageio import list_images, read_image


# Frames compared per check.
FRAMES = 4


def compared_images(images: str | Path) -> list[np.ndarray]:
    """The images of a folder that a check compares on (its first FRAMES by name), decoded: a command reads them
    before its export or build too, so that a folder it cannot use is refused before that work, not after it."""
    return [read_image(p) for p in list_images(images)[:FRAMES]]


def check_frames(size: tuple[int, int], images: str | Path | None = None, n: int = FRAMES) -> list[np.ndarray]:
    """Frames to compare on: images from a folder when given (real ones, `compared_images`), else simulated mixed
    frames."""
    h, w = size
    if images is not None:
        return [cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA) for image in compared_images(images)[:n]]
    microscope = SimulatedMicroscope(SimConfig(mode="mixed", height=h, width=w), seed=2024)
    return [microscope.frame(i).image for i in range(n)]
