"""Which kind of microscope image a frame is: the contrast mechanism decides what a cell looks like.

The paper photographed unstained live cells on an inverted culture microscope; users also bring stained smears and
fluorescence. Each contrast mechanism needs its own notion of foreground, so the labeller (and the simulator that
renders test scenes) name them alike:

- ``stained``: brightfield of stained cells (smears): cells absorb, and differ from the background in colour;
- ``brightfield``: brightfield of unstained cells: weak absorption, and slightly out of focus, bright and dark
  rings (the transport-of-intensity term of the cells' phase);
- ``phase``: Zernike phase contrast: the cell's optical path turned into dark (or, rounded up, bright) intensity,
  with a bright halo around it and shade-off inside large flat cells;
- ``dic``: differential interference contrast: the derivative of the optical path along the shear direction, a
  relief with one bright and one dark side;
- ``fluorescence``: emission: cells (or nuclei) bright on a dark background.

`detect_modality` tells them apart per image from physics that survive any camera and exposure, in this order:
colour between cells and background (only stains make it), a dark background under a bright tail (emission), a
contrast so faint that the cells barely absorb (unstained brightfield), cells that only darken the field
(absorbing: stained, imaged in grey), a relief whose bright side lies on the same side of every cell (DIC's
shear), a bright halo ringing dark cells (phase contrast), and a field darkened by more than its texture shows
(smooth absorbers: stained, imaged in grey); what is none of these is unstained brightfield (defocus rings). Its thresholds were
set on the real sets' tuning parts (stained Chula and BCCD smears, BBBC030 DIC, the DSB fluorescence crop) and on
the simulated optics for phase contrast and unstained brightfield, for which no licensed real images are here
(`python -m benchmarks.real.label_free` reports how each set is classified).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from runtime.counting.instances import fill_all_holes
from runtime.data.energy import energy_mask, texture_energy, wide_blur
from runtime.data.first_pass import first_pass

MODALITIES: tuple[str, ...] = ("stained", "brightfield", "phase", "dic", "fluorescence")
LABEL_FREE: tuple[str, ...] = ("brightfield", "phase", "dic")

# Stained: the chromaticity (blue and red shares of B+G+R, after a 5×5 px average) spans at least this much between
# the 1st and 99th percentile pixel. Measured: Chula smears from 0.031, BCCD from 0.12, simulated stained frames
# (128–512 px) from 0.035; grey images with colour sensor noise (σ 5) 0.013, the DSB fluorescence crop 0.009.
STAIN_CHROMA = 0.025
# Fluorescence: the median grey lies below this fraction of the bright tail (99.5th percentile). DSB 0.15,
# transmitted light 0.74–0.94 (an empty field is its background: ≈1).
EMISSION_BACKGROUND = 0.4
# DIC: the vectors from each object's dark to its bright side, averaged, are at least this long (1: all point
# the same way). A vector counts in full where the two sides' centroids lie RELIEF_SEPARATION of the object's
# radius apart or more, and in proportion below: a relief's halves lie far apart (a disc's half-discs 0.85 r;
# median 0.47 r on BBBC030's tuning part, 0.73–0.88 r on simulated DIC), a halo ringing a dark body or defocus rings
# only as far as an asymmetry of the frame moves them (0.07–0.10 r on simulated phase contrast), and as unit
# vectors those small offsets pointed one way often enough to pass for a relief (simulated phase-contrast
# macrophages: 54 % of the frames of simulator seeds 55–56 taken for DIC). With it, at 0.3 r: BBBC030's tuning
# part 0.98–1.0, simulated DIC 0.81–1.0, simulated phase contrast at most 0.48 (measured while choosing, seeds
# 55–56; not a committed benchmark: `benchmarks/results/label_free.json` has how each set is classified).
RELIEF_COHERENCE = 0.7
RELIEF_SEPARATION = 0.3
MIN_OBJECTS = 3  # fewer objects say nothing about a shared relief direction or a halo
MIN_OBJECT_AREA = 30  # px at the detection size: smaller textured spots are noise or debris
OBJECT_SCALES = (3.0, 8.0, 16.0)  # px at the detection size: the energy's smoothing, textured to smooth cells
# Both signs: the weaker of the bright and dark parts holds at least this share of the |contrast| — of an object,
# for it to have a relief direction; of the objects and their surroundings, for them to be more than absorbers.
BRIGHT_SHARE = 0.2
# Unstained brightfield: the objects' strong contrast (95th percentile of |deviation from the background|) is below
# FAINT of the background level: cells that barely absorb. Phase contrast: stronger, and ringed by a halo — the
# band HALO_REACH px (at the detection size) around the objects is brighter than the background by at least HALO
# of the objects' mean |contrast|.
FAINT = 0.08
HALO = 0.25
HALO_REACH = 8
# Stained, imaged in grey, among what would be taken for unstained brightfield: the field is darkened (its
# DARK_PERCENTILE-th percentile below its 90th, relative to the background) by at least ABSORBING, while the textured
# objects cover under TEXTURED_COVER of it. A stain's cells are smooth inside; where they are wide (BCCD's RBCs, about
# 100 px) the textured objects are specks and edges, whose evidence reads as unstained brightfield, yet the cells
# darken much of the field. Unstained cells are phase objects: what darkens the field is their texture and edges.
# Set on the tuning parts, in grey: BCCD's training half (its images of low cover: absorption 0.083 and more, cover
# at most 0.058), the Chula development subset, and simulator seeds 55–56 at 0.1–0.4 µm/px and 0.3–3.5× density
# (label-free fields of cover under 0.08, whatever their verdict: absorption at most 0.050; dense phase-contrast
# macrophages darken the field as much as a smear but cover 0.114 and more): each threshold about midway between
# (geometric mean). The 10th percentile, not the 5th: at the 5th, phase-contrast fields reached 0.090 and BCCD's
# started at 0.101. The rule comes after the relief and the halo, so that no DIC or phase-contrast verdict changes.
ABSORBING = 0.065
DARK_PERCENTILE = 10
TEXTURED_COVER = 0.08
# Detection runs on a copy at most this many px on its longer side: the physics above is visible at any size.
DETECT_SIDE = 512
# ... as long as its cells stay as wide as those the sizes above (OBJECT_SCALES, MIN_OBJECT_AREA, HALO_REACH, the
# background's blur) were set on: 15–41 px, the simulator's RBCs and macrophages in its unshrunk 512-px frames
# (BBBC030's cells are about 20 px on its 1376-px images shrunk to 512). A large frame of small cells — the paper's
# camera's 4000×3000 at the magnification of its 512-px crops — shrunk whole leaves them a few px across, where no
# halo or relief shows: of simulated 4000×3000 label-free frames at 0.4 and 0.2 µm/px (3 per kind and optics, seed
# 9; measured while choosing), 12 of 36 were told right so (DIC and phase contrast taken for unstained brightfield,
# phase-contrast RBCs for a stain), 33 of 36 with a window at the upper width (29 at the lower, 15 px). So where
# the first pass (`runtime.data.first_pass`, on the frame's central PROBE_SIDE px) measures cells narrower than
# the first figure on the whole frame's copy, detection looks at the central DETECT_SIDE px of a copy shrunk only
# as far as leaves them at most the second (on a frame of 513–1024 px, cells under 15–30 px: its full size). That
# first pass is asked on every frame larger than DETECT_SIDE: tens of milliseconds, against 1–35 for the rest.
DETECT_CELLS_PX = (15.0, 41.0)
PROBE_SIDE = 1024
# The probe is believed only where the cells it measured cover this share of its window (n · πd²/4): on BBBC030's
# tuning images enlarged 2× (106-px cells, a dozen a frame), three of them measured 3–5 specks of 10–31 px there
# (0.04–0.3 %) and were judged on a window at full size, two as unstained brightfield, one as a stain; simulated
# fields of cells 15–82 px across covered 1.7–7.8 % (measured while choosing: seed 9 at 0.4 and 0.2 µm/px).
PROBE_MIN_COVER = 0.01


def check_modality(name: str, allow_auto: bool = True) -> str:
    """``name`` if it is a modality (or ``auto`` where allowed); the error lists the valid names."""
    valid = (("auto",) if allow_auto else ()) + MODALITIES
    if name not in valid:
        raise ValueError(f"modality must be one of {', '.join(valid)}, got {name!r}")
    return name


@dataclass(frozen=True)
class ModalityEvidence:
    """What `detect_modality` decided and the measurements it rests on (recorded per image in dataset.json)."""

    modality: str
    chroma: float  # chromaticity span, 1st–99th percentile
    background_ratio: float | None  # median grey over the 99.5th percentile (None: decided by colour)
    relief_coherence: float | None  # None: fewer than MIN_OBJECTS objects
    bright_share: float | None  # of the |deviation| in and around the objects, the share that is brighter
    halo: float | None  # the band around the objects: its mean deviation over the objects' mean |deviation|
    # the objects' 95th-percentile |deviation from the background| over the background level (from one object on)
    contrast: float | None
    objects: int
    cover: float | None = None  # the share of the frame the textured objects cover
    absorption: float | None = None  # how much darker its darker part (ABSORBING) is than its brightest tenth

    def as_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    @property
    def tentative(self) -> bool:
        """A stain's verdict without a stain's colour: a grey or colourless image whose objects only darken the
        field, or that showed none to judge by. One image cannot tell more, but a folder can: a sparse crop of a
        DIC field, one or two cells among debris, reads like this (BBBC030's tuning part enlarged ×2 in
        1024-px crops: 32 of 120), and a folder of mostly label-free images overrules it
        (`trainer.autolabel.for_folder`)."""
        return self.modality == "stained" and self.chroma < STAIN_CHROMA


def detect_modality(image: np.ndarray) -> ModalityEvidence:
    """The modality of one uint8 grey or BGR image, with the evidence (see the module docstring)."""
    chroma = _chroma_span(image) if image.ndim == 3 else 0.0
    evidence = dict(chroma=chroma, background_ratio=None, relief_coherence=None, bright_share=None, halo=None,
                    contrast=None, objects=0, cover=None, absorption=None)
    if chroma >= STAIN_CHROMA:  # the common case, decided before any other work
        return ModalityEvidence("stained", **evidence)
    small = _shrunk(image)
    grey = as_grey(small)
    median, bright = np.percentile(grey[::2, ::2], (50, 99.5))
    evidence["background_ratio"] = background_ratio = float(median / max(bright, 1.0))
    if background_ratio < EMISSION_BACKGROUND:
        return ModalityEvidence("fluorescence", **evidence)
    window = _detection_window(image)
    if window is not None and image.ndim == 3:
        # Colour too is judged where the cells keep their width: a large frame of small stained cells shrunk whole
        # blends them into the background (a simulated 4000×3000 smear spanned 0.013 so, 0.055 in its window),
        # and its grey copy was then taken for unstained cells, or a stain only by its darkening.
        evidence["chroma"] = chroma = max(chroma, _chroma_span(window[0]))
        if chroma >= STAIN_CHROMA:
            return ModalityEvidence("stained", **evidence)
    grey = _grey_copy(window, grey)
    found, deviation = _object_evidence(grey)
    evidence.update(found)
    # So faint that the cells barely absorb, whatever the sign (a stain darkens by tens of per cent), and that noise
    # blobs could fake any relief direction or halo. Judged before the objects are counted: one faint cell is as
    # faint as many, and a sparse unstained field (two cells) taken for a stain was thresholded into one
    # frame-wide object. A uniform frame's one object has no contrast at all: nothing to judge by.
    if evidence["contrast"] and evidence["contrast"] < FAINT:
        return ModalityEvidence("brightfield", **evidence)
    if deviation is None:
        return ModalityEvidence("stained", **evidence)  # nothing to judge by: the classical path
    if evidence["bright_share"] < BRIGHT_SHARE:  # cells only darken the field: absorption, imaged in grey
        return ModalityEvidence("stained", **evidence)
    evidence["relief_coherence"] = _relief(grey, deviation)
    if evidence["relief_coherence"] >= RELIEF_COHERENCE:
        modality = "dic"
    elif evidence["halo"] >= HALO:
        modality = "phase"
    elif evidence["absorption"] >= ABSORBING and evidence["cover"] < TEXTURED_COVER:
        modality = "stained"  # the field darkened by what its texture does not show: smooth absorbers
    else:  # bright and dark beside each other, no shared direction, no halo: defocus rings of unstained cells
        modality = "brightfield"
    return ModalityEvidence(modality, **evidence)


def _detection_window(image: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Where a large frame is judged (see DETECT_CELLS_PX), in its own channels: its central window, DETECT_SIDE px
    at the shrink returned (≥ 1), that leaves its cells no wider than DETECT_CELLS_PX's upper end — where the whole
    frame shrunk to DETECT_SIDE px leaves them narrower than its lower end. None (the whole frame's copy) for a
    frame no larger than DETECT_SIDE, or whose first pass sees no cells, or too few to be believed
    (PROBE_MIN_COVER)."""
    factor = max(image.shape[:2]) / DETECT_SIDE
    if factor <= 1:
        return None
    probe = as_grey(_central(image, PROBE_SIDE))
    found = first_pass(probe)
    narrowest, widest = DETECT_CELLS_PX
    if found.diameters is None or found.diameter / factor >= narrowest:
        return None
    if len(found.diameters) * math.pi * found.diameter ** 2 / 4 < PROBE_MIN_COVER * probe.size:
        return None
    shrink = max(1.0, found.diameter / widest)
    return _central(image, round(DETECT_SIDE * shrink)), shrink


