"""Texture energy: the local contrast of either sign that every label-free cell has and its flat background lacks.

Shared by the modality detection (`runtime.data.modality`: its objects), the first pass that measures a label-free
image's cells (`runtime.data.first_pass`) and the label-free masks of the auto-labeller (`trainer.label_free`); its
own module so that the detection can ask the first pass how wide the cells are (each imports it, not the other).
"""
from __future__ import annotations

import cv2
import numpy as np

# The texture energy of a cell exceeds the camera noise's typical level by at least this many of the noise's
# spreads (log scale).
NOISE_FLOOR = 3.0
# The texture energy's scales (px) before the cells' size is known (`runtime.data.first_pass`): they see cells of
# 10–40 px, and textured ones up to about 80; wider ones on a smaller copy.
ENERGY_FIRST_PASS = (1.5, 3.0)


def texture_energy(grey: np.ndarray, fine_sigma: float, smooth_sigma: float) -> np.ndarray:
    """float32 map of local contrast: |image − its blur at ``fine_sigma``| averaged over ``smooth_sigma``.

    What every label-free cell has and its flat background lacks, whatever the sign of its contrast: a relief's
    bright and dark halves (DIC), a dark body and its bright halo (phase), faint rings (unstained brightfield) all
    raise it alike, where an intensity threshold sees two objects, a rim or nothing."""
    x = grey.astype(np.float32, copy=False)
    high = cv2.absdiff(x, cv2.GaussianBlur(x, (0, 0), fine_sigma))
    return cv2.GaussianBlur(high, (0, 0), smooth_sigma)


def energy_mask(energy: np.ndarray, floor_sigmas: float | None = None) -> np.ndarray:
    """255 where the texture energy is high: Otsu on its logarithm (the background's energy is the camera's noise,
    the cells' is many times it, so the two modes separate on a log scale whatever the exposure), but never below
    the noise's own level plus ``floor_sigmas`` (NOISE_FLOOR) of its spread: with few or faint cells, Otsu would
    split the noise itself. The noise's level and spread come from the lowest quantiles of the log energy (a
    quarter of any frame is background), where a normal distribution's 5th and 25th percentiles lie 0.97 σ apart."""
    log = np.log(energy + 1e-3)
    lo, hi = float(log.min()), float(log.max())
    alpha = 255.0 / max(hi - lo, 1e-6)
    scaled = cv2.convertScaleAbs(log, alpha=alpha, beta=-lo * alpha)
    otsu = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)[0]
    p5, p25 = np.percentile(log[::2, ::2], (5, 25))
    sigma = (p25 - p5) / 0.97
    floor = (p25 + 0.674 * sigma + (NOISE_FLOOR if floor_sigmas is None else floor_sigmas) * sigma - lo) * alpha
    return cv2.threshold(scaled, max(otsu, min(floor, 254.0)), 255, cv2.THRESH_BINARY)[1]


def energy_cells(grey: np.ndarray, fine: float = ENERGY_FIRST_PASS[0], smooth: float = ENERGY_FIRST_PASS[1],
                 shrink_fine: bool = False) -> np.ndarray:
    """The cells (255) of a label-free image: the thresholded texture energy, eroded by ``smooth`` — the energy's
    average spreads each cell by about its σ (and would inflate a diameter measured on it) — and with
    ``shrink_fine`` by ``fine`` too (both rounded together to whole pixels: at the first pass's scales, one pixel
    more): the high-pass shows an edge's contrast up to about its σ outside the edge, a rim that a smooth cell's
    mask carries all round; processes about that thin (pseudopods) go with it."""
    return spread_removed(energy_mask(texture_energy(grey, fine, smooth)), fine, smooth, shrink_fine)


def spread_removed(mask: np.ndarray, fine: float, smooth: float, shrink_fine: bool = False) -> np.ndarray:
    """A texture-energy mask at scales ``fine`` and ``smooth`` eroded by the energy's spread (`energy_cells`)."""
    side = 2 * int(round(smooth + (fine if shrink_fine else 0.0))) + 1
    return cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side)))


def wide_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian blur of σ ≥ 8 px done on a copy shrunk by a power of two and enlarged again: what it leaves is
    smooth at that scale, and a full-size blur that wide took most of the detection's time."""
    factor = 1 << max(0, int(np.log2(sigma / 4)))
    if factor == 1:
        return cv2.GaussianBlur(x, (0, 0), sigma)
    h, w = x.shape
    small = cv2.resize(x, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA)
    return cv2.resize(cv2.GaussianBlur(small, (0, 0), sigma / factor), (w, h), interpolation=cv2.INTER_LINEAR)


def wide_gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """``cv2.GaussianBlur(x, (0, 0), sigma)`` of a float32 image to within 0.2 grey levels (a few hundredths on
    average; the most just above σ = 16, 32, 64 …, where the shrink doubles), at a small part of its cost for σ ≥ 16
    px: OpenCV convolves with 8σ + 1 taps a row, which for the calibration's σ of a
    frame's side ÷ 8 (`runtime.counting.calibration`) took 38 ms on a 512×512 frame and 20 s on a 4000×3000 one
    (one thread, `benchmarks/results/calibration_speed.json`).

    Not `wide_blur`, whose rougher copy (shrunk four times further, no border, the shrunk sides rounded down so
    that the copy is stretched back) moved calibrated scales on real smears: here the frame is first padded with
    OpenCV's own reflection as far as its kernel reaches and to a multiple of the shrink, shrunk by a power of two
    (to σ ≥ 8 px) by averaging, blurred, and enlarged linearly from the averaged pixels' centres. The averaging's
    own spread, (factor² − 1)/12 px², is at most 0.13 % of σ²; cubic enlargement erred five times more than linear
    on real smears."""
    factor = 1 << max(0, int(np.log2(sigma / 8)))
    if factor == 1:
        return cv2.GaussianBlur(x, (0, 0), sigma)
    h, w = x.shape
    pad = -(-int(np.ceil(4 * sigma)) // factor) * factor  # OpenCV's float kernel reaches 4σ
    padded = cv2.copyMakeBorder(x, pad, pad + (-h) % factor, pad, pad + (-w) % factor, cv2.BORDER_REFLECT_101)
    small = cv2.resize(padded, (padded.shape[1] // factor, padded.shape[0] // factor), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / factor)
    offset = (pad + 0.5) / factor - 0.5  # frame pixel (0, 0) in the shrunk copy's coordinates
    back = np.float32([[1 / factor, 0, offset], [0, 1 / factor, offset]])
    return cv2.warpAffine(small, back, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
