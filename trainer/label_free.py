"""The cell mask of a label-free image (unstained brightfield, phase contrast, DIC) for the auto-labeller.

An intensity threshold fails on these images for physical reasons: a DIC cell is a relief, one bright and one dark
half, so it becomes two objects or a rim; a phase-contrast cell is a dark body in a bright halo with pseudopods
fainter than either; an unstained cell in brightfield barely absorbs and shows mostly as defocus rings. What they
share is local contrast of either sign where the background is flat (`runtime.data.energy.texture_energy`), so the
mask is that energy thresholded on a log scale, first at a fixed small scale to measure the cells (on a smaller
copy where they are too wide for it: `runtime.data.first_pass`), then at a scale set by their diameter.
The rest of the labeller (rim closing, hole filling, splitting, rejection) follows as for stained images.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

import cv2
import numpy as np

from runtime.counting.instances import fill_all_holes
from runtime.data.first_pass import shrunk
from runtime.data.energy import ENERGY_FIRST_PASS, energy_mask, spread_removed, texture_energy, wide_blur
from trainer.holes import fill_holes

# The energy's scales (σ of the high-pass and of its average) are the first pass's (`ENERGY_FIRST_PASS`, 1.5 and
# 3 px) up to cells of a reference size and grow in proportion beyond it. For cells with processes (macrophages)
# the reference is BBBC030's cells, on whose tuning half (cho01–cho30, 53-px cells) σ 1.5/3 px gave instance F1
# 0.944, 2/4 px 0.931, 3/6 px 0.869 (before `energy_cells` eroded the mask by its σ, which took the first to 0.961
# and its mIoU from 0.84 to 0.92 on every third tuning image, and on simulated label-free RBCs F1 from 0.05–0.12 to
# 0.74–0.84). Smooth cells (RBCs) show contrast only at scales near their own size: the first pass's scales were
# set on them at 14–18 px (the simulator's 0.4 µm/px), and at 30–60 px the same scales saw only the edges of a
# DIC relief or an unstained cell's ring (`first_pass`), so theirs grow from 20 px.
BBBC030_DIAMETER = 53.0
SMOOTH_CELLS_UP_TO = 20.0


def label_free_mask(grey: np.ndarray, diameter_px: float, processes: bool = True, factor: int = 1) -> np.ndarray:
    """The cell mask (255) of a label-free grey image whose cells are ``diameter_px`` across. The scales follow
    the diameter (see BBBC030_DIAMETER) but never drop below the first pass's: finer, the camera's noise is the
    texture; nor below them times ``factor``, the copy's reduction on which the first pass saw the cells
    (`runtime.data.first_pass`: at full size, cells too wide and smooth for its scales).

    Cells without thin ``processes`` (RBCs: smooth discs) lose the high-pass's rim too (`spread_removed`), which
    otherwise widens a 20-px RBC's outline by a pixel or two all round (its IoU with the true cell about 0.7). The
    rim stays on cells with processes (macrophages): their pseudopods are that thin, and belong to the cell.
    Chosen on simulator seeds 55–56 and BBBC030's tuning part: label-free RBCs' mIoU 0.83–0.85 → 0.84–0.91, F1 up
    by 0.03–0.05 in phase contrast and unstained brightfield, down by 0.01–0.02 in DIC (kept there too: DIC RBCs'
    mIoU and count, the issue's targets, improve, and one rule for every optics of a kind); on macrophages
    (BBBC030's CHO cells too) the shrink lifted mIoU on BBBC030 but cost simulated macrophages up to 0.06 of F1
    (measured while choosing; not a committed benchmark: `benchmarks/results/label_free.json` has seed 21).

    Holes smaller than a cell (`trainer.holes.fill_holes`) are filled before that erosion, not only after it (in
    `trainer.autolabel`). An unstained cell in brightfield shows contrast only along its outline, its inside as
    flat as the background: the energy's average closes that outline into a thick ring, and the erosion would
    thin it again, opening it where it is faintest, into an arc that no later filling closes and the thin-object
    rejection drops. Simulated unstained RBCs 30 and 60 px across (seeds 61–62, measured while choosing) went from
    F1 0.80 and 0.56 (counts 0.76 and 0.44) to 0.90 and 0.89 (0.91 and 0.85); phase-contrast and DIC RBCs, and
    BBBC030's tuning part, were unchanged; simulated macrophages gained up to 0.02 of F1 there (on the benchmark's
    seeds 21 and 41, read after the choice, the macrophage rows moved by under 0.015 of F1 either way)."""
    fine, smooth = ENERGY_FIRST_PASS
    grow = diameter_px / (BBBC030_DIAMETER if processes else SMOOTH_CELLS_UP_TO)
    fine, smooth = max(fine * factor, fine * grow), max(smooth * factor, smooth * grow)
    rings = energy_mask(texture_energy(grey, fine, smooth))
    return spread_removed(fill_holes(rings, max_area=np.pi * diameter_px ** 2 / 4), fine, smooth,
                          shrink_fine=not processes)


# DIC: the band of wavelengths the shear axis is read from (px): from the noise's scale up to two cell diameters.
AXIS_BAND_PX = 6.0
# The shear axis is read on a copy shrunk to no fewer px per cell than this.
AXIS_CELL_PX = 15.0
# DIC, smooth cells: the mask is closed along the shear axis over this many cell diameters.
SHEAR_CLOSING = 0.5


def shear_axis(grey: np.ndarray, diameter_px: float) -> np.ndarray:
    """The unit vector (x, y) of a DIC image's shear axis (its sign is free): a DIC image is the optical path's
    derivative along the shear, so its power at wave vector k is (k·u)² times the path's, and the principal axis
    of the power spectrum — weighted by 1/|k|², over wavelengths from AXIS_BAND_PX to two cell diameters — is u.
    Read on a copy with cells AXIS_CELL_PX or more across: a 4096² frame's full-size transform took 1.5 s."""
    factor = 1 << max(0, int(np.log2(diameter_px / AXIS_CELL_PX)))
    x, diameter_px = shrunk(grey, factor).astype(np.float32), diameter_px / factor
    power = np.abs(np.fft.rfft2(x - wide_blur(x, diameter_px))) ** 2
    ky = np.fft.fftfreq(x.shape[0])[:, None]
    kx = np.fft.rfftfreq(x.shape[1])[None, :]
    k2 = kx * kx + ky * ky
    weight = np.where((k2 > (0.5 / diameter_px) ** 2) & (k2 < AXIS_BAND_PX ** -2), power / np.maximum(k2, 1e-12), 0.0)
    tensor = np.array([[(weight * kx * kx).sum(), (weight * kx * ky).sum()],
                       [(weight * kx * ky).sum(), (weight * ky * ky).sum()]])
    return np.linalg.eigh(tensor)[1][:, 1]


def closed_along_shear(mask: np.ndarray, grey: np.ndarray, diameter_px: float) -> np.ndarray:
    """A DIC mask of smooth cells closed along the shear axis over SHEAR_CLOSING diameters, and joined by the
    cells of the optical path integrated along that axis (`path_cells`).

    DIC shows an outline in proportion to how steeply the optical path changes along the shear: where the outline
    itself runs along the shear axis, a smooth cell (an RBC) has almost no relief, so its mask is two crescents
    joined by a waist, or not at all, and the splitter cuts it in two. Those faint stretches run along the axis,
    and a closing along it bridges them without the closing's reach across it. Textured cells (macrophages,
    BBBC030's CHO cells) show contrast inside, and the closing only joined touching ones (simulated DIC
    macrophages), so it is for cells without processes. Chosen on simulator seeds 55, 56 and 91."""
    u = shear_axis(grey, diameter_px)
    side = max(3, int(round(SHEAR_CLOSING * diameter_px)) | 1)
    half = side // 2
    line = np.zeros((side, side), np.uint8)
    cv2.line(line, (round(half - u[0] * half), round(half - u[1] * half)),
             (round(half + u[0] * half), round(half + u[1] * half)), 1)
    line |= line[::-1, ::-1]  # symmetric about its centre, as a closing's element must be (OpenCV does not mirror it)
    closed = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, line)
    return cv2.bitwise_or(closed, path_cells(optical_path(grey, diameter_px, u), closed, diameter_px))


