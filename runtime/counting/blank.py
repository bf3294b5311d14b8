"""Blank frames — a lens cap, the lamp off, a uniform field: nothing but background and the camera's noise.

The labeller's threshold and the network both find cells in anything: Otsu took all of a black or constant frame
for one cell and split a dark frame's noise into hundreds, and the bundled model drew two RBCs on every black
512×512 frame and 23 on a dark noisy one. A frame is blank when its detail — the image blurred by σ 2 px, less its
background (blurred by a sixteenth of the frame) — spans under FLAT grey levels at the 99.5th percentile (a uniform
field, lit or not), or when it is dark (median under DARK) and its detail spans under NOISE_RATIO times the
camera's noise (the high-pass's spread in the calmer quarter of 16×16 blocks): a lens cap or the lamp off.

Measured at SIDE px: noise alone (σ 2–12 grey levels, raw, demosaiced, JPEG at quality 70–90, blurred by σ 0.7)
spans at most 0.79 of its noise, or under FLAT; cells span from 1.04 of it (the faintest simulated unstained
brightfield frames) through 5.4 (simulated DIC) and 8.6 (Chula smears) to 49 (BBBC030's DIC). Those two ends are
close, so the noise test is kept to dark frames, where no transmitted-light image of cells lies: a faint lit frame
is never taken for blank. Everything runs on a copy shrunk to SIDE px (under half a millisecond for a 512×512 frame
here).

A frame more than WINDOW_SHRINK times larger than SIDE that its copy shows blank is looked at again in up to WINDOWS
× WINDOWS windows spread over it, each SIDE × WINDOW_SHRINK px shrunk to SIDE, and is blank only where every window
is, by the noise test whatever its level: on the whole frame's copy, cells smaller than its shrink average away — a
4000×3000 frame of 15-px DIC RBCs, whose reliefs are half bright and half dark, spanned 0.81 grey levels there and
was labelled empty. On the windows, noise alone (4000×3000 fields, σ 2–8 at levels 3–180: raw, JPEG at quality 70
and 90, demosaiced, blurred by σ 0.7) spanned at most 0.86 of its noise (fields of σ 10–12 stayed blank too), and
simulated full frames of label-free cells 1.58 (unstained RBCs) to 13 (phase contrast); at full size, correlated
noise (JPEG, demosaicing) spans up to 4.6 of it (measured while choosing: the label-free benchmark's full-frame
scenes at seeds 21 and 43). Above 3 × 1024 px a side the windows leave gaps between them, where cells that the
frame's copy does not show are not looked for; the windows are only looked at on frames whose copy is flat, rare in
a stream of cells.
"""
from __future__ import annotations

import cv2
import numpy as np

FLAT = 1.0  # grey levels of 255
DARK = 40.0  # median grey level of 255 under which a frame is dark
NOISE_RATIO = 0.9
SIDE = 256
WINDOWS = 3
WINDOW_SHRINK = 4
_BLOCK = 16


def _measure(image: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(detail, noise, median) of a uint8 or uint16, grey or BGR image at SIDE px (see the module)."""
    if image.dtype == np.uint16:
        image = (image >> max(0, int(image.max()).bit_length() - 8)).astype(np.uint8)
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    h, w = grey.shape
    factor = SIDE / max(h, w)
    if factor < 1:
        grey = cv2.resize(grey, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    # The median from a histogram of every second pixel: a sort of the floats would cost more than the rest.
    cumulative = np.cumsum(np.bincount(grey[::2, ::2].ravel(), minlength=256))
    median = float(np.searchsorted(cumulative, cumulative[-1] / 2))
    x = grey.astype(np.float32)
    h, w = x.shape
    # The background: a blur over a sixteenth of the frame, run on a copy a quarter the size (a 100 px kernel costs).
    small = cv2.resize(x, (max(1, w // 4), max(1, h // 4)), interpolation=cv2.INTER_AREA)
    background = cv2.resize(cv2.GaussianBlur(small, (0, 0), max(h, w) / 64), (w, h), interpolation=cv2.INTER_LINEAR)
    detail = cv2.absdiff(cv2.GaussianBlur(x, (0, 0), 2.0), background)
    high = x - cv2.GaussianBlur(x, (0, 0), 1.0)
    bh, bw = h // _BLOCK, w // _BLOCK
    if not bh or not bw:
        return detail, float(high.std()), median
    # Block variances from block means of the high-pass and its square (INTER_AREA by an integer factor: exact).
    crop = high[:bh * _BLOCK, :bw * _BLOCK]
    mean = cv2.resize(crop, (bw, bh), interpolation=cv2.INTER_AREA)
    square = cv2.resize(crop * crop, (bw, bh), interpolation=cv2.INTER_AREA)
    blocks = np.sqrt(np.maximum(square - mean * mean, 0)).ravel()
    return detail, float(np.partition(blocks, blocks.size // 4)[blocks.size // 4]), median


def _rank(size: int) -> int:
    """The index of the 99.5th percentile among ``size`` sorted values."""
    return int(0.995 * (size - 1))


def is_blank(image: np.ndarray) -> bool:
    """Whether the frame holds nothing but background and noise (see the module): on its SIDE-px copy and, where it
    is much larger, in its windows too."""
    if image.size == 0:
        return True
    if not _flat(image, noise_test_lit=False):
        return False
    return all(_flat(window, noise_test_lit=True) for window in _windows(image))


def _flat(image: np.ndarray, noise_test_lit: bool) -> bool:
    """The blank test on one image at SIDE px: its detail's spread under FLAT or, where it is dark (or with
    ``noise_test_lit``, whatever its level), under NOISE_RATIO of its noise. The spread is compared with its bound
    by counting the pixels at or above it: the percentile's decision without a partial sort."""
    detail, noise, median = _measure(image)
    bound = max(FLAT, NOISE_RATIO * noise) if noise_test_lit or median < DARK else FLAT
    at_or_above = cv2.countNonZero(cv2.compare(detail, bound, cv2.CMP_GE))
    return at_or_above <= detail.size - 1 - _rank(detail.size)


def _windows(image: np.ndarray) -> list[np.ndarray]:
    """Up to WINDOWS × WINDOWS windows of SIDE × WINDOW_SHRINK px spread evenly over a frame larger than that (none
    for a frame that is not: its own copy is shrunk no more than they would be)."""
    h, w = image.shape[:2]
    side = SIDE * WINDOW_SHRINK
    if max(h, w) <= side:
        return []
    return [image[top:top + side, left:left + side] for top in _starts(h, side) for left in _starts(w, side)]


def _starts(length: int, side: int) -> list[int]:
    """Where windows of ``side`` px start along an axis ``length`` px long: as many as cover it, at most WINDOWS,
    the first at 0 and the last at the end (one at 0 where the axis is not longer than a window)."""
    n = min(WINDOWS, -(-length // side))
    return np.linspace(0, max(0, length - side), n).round().astype(int).tolist()