def _grey_copy(window: tuple[np.ndarray, float] | None, whole: np.ndarray) -> np.ndarray:
    """The grey copy the objects are judged on: the detection window (`_detection_window`) in grey, shrunk as it
    says, or ``whole``, the frame's copy shrunk to DETECT_SIDE px, where there is none."""
    if window is None:
        return whole
    crop, shrink = window
    grey = as_grey(crop)
    if shrink == 1.0:
        return grey
    size = (max(1, round(grey.shape[1] / shrink)), max(1, round(grey.shape[0] / shrink)))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


def _central(image: np.ndarray, side: int) -> np.ndarray:
    """The central window of ``image``, at most ``side`` px each way."""
    h, w = image.shape[:2]
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return image[top:top + side, left:left + side]


def as_grey(image: np.ndarray) -> np.ndarray:
    """``image`` in grey (itself where it is): the one conversion the detection, the calibration and the labeller
    share."""
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def _shrunk(image: np.ndarray) -> np.ndarray:
    side = max(image.shape[:2])
    if side <= DETECT_SIDE:
        return image
    f = DETECT_SIDE / side
    return cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)


def _chroma_span(image: np.ndarray) -> float:
    """The span (1st–99th percentile) of the pixels' blue and red shares after a 5×5 px average: a colour camera's
    independent per-channel noise alone would span 0.06 at σ 5 grey levels, the average takes it to about 0.01.
    Every 4th pixel of the averaged copy (at most DETECT_SIDE px) will do for two percentiles."""
    small = _shrunk(image)
    step = 4 if min(small.shape[:2]) >= 64 else 1
    sample = cv2.blur(small, (5, 5))[::step, ::step].reshape(-1, 3).astype(np.float32)
    shares = sample[:, ::2] / (sample.sum(1, keepdims=True) + 1.0)
    lo, hi = np.percentile(shares, (1, 99), axis=0)
    return float(np.hypot(*(hi - lo)))