# DIC: the integration keeps wavelengths up to about this many cell diameters (longer ones are the illumination's,
# and the streaks an integration leaves along the shear).
PATH_MEMORY = 2.0
# DIC, smooth cells: the integrated optical path is a cell where it rises this many of the background's noise
# (robust sigma) above the background's median. Chosen on simulator seeds 61–62 at 0.1–0.4 µm/px (DIC RBCs): of
# 2, 3, 4, 6, 8 and 11, 6 gave the union with the closed mask its best foreground IoU at 0.1 µm/px (0.83–0.84)
# and was within 0.003 of the best (8) at 0.2 and 0.4; at 4 and less more background came in (0.75–0.81 at 0.1).
PATH_SIGMAS = 6.0
# ... and a cell of the path covers at least this fraction of a disc of the diameter: an absorbing speck (debris),
# integrated, leaves a short streak that is not a cell. Of 0 (none), 0.25 and 0.5, chosen as PATH_SIGMAS was:
# 0 overcounted 0.4-µm/px DIC RBCs by 8–9 %, 0.5 lost cells at 0.1 µm/px.
PATH_MIN_AREA = 0.25
# Pixels of the background its level and noise are read on, at most (about): a robust median needs far fewer.
PATH_SAMPLE = 1 << 20


def optical_path(grey: np.ndarray, diameter_px: float, axis: np.ndarray) -> np.ndarray:
    """The optical path of a DIC image up to its sign: the image is the path's derivative along the shear
    ``axis`` (`shear_axis`), so its Fourier transform is divided by 2πi k·u — regularised (Wiener) where k·u is
    below one cycle per PATH_MEMORY diameters, where it would amplify the illumination and the noise. So what
    comes back is the path band-passed along the shear: a smooth cell, whose relief shows only two crescents,
    comes back as a ring-like plateau whose centre sits lower than its rim (a flat disc's at about half), with
    shallow troughs beside it along the shear; `path_cells` fills the centre."""
    x = grey.astype(np.float32)
    x -= wide_blur(x, diameter_px)
    # OpenCV's transform (the full complex spectrum, numpy's layout): on a 4000×3000 frame here several times
    # faster than numpy's real one. The inverse to a real image reads only half of it.
    spectrum = cv2.dft(x, flags=cv2.DFT_COMPLEX_OUTPUT)
    along = np.add.outer(np.float32(2 * np.pi * axis[1]) * np.fft.fftfreq(x.shape[0]).astype(np.float32),
                         np.float32(2 * np.pi * axis[0]) * np.fft.fftfreq(x.shape[1]).astype(np.float32))  # 2π k·u
    damping = np.square(along)
    damping += np.float32((2 * np.pi / (PATH_MEMORY * diameter_px)) ** 2)
    gain = np.divide(along, damping, out=along)
    del damping
    z = spectrum.view(np.complex64)[..., 0]  # in place: a 4000×3000 spectrum is 96 MB
    z *= gain
    z *= np.complex64(-1j)
    return cv2.idft(spectrum, flags=cv2.DFT_REAL_OUTPUT | cv2.DFT_SCALE)


