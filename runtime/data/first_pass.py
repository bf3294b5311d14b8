"""The first look at a label-free image's cells: how wide they are, before anything else is known about them.

Every size-dependent step of labelling a label-free image (and the runtime's calibration without a pixel size)
follows from the cells' diameter, and the first pass measures it: the texture energy at fixed small scales
(`runtime.data.energy.ENERGY_FIRST_PASS`), holes filled, its distance maxima
(`runtime.counting.scale.peak_diameters`). Those scales see the cells of every optics at 10–40 px and textured
cells (BBBC030's CHO cells, macrophages) up to about 80; a smooth cell wider than that — an RBC at a high
magnification — shows them only the edges of its relief or ring, and specks outnumber the cells. So the measure is
taken again on copies halved in size (`first_pass`).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from runtime.counting.instances import fill_all_holes
from runtime.counting.scale import MIN_PEAKS, peak_diameters
from runtime.data.energy import energy_cells

# Copies halved in size up to this many times (cells up to 8× wider than the first pass's own range).
FIRST_PASS_LEVELS = 3
# A copy is made only while it keeps at least this many px a side.
MIN_COPY_SIDE = 32
# A first pass whose cells measure this many times wider on a copy of half the size, or more, did not see cells:
# halving the resolution moves a seen cell's measured size by its blur, while specks and the edges of a smooth cell
# too wide for the first pass's scales (the two sides of a DIC relief, an unstained cell's ring) measure about the
# same pixels on every copy (twice as wide, measured at full size) until a copy shows the cells. The two overlap a
# little (measured while choosing, not a result file: seen cells up to 1.78×, specks and edges from 1.8×, mostly
# about 2×): between NEAR_JUMP and SCALE_JUMP the copy after next decides — where it measures the cells
# CONFIRMED_JUMP times wider than here, the cells showed only there (specks twice, then the cells); seen cells
# merge there, no more. At 2.2, 30-px DIC RBCs whose edges measured exactly 2× were kept at full size.
SCALE_JUMP = 1.9
NEAR_JUMP = 1.7
CONFIRMED_JUMP = 3.0
# A pooled measure under this fraction of the pool's median by area is a speck's (`without_specks`): a speck measures
# about half a cell or less wherever the pass confuses the two (`SCALE_JUMP`; `trainer.autolabel.FOLDER_WIDER`).
SPECK = 0.5
# ... and only where such measures stand for under this share of the pool's area: specks are many and tiny (1–12 % of
# the full size's area in the sparse macrophage fields of seeds 55–56), cells a fair share (15 RBCs beside two
# objects three times wider, a field: 45 %).
SPECK_AREA = 0.25
# The paper's Gaussian filter (3×3, σ 0.8), on which the ratios above were measured: the first pass always looks at
# the image through it (on raw frames, halving moved seen cells' sizes more, and small cells were taken for specks).
BLUR_KSIZE, BLUR_SIGMA = 3, 0.8


@dataclass(frozen=True)
class FirstPass:
    """What the first pass saw of a label-free image's cells."""

    diameters: np.ndarray | None  # per cell centre, its inscribed diameter in px of the image; None: too few cells
    factor: int  # the copy the cells were seen on was this many times smaller than the image (1, 2, 4, 8)

    @property
    def diameter(self) -> float | None:
        """The typical cell diameter (px), or None."""
        return None if self.diameters is None else float(np.median(self.diameters))


