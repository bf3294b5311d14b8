"""How large the cells of an image are, in pixels, read off the image itself.

Every size-dependent parameter of labelling and counting (threshold window, minimum area, morphology, the
splitter's marker spacing) follows from the cells' diameter in pixels. A user rarely knows the pixel size of a
frame that came off a camera at some magnification; like Cellpose, we estimate a typical diameter per image when
none is given, from a first-pass cell mask.
"""
from __future__ import annotations

import cv2
import numpy as np

MIN_PEAKS = 3  # fewer cell centres than this say nothing reliable about the typical size
PEAK_MARGIN = 1e-3  # a pixel within this of its window's maximum is a maximum (a plateau's pixels all are)


# Cells at least this wide (px) are measured on a half-size copy of the mask: as exact, a quarter of the work.
HALF_SIZE_FROM = 12.0


def estimate_diameter(mask: np.ndarray) -> float | None:
    """Typical cell diameter in px of a binary cell mask (holes filled), or None when it holds too few cells.

    Twice the median height of the distance transform's local maxima, i.e. of the cells' inscribed radii, which
    touching neighbours do not inflate the way component areas would (see `peak_diameters`).
    """
    diameters = peak_diameters(mask)
    return None if diameters is None else float(np.median(diameters))


def peak_diameters(mask: np.ndarray, min_peaks: int = MIN_PEAKS) -> np.ndarray | None:
    """Per cell centre found, twice its inscribed radius (float32 px), or None with fewer than ``min_peaks`` of them
    (MIN_PEAKS; fewer for a measure to be pooled with other images', `runtime.data.first_pass.pooled`).

    The maxima are searched in a window set by a first guess: over a disc of radius r the distance values average
    r/3, so 3 × their mean is r (clumps and ellipses pull it lower, which only narrows the window). Cells of at least
    HALF_SIZE_FROM px are measured on a half-size copy of the mask.
    """
    if min(mask.shape[:2]) < 3:
        return None  # no cell and its surroundings fit
    fg = cv2.compare(np.ascontiguousarray(mask), 0, cv2.CMP_GT)  # 0/255 whatever the input's "on" value
    if min(fg.shape) >= 64:
        half = cv2.compare(cv2.resize(fg, (fg.shape[1] // 2, fg.shape[0] // 2), interpolation=cv2.INTER_AREA), 128,
                           cv2.CMP_GE)
        diameters = _peak_diameters(half, min_peaks)
        if diameters is not None and 2 * np.median(diameters) >= HALF_SIZE_FROM:
            return 2 * diameters
    return _peak_diameters(fg, min_peaks)


def _peak_diameters(fg: np.ndarray, min_peaks: int) -> np.ndarray | None:
    if cv2.countNonZero(fg) in (0, fg.size):
        return None  # no cell, or no background for a cell to end at (a blank or saturated frame)
    dist = cv2.distanceTransform(fg, cv2.DIST_L2, 5)
    mean = cv2.mean(dist, mask=fg)[0]
    if mean <= 0:
        return None
    guess = 3.0 * mean
    peaks = window_maxima(dist, max(1, int(round(0.7 * guess))), 0.4 * guess)
    n, markers = cv2.connectedComponents(peaks, connectivity=8)
    if n - 1 < min_peaks:
        return None
    points = cv2.findNonZero(peaks).reshape(-1, 2)
    heights = np.zeros(n, np.float32)
    np.maximum.at(heights, markers[points[:, 1], points[:, 0]], dist[points[:, 1], points[:, 0]])
    return 2.0 * heights[1:]


def window_maxima(dist: np.ndarray, window: int, min_height: float) -> np.ndarray:
    """Cell centres of a distance map (uint8, 255 at them): pixels that are the maximum of their square window of
    2·``window`` + 1 px (to within PEAK_MARGIN) and at least ``min_height`` high. The one peak finder of the scale
    estimate (here) and the splitter's markers (`runtime.counting.instances.find_instances`). A square window:
    OpenCV dilates with rectangles in separable passes, an ellipse costs ~10× more."""
    local_max = cv2.dilate(dist, np.ones((2 * window + 1,) * 2, np.uint8))
    cv2.subtract(local_max, PEAK_MARGIN, dst=local_max)
    peaks = cv2.compare(dist, local_max, cv2.CMP_GE)
    del local_max
    cv2.bitwise_and(peaks, cv2.compare(dist, min_height, cv2.CMP_GE), dst=peaks)
    return peaks