def path_cells(path: np.ndarray, mask: np.ndarray, diameter_px: float) -> np.ndarray:
    """The cells (255) of an optical path (`optical_path`): its sign is the one that makes ``mask``'s cells rise
    above the background; smoothed by a twentieth of a diameter, kept where it rises PATH_SIGMAS of the background
    noise (outside ``mask``) above the background, opened by 5 px (streaks), its holes (a ring's centre) filled,
    and its parts under PATH_MIN_AREA of a cell, or not touching ``mask``, dropped. The background's statistics
    are read on every k-th pixel of every k-th row, k chosen to leave about PATH_SAMPLE of them (all of them up to
    that size): the medians of a 4000×3000 frame's background took a second."""
    outside = cv2.compare(mask, 0, cv2.CMP_EQ)
    if not _both_sides(mask):
        return np.zeros(mask.shape, np.uint8)
    path = cv2.GaussianBlur(_rising(path, mask, outside), (0, 0), max(1.0, diameter_px / 20))
    step = max(1, int(np.sqrt(mask.size / PATH_SAMPLE)))
    background = path[::step, ::step][outside[::step, ::step] > 0]
    level, noise = robust_level(background)
    cells = cv2.compare(path, level + PATH_SIGMAS * max(noise, 1e-6), cv2.CMP_GT)
    opened = cv2.morphologyEx(cells, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    cells = fill_all_holes(opened)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(cells, connectivity=8)
    area = stats[:, cv2.CC_STAT_AREA]
    # A part the relief does not touch at all is not a cell: on BBBC030's tuning part (real DIC) the path also raised
    # faint out-of-focus blobs that show no relief (foreground IoU of the union 0.733 against the mask's 0.854, 0.828
    # without them; asking for 1–20 % of a part in the mask gave the same there, and from 5 % lost simulated RBCs
    # whose relief the mask holds by a sliver).
    unseen = np.bincount(labels[mask > 0], minlength=n) == 0
    cells[((area < PATH_MIN_AREA * np.pi * diameter_px ** 2 / 4) | unseen)[labels]] = 0  # row 0 (background): 0 anyway
    return cells


def _both_sides(mask: np.ndarray) -> bool:
    """Whether ``mask`` has at least 16 px of cells and of background: what a path's sign and levels are read on."""
    cells_px = cv2.countNonZero(mask)
    return cells_px >= 16 and mask.size - cells_px >= 16


def _rising(path: np.ndarray, mask: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """The optical path (`optical_path`, known up to its sign) with the sign that makes ``mask``'s cells rise above
    the background (``outside``)."""
    return -path if cv2.mean(path, mask)[0] < cv2.mean(path, outside)[0] else path


# DIC, cells with processes (macrophages): touching cells are split from the mask's pixels whose optical path
# (smoothed by a tenth of a diameter) lies above its lowest this-many per cent inside the mask. Chosen on BBBC030's
# tuning part, simulator seeds 20 and 22 (512-px DIC macrophages) and seed 20 at 0.2 µm/px, of none, 5, 10 and 20;
# instance F1 there 0.962 / 0.855 / 0.804 / 0.893 without, 0.970 / 0.856 / 0.874 / 0.952 at 5, 0.965 / 0.891 /
# 0.894 / 0.945 at 10, 0.951 / 0.934 / 0.911 / 0.976 at 20: past 10 BBBC030's CHO cells (real) were cut, below it
# the simulated pairs stayed joined. Seed 20 in a full 4000×3000 frame: 0.750 → 0.852 at 10. Measured while
# choosing; not a committed benchmark. Phase-contrast macrophages (`phase_path`) use the same share, not tuned
# again: on seeds 20, 22 and 23 (512 px) F1 0.985 / 0.916 / 0.915 → 0.993 / 0.959 / 0.945, count 0.985 / 0.919 /
# 0.908 → 1.000 / 0.986 / 0.936; seed 20 at 0.2 µm/px 0.992 → 1.000, in a full frame 0.844 → 0.946 (0.869 → 0.976);
# a first version that gave unstained brightfield the cores too gave these phase rows F1 within 0.02 of 10 % at 5
# and at 20 %. Unstained brightfield (`phase_path` too, its cells' darkness against the background) lost F1 on
# seed 23 (0.723 → 0.664, its defocus rings split) and was first left without cores; tried on more seeds (20, 22,
# 23, 55, 56 at 512 px; 20, 22, 55 at 0.2 µm/px) its count came closer to the truth on all eight (0.70–0.91 →
# 0.78–0.95) and F1 rose on five (mean 0.731 → 0.768 at 512 px, 0.882 → 0.900 at 0.2 µm/px), so it has them: and
# phase-contrast fields of faint cells, often taken for unstained brightfield, then split as phase contrast does.
PATH_CORE_PERCENT = 10.0


def path_cores(path: np.ndarray, mask: np.ndarray, diameter_px: float) -> np.ndarray:
    """Where touching cells of ``mask`` are split from (`find_instances`' seeds): the mask without its pixels of
    lowest optical ``path`` (`optical_path` in DIC, `phase_path` in phase contrast and unstained brightfield;
    either sign), PATH_CORE_PERCENT
    of them, holes filled.

    A cell's optical path is highest in its body and falls at its edge, and band-passed, as both paths here are,
    it falls between two touching cells into a trough below their rims, while the texture mask runs across (its
    energy is strongest at the edges); a mere waist between overlapping cells is not cut. A rounded macrophage's
    pseudopods keep a clump's waist wide, so the mask's distance map saw one cell in many pairs; without the
    low-path pixels, a rim all round and the dips between cells, it sees them. Only the split uses this (every
    mask pixel still belongs to a cell), and a blob whose seeds hold fewer than two cells is split as without
    them. The level is one for the whole mask: a faint cell touching a much denser one can lose its core, and
    that pair then stays whole."""
    if not _both_sides(mask):
        return mask
    path = cv2.GaussianBlur(_rising(path, mask, cv2.compare(mask, 0, cv2.CMP_EQ)), (0, 0), max(1.0, diameter_px / 10))
    level = float(np.percentile(path[mask > 0], PATH_CORE_PERCENT))
    return fill_all_holes(cv2.bitwise_and(mask, cv2.compare(path, level, cv2.CMP_GT)))


def dic_path(grey: np.ndarray, diameter_px: float) -> np.ndarray:
    """A DIC image's optical path up to its sign (`optical_path`), along the shear axis the image shows."""
    return optical_path(grey, diameter_px, shear_axis(grey, diameter_px))


def phase_path(grey: np.ndarray, diameter_px: float) -> np.ndarray:
    """A phase-contrast image's optical path up to scale: the Zernike ring shows a cell darker where it is thicker
    (the path minus its low-pass), so the darkness against the background blurred over two diameters."""
    x = grey.astype(np.float32)
    return wide_blur(x, 2 * diameter_px) - x


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
    level, noise = robust_level(background)
    return cv2.compare(grey, level + HALO_SIGMAS * max(noise, 1.0), cv2.CMP_GT)


def robust_level(values: np.ndarray) -> tuple[float, float]:
    """The median of background ``values`` and their noise, 1.4826 × the median absolute deviation (a normal
    distribution's σ): cells among the values move neither by much, as they would a mean and a standard deviation."""
    level = float(np.median(values))
    return level, 1.4826 * float(np.median(np.abs(values.astype(np.float32) - level)))


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


def split_seeds(grey: np.ndarray, mask: np.ndarray, modality: str, diameter_px: float,
                processes: bool) -> Callable[[np.ndarray], np.ndarray] | None:
    """Where the touching cells of a label-free image's final mask are split from, by its optics (None: from the
    mask itself): in phase contrast and unstained brightfield (`HALOS`) the mask without its halo lines
    (`halo_free`; ``mask``, the texture mask, sets the halos' background); for cells with ``processes``
    (macrophages), also without their lowest optical path (`path_cores`): DIC's relief integrated (`dic_path`),
    the darkness of the halo optics (`phase_path`). In unstained brightfield that darkness follows the path only
    roughly (its cells show as defocus rings), yet it split touching cells better than the halo lines alone on the
    simulator's seeds tried (see PATH_CORE_PERCENT), and a phase-contrast field taken for brightfield keeps its
    cores."""
    halos = bright_halos(grey, mask) if modality in HALOS else None
    path_of: Callable[[np.ndarray, float], np.ndarray] | None = None
    if processes and modality == "dic":
        path_of = dic_path
    elif processes and modality in HALOS:
        path_of = phase_path
    if path_of is None:
        return None if halos is None else partial(halo_free, halos=halos)

    def seeds(final: np.ndarray) -> np.ndarray:
        """The cores of ``final`` (the path computed here, when the split needs it), cut at the halos too."""
        cores = path_cores(path_of(grey, diameter_px), final, diameter_px)
        return cores if halos is None else halo_free(cores, halos)

    return seeds