def shrunk(grey: np.ndarray, factor: int) -> np.ndarray:
    """``grey`` made ``factor`` times smaller (pixels averaged), or itself at 1."""
    if factor == 1:
        return grey
    return cv2.resize(grey, (grey.shape[1] // factor, grey.shape[0] // factor), interpolation=cv2.INTER_AREA)


def first_pass(grey: np.ndarray, blurred: bool = False) -> FirstPass:
    """The cells of a label-free grey image (through the paper's filter; ``blurred``: it already is) measured on
    the full size and on copies halved in size (`copies_measured`), and the copy that saw them (`chosen_copy`)."""
    return chosen_copy(copies_measured(grey, blurred))


def copies_measured(grey: np.ndarray, blurred: bool = False) -> list[FirstPass]:
    """The measures of the full size and of each copy halved in size that shows any cell (`peak_diameters`),
    smallest factor first: what `chosen_copy` chooses from, per image or pooled over a folder's images (`pooled`).
    A copy with fewer than MIN_PEAKS cells is kept as measured with no floor, for the pool: one image's one or two
    large cells say nothing about their size, a folder's many do."""
    if not blurred:
        grey = cv2.GaussianBlur(grey, (BLUR_KSIZE, BLUR_KSIZE), BLUR_SIGMA)
    seen: list[FirstPass] = []
    for level in range(FIRST_PASS_LEVELS + 1):
        factor = 1 << level
        if level and min(grey.shape[:2]) // factor < MIN_COPY_SIDE:
            break
        mask = fill_all_holes(energy_cells(shrunk(grey, factor)))
        diameters = peak_diameters(mask)
        if diameters is None:  # too few to measure alone: the copy's own few cells, never more than MIN_PEAKS − 1
            diameters = peak_diameters(mask, min_peaks=1)
        if diameters is not None:
            seen.append(FirstPass(diameters * factor, factor))
    return seen


def chosen_copy(seen: list[FirstPass]) -> FirstPass:
    """Of the measures of successive copies (`copies_measured`) with at least MIN_PEAKS cells, the one that saw the
    cells: from the full size on,
    the next copy is taken while its cells measure SCALE_JUMP times wider (or, between NEAR_JUMP and it, the copy
    after next CONFIRMED_JUMP times wider) — on the copy where the pass sees cells, halving changes nothing but the
    blur. A copy with too few cells to measure is passed over; where every copy after one that jumped has too few,
    that one is kept (a field of a few large cells: nothing confirms it, and the full size measured specks)."""
    seen = [measure for measure in seen if len(measure.diameters) >= MIN_PEAKS]
    if not seen:
        return FirstPass(None, 1)
    k = 0
    while k + 1 < len(seen):
        here, ratio = seen[k].diameter, seen[k + 1].diameter / seen[k].diameter
        if ratio >= SCALE_JUMP:
            k += 1
        elif ratio >= NEAR_JUMP and k + 2 < len(seen) and seen[k + 2].diameter >= CONFIRMED_JUMP * here:
            k += 2
        else:
            break
    return seen[k]


def pooled(per_image: Iterable[list[FirstPass]], drop_specks: bool = False) -> FirstPass:
    """The first pass of several images of one microscope and magnification taken as one image: each copy's cells
    pooled over the images (with ``drop_specks``, less its specks: `without_specks`), then `chosen_copy`. A field of
    one or two large cells among dust has too few cells on the copy that shows them to be measured there alone, and
    its specks outnumber them on the full size; a folder of such fields has enough on that copy."""
    by_factor: dict[int, list[np.ndarray]] = {}
    for seen in per_image:
        for measure in seen:
            by_factor.setdefault(measure.factor, []).append(measure.diameters)
    keep = without_specks if drop_specks else np.asarray
    return chosen_copy([FirstPass(keep(np.concatenate(parts)), factor) for factor, parts in sorted(by_factor.items())])


def without_specks(diameters: np.ndarray) -> np.ndarray:
    """Pooled measures less those of specks: the measures under SPECK of the median by area (each centre weighed by
    its disc's area, the share of the foreground it stands for), where together they stand for under SPECK_AREA of
    the area. A folder's empty fields measure their dust, a dozen specks or more each, which can outnumber the few
    large cells of its other fields; by count the pool then measured the specks (simulated fields of 164-px
    macrophages, none to three a field, seed 55: specks 3–4 to 1 by number on the full size, the cells 30–70 to 1 by
    area), by area it measures the cells. Small cells beside a few large objects (RBCs and a white cell or two, a
    bubble) are kept: they hold a fair share of the area, as specks never do."""
    if not len(diameters):
        return diameters
    order = np.argsort(diameters, kind="stable")
    area = np.cumsum(np.square(diameters[order], dtype=np.float64))
    small = diameters < SPECK * diameters[order][np.searchsorted(area, area[-1] / 2)]
    if np.square(diameters[small], dtype=np.float64).sum() >= SPECK_AREA * area[-1]:
        return diameters
    return diameters[~small]
