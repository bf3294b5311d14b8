"""The cell mask of a label-free image (unstained brightfield, phase contrast, DIC) for the auto-labeller.

An intensity threshold fails on these images for physical reasons: a DIC cell is a relief, one bright and one dark
half, so it becomes two objects or a rim; a phase-contrast cell is a dark body in a bright halo with pseudopods
fainter than either; an unstained cell in brightfield barely absorbs and shows mostly as defocus rings. What they
share is local contrast of either sign where the background is flat (`runtime.data.modality.texture_energy`), so the
mask is that energy thresholded on a log scale, first at a fixed small scale to measure the cells, then at a scale
set by their diameter. The rest of the labeller (rim closing, hole filling, splitting, rejection) follows as for
stained images, except that touching cells are split from the mask without the gaps the optics show between
them: bright halos (phase contrast, unstained brightfield) and, in DIC, the saddles of the optical path
recovered by integrating the relief along the shear.
"""
from __future__ import annotations

import cv2
import numpy as np

from runtime.counting.instances import fill_all_holes
from runtime.data.modality import ENERGY_FIRST_PASS, energy_cells, wide_blur

# The energy's two scales, in cell diameters: the high-pass keeps detail finer than FINE × d (a cell's texture and
# edges, not its slow shading), and the average over SMOOTH × d joins a cell's edges and texture into one region.
# Chosen on BBBC030's tuning half (cho01–cho30): at 53-px cells, σ 1.5/3 px gave instance F1 0.944, 2/4 px 0.931,
# 3/6 px 0.869 (before `energy_cells` eroded the mask by its σ, which took the first to 0.961 and its mIoU from
# 0.84 to 0.92 on every third tuning image, and on simulated label-free RBCs F1 from 0.05–0.12 to 0.74–0.84).
FINE = 1.5 / 53
SMOOTH = 3.0 / 53


def first_pass_mask(grey: np.ndarray) -> np.ndarray:
    """A rough cell mask (255) at the fixed small scales (`ENERGY_FIRST_PASS`): what the diameter is estimated from
    (holes filled)."""
    return energy_cells(grey)


def label_free_mask(grey: np.ndarray, diameter_px: float, processes: bool = True) -> np.ndarray:
    """The cell mask (255) of a label-free grey image whose cells are ``diameter_px`` across. The scales follow
    the diameter but never drop below the first pass's: finer, the camera's noise is the texture.

    Cells without thin ``processes`` (RBCs: smooth discs) lose the high-pass's rim too (`energy_cells`), which
    otherwise widens a 20-px RBC's outline by a pixel or two all round (its IoU with the true cell about 0.7). The
    rim stays on cells with processes (macrophages): their pseudopods are that thin, and belong to the cell.
    Chosen on simulator seeds 55–56 and BBBC030's tuning part: label-free RBCs' mIoU 0.83–0.85 → 0.84–0.91, F1 up
    by 0.03–0.05 in phase contrast and unstained brightfield, down by 0.01–0.02 in DIC; on macrophages (BBBC030's
    CHO cells too) the shrink lifted mIoU on BBBC030 but cost simulated macrophages up to 0.06 of F1."""
    fine, smooth = ENERGY_FIRST_PASS
    return energy_cells(grey, max(fine, FINE * diameter_px), max(smooth, SMOOTH * diameter_px),
                        shrink_fine=not processes)


# A pixel is halo where it is brighter than the background by this many of the background's noise (robust sigma):
# the usual three sigma of "above noise", not tuned.
HALO_SIGMAS = 3.0
# The optics whose cells sit in a bright halo: phase contrast (the phase ring's halo) and the detector's
# "brightfield" (unstained cells, slightly defocused, ring in bright fringes; and phase-contrast fields of faint
# cells are often taken for it). Not DIC: there a cell's bright half is the cell.
HALOS = ("phase", "brightfield")