def relief_coherence(deviation: np.ndarray, objects: np.ndarray) -> float:
    """0–1: how consistently, across objects, the dark side of each lies opposite its bright side in one direction.

    Per object, the vector from the centroid of its dark part to that of its bright part, of length 1 where they lie
    RELIEF_SEPARATION of the object's radius apart or more (shorter in proportion below), averaged with the
    objects' total |contrast| as weights (strong reliefs outvote faint debris): 1 when every cell is lit from the
    same side (DIC's shear), ≈0 for halos, rings and texture, whose sides share a centre. An object dark (or bright)
    nearly all over has no direction — only rounding noise, which would point the same way in every identical
    cell."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(objects.view(np.uint8), connectivity=8)
    directions, weights = [], []
    for i in np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= MIN_OBJECT_AREA):
        if i == 0:
            continue
        x0, y0, w, h = stats[i, :4]
        inside = labels[y0:y0 + h, x0:x0 + w] == i
        ys, xs = np.nonzero(inside)
        d = deviation[y0:y0 + h, x0:x0 + w][inside]
        bright, dark = np.clip(d, 0, None), np.clip(-d, 0, None)
        total = float(bright.sum() + dark.sum())
        if total <= 0:
            continue
        weights.append(total)
        if min(bright.sum(), dark.sum()) < BRIGHT_SHARE * total:
            directions.append(np.zeros(2))
            continue
        v = np.array([xs @ bright / bright.sum() - xs @ dark / dark.sum(), ys @ bright / bright.sum() - ys @ dark / dark.sum()])
        length = float(np.hypot(*v))
        full = RELIEF_SEPARATION * math.sqrt(len(xs) / math.pi)
        directions.append(v / max(length, 1e-9) * min(1.0, length / full))
    if len(directions) < MIN_OBJECTS:
        return 0.0
    return float(np.hypot(*np.average(directions, axis=0, weights=weights)))


def _objects(x: np.ndarray, smooth: float) -> np.ndarray:
    """bool mask of the textured regions at one smoothing scale, closed and filled (a smooth cell's energy is its
    rim)."""
    mask = energy_mask(texture_energy(x, 1.5, smooth))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    return fill_all_holes(mask) > 0


def _object_evidence(grey: np.ndarray) -> tuple[dict, np.ndarray | None]:
    """Bright share, halo and contrast of the textured objects of a transmitted-light image, and its deviation from
    the background (None with too few objects) for `_relief`."""
    x = grey.astype(np.float32)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(_objects(x, OBJECT_SCALES[0]).view(np.uint8),
                                                           connectivity=8)
    kept = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= MIN_OBJECT_AREA)
    kept = kept[kept > 0]
    if not len(kept):
        return {"objects": 0}, None
    objects = np.isin(labels, kept)
    # The background from the pixels away from any object (a normalised blur): a plain blur would take in the
    # cells' own darkness and their halos, and a halo would vanish into it.
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * HALO_REACH + 1,) * 2)
    near = cv2.dilate(objects.view(np.uint8), disc)
    weight = (cv2.dilate(near, disc) == 0).astype(np.float32)
    sigma = min(x.shape) / 16
    background = wide_blur(x * weight, sigma) / np.maximum(wide_blur(weight, sigma), 1e-3)
    if weight.mean() < 0.1:  # objects everywhere: the frame's median is the best guess of the background
        background = np.full_like(x, float(np.median(x[::4, ::4])))
    deviation = cv2.GaussianBlur(x - background, (0, 0), 1.0)
    contrast = float(np.percentile(np.abs(deviation[::2, ::2][objects[::2, ::2]]), 95)
                     / max(float(np.median(background[::4, ::4])), 1.0))
    darkest, brightest = np.percentile((deviation / np.maximum(background, 1.0))[::2, ::2], (DARK_PERCENTILE, 90))
    measured = {"objects": len(kept), "contrast": contrast, "cover": float(objects.mean()),
                "absorption": float(brightest - darkest)}
    if len(kept) < MIN_OBJECTS:
        return measured, None
    strength = float(np.abs(deviation[objects]).mean())
    around = near > 0
    ring = around & ~objects
    return {**measured,
            "bright_share": float(np.clip(deviation[around], 0, None).sum() / max(np.abs(deviation[around]).sum(), 1e-6)),
            "halo": float(deviation[ring].mean() / max(strength, 1e-6)) if ring.any() else 0.0}, deviation


def _relief(grey: np.ndarray, deviation: np.ndarray) -> float:
    """The relief coherence over the objects at every scale of OBJECT_SCALES, the largest: a textured cell is one
    object at the finest scale, a smooth relief's two halves join only at a coarser. The costly test (three masks,
    a loop over objects), so it is made last, only on images with both signs of contrast."""
    x = grey.astype(np.float32)
    return max(relief_coherence(deviation, _objects(x, smooth)) for smooth in OBJECT_SCALES)