def bright_halos(grey: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Pixels (255) brighter than the background (the median outside ``mask``) by HALO_SIGMAS of its noise
    (1.4826 × the median absolute deviation): a phase-contrast cell's halo, an unstained cell's bright fringe."""
    background = grey[mask == 0]
    if background.size < 16:
        return np.zeros(grey.shape, np.uint8)
    level = float(np.median(background))
    noise = 1.4826 * float(np.median(np.abs(background.astype(np.float32) - level)))
    return cv2.compare(grey, level + HALO_SIGMAS * max(noise, 1.0), cv2.CMP_GT)


def halo_free(mask: np.ndarray, halos: np.ndarray) -> np.ndarray:
    """Where touching cells of ``mask`` are split from (`find_instances`' seeds): the mask without the halo lines
    that reach its outside.

    A phase-contrast cell is dark in a bright halo, and where two cells touch their halos form a bright line
    between them, running from the clump's outer halo across it. The texture mask closes over that line (its
    energy is strongest there), so the mask's distance map sees one blob; without the lines it sees the cells.
    A bright patch enclosed by the cell (an unstained RBC's bright centre, a vesicle) is not a line between cells:
    holes are filled back (4-connected: a one-pixel diagonal line counts as enclosed; blurred halos are wider).
    Only the split uses this: every mask pixel still belongs to a cell, and a blob whose seeds hold fewer than two
    cells is split as without them (a cell bright all over, as rounded cells are, loses its seeds). The level is
    one for the whole image: a field lit very unevenly can lose bright corners of cells from the seeds."""
    return fill_all_holes(cv2.bitwise_and(mask, cv2.bitwise_not(halos)))


# DIC: the band of wavelengths the shear axis is read from (px): from the noise's scale up to two cell diameters.
AXIS_BAND_PX = 6.0
# The optical path is measured on a copy with cells at most this many px across: a saddle between two domes needs
# no finer detail, and at full size a 12-MP frame's transforms and wide filters took tens of seconds.
PATH_DIAMETER_PX = 24.0
# The optical path is smoothed over PATH_SMOOTH diameters, and a pixel is a cell's core where its path exceeds
# PATH_LEVEL of the highest within PATH_REACH diameters. Chosen on simulator seeds 55–56 and BBBC030's tuning part
# (smoothing 0.1 / 0.2 / 0.3 d at level 0.3: simulated DIC macrophages F1 0.88 / 0.85 / 0.80, RBCs 0.82 / 0.85 /
# 0.83, BBBC030 tuning 0.940 / 0.952 / 0.962 against 0.962 without; level 0.4 at 0.3 d: BBBC030 0.957).
PATH_SMOOTH = 0.3
PATH_LEVEL = 0.3
PATH_REACH = 0.5


def shear_axis(grey: np.ndarray, diameter_px: float) -> np.ndarray:
    """The unit vector (x, y) of a DIC image's shear axis (its sign is free): a DIC image is the optical path's
    derivative along the shear, so its power at wave vector k is (k·u)² times the path's, and the principal axis
    of the power spectrum — weighted by 1/|k|², over wavelengths from AXIS_BAND_PX to two cell diameters — is u.
    Measured: BBBC030 48–50°, simulated DIC 45–52° (axis 45°/225°)."""
    x = grey.astype(np.float32)
    power = np.abs(np.fft.rfft2(x - wide_blur(x, diameter_px))) ** 2
    ky = np.fft.fftfreq(x.shape[0])[:, None]
    kx = np.fft.rfftfreq(x.shape[1])[None, :]
    k2 = kx * kx + ky * ky
    weight = np.where((k2 > (0.5 / diameter_px) ** 2) & (k2 < AXIS_BAND_PX ** -2), power / np.maximum(k2, 1e-12), 0.0)
    tensor = np.array([[(weight * kx * kx).sum(), (weight * kx * ky).sum()],
                       [(weight * kx * ky).sum(), (weight * ky * ky).sum()]])
    return np.linalg.eigh(tensor)[1][:, 1]


def optical_path(grey: np.ndarray, diameter_px: float, axis: np.ndarray) -> np.ndarray:
    """float32: the DIC image integrated along the shear ``axis`` (up to sign and scale, the cells' optical path:
    a dome per cell where the image shows a relief). Integrated in Fourier space, with wavelengths along the axis
    beyond about two diameters damped — undamped, they are the streaks a line integral drags through the frame."""
    x = grey.astype(np.float32)
    deviation = x - wide_blur(x, 2 * diameter_px)
    ky = 2 * np.pi * np.fft.fftfreq(x.shape[0])[:, None]
    kx = 2 * np.pi * np.fft.rfftfreq(x.shape[1])[None, :]
    along = kx * axis[0] + ky * axis[1]
    damping = (np.pi / diameter_px) ** 2
    spectrum = np.fft.rfft2(deviation) * (-1j * along / (along * along + damping))
    return np.fft.irfft2(spectrum, s=x.shape).astype(np.float32)


def relief_gaps(grey: np.ndarray, mask: np.ndarray, diameter_px: float) -> np.ndarray:
    """Pixels (255) between touching DIC cells: where the optical path (`optical_path`, smoothed over PATH_SMOOTH
    diameters) is below PATH_LEVEL of the highest within PATH_REACH diameters — the saddle between two domes.

    DIC shows a cell as a relief, so where two touch the texture mask (and its distance map) sees one blob; their
    optical paths are two domes. The path's sign is the one that makes the cells (``mask``) higher than the
    background. Used like `bright_halos` (`halo_free`): cores of cells, holes filled, split the mask. Measured on a
    copy shrunk to PATH_DIAMETER_PX per cell, and compared at full size."""
    inside = mask > 0
    if inside.all() or not inside.any():
        return np.zeros(grey.shape, np.uint8)
    height, width = grey.shape
    factor = min(1.0, PATH_DIAMETER_PX / diameter_px)
    small = grey if factor == 1.0 else cv2.resize(grey, (max(8, round(width * factor)), max(8, round(height * factor))),
                                                  interpolation=cv2.INTER_AREA)
    d = diameter_px * small.shape[1] / width
    path = cv2.GaussianBlur(optical_path(small, d, shear_axis(small, d)), (0, 0), PATH_SMOOTH * d)
    full = _full_size(path, width, height)
    if full[inside].mean() < full[~inside].mean():
        path, full = -path, -full
    reach = max(1, int(round(PATH_REACH * d)))
    highest = cv2.dilate(path, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1,) * 2))
    return cv2.compare(full, PATH_LEVEL * _full_size(highest, width, height), cv2.CMP_LE)


def _full_size(a: np.ndarray, width: int, height: int) -> np.ndarray:
    """``a`` at the frame's size (a smooth map: linear interpolation)."""
    return a if a.shape == (height, width) else cv2.resize(a, (width, height), interpolation=cv2.INTER_LINEAR)
