"""The frames' pixel size when nobody gave it, calibrated from the first frames (`csc-run --pixel-size auto`).

Most users do not know their camera's µm per pixel (it changes with every objective, camera adapter and binning),
and a model shown cells at another size than it learnt over-counts them 2.5–4.6× (issue #22). The cells themselves
are the ruler: a classical mask of each frame (texture energy on label-free frames, Otsu on the flattened grey image
otherwise) gives every cell centre's inscribed diameter (`runtime.counting.scale.peak_diameters`); the zoom that brings their
median to the size the model's cells had in training is a first guess. Which class is the ruler (RBCs, 5–7 µm,
or macrophages, 13–20 µm) the model says: the first frame (its centre, one model input's worth, or more frames where
that shows too few cells: `_model_view`) is segmented at the RBC ruler's zoom, and the class with
the most cells there (cells, not area: a few macrophages outweigh many RBCs) is the ruler; the ruler's cells as the
model draws them at that zoom then correct it once (the classical mask is wider or narrower than the cells).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from runtime.classes import cell_size
from runtime.counting.instances import fill_all_holes
from runtime.data.energy import wide_gaussian
from runtime.data.first_pass import copies_measured, pooled
from runtime.data.modality import LABEL_FREE, ModalityEvidence, as_grey, detect_modality
from runtime.backends.model_meta import ModelMetadata
from runtime.errors import CscError
from runtime.counting.scale import peak_diameters

MIN_CELLS = 5  # fewer cell centres over the calibration frames say nothing reliable about the scale
MIN_CELL_PX = 5.0  # a median cell narrower than this (px) is noise or too small to measure
MAX_ENLARGE = 4.0  # a calibration that would enlarge frames more than this is refused (tiles grow with its square)
FRAMES = 3  # frames calibrated on: a few, so that one odd field of view does not decide
# A given --pixel-size that differs from the frames' own by more than this factor is warned about.
DISAGREE = 1.5
# Within this fraction of the model's own pixel size the frames are taken at it: resampling by less than the
# calibration's own uncertainty (its spread is ±8 % on the simulated demo frames, calibrated at 0.417 µm/px for
# their true 0.4) only blurs them, and frames made for the model stay exactly as they are.
SNAP = 0.1
# The model's correction of the classical guess is at most this factor either way (the two agree within 20 % on
# the simulated and real sets; a barely trained model's output once moved it 90×).
MAX_CORRECTION = 1.5

Segment = Callable[[np.ndarray, float], np.ndarray]  # (frame, zoom) → class map at the model's scale


@dataclass(frozen=True)
class Calibration:
    """The calibrated pixel size of a run's frames, or why there is none."""

    pixel_size_um: float | None
    spread: float | None  # the per-cell estimates' interquartile range over their median
    cells: int  # cell centres it rests on
    frames: int
    ruler: str | None  # the class whose trained size was the ruler
    note: str  # how it was made, or why it failed
    voted: bool = False  # the ruler was the model's vote, not given (`calibrate`'s ``ruler``)
    label_free: bool = False  # most frames were label-free (`runtime.data.modality`): the vote may be wrong there

    @property
    def found(self) -> bool:
        return self.pixel_size_um is not None

    def describe(self) -> str:
        if not self.found:
            return f"no calibration: {self.note}"
        return (f"{self.pixel_size_um:.3g} µm/px calibrated (spread ±{50 * self.spread:.0f} %, {self.cells} cells in "
                f"{self.frames} frame{'s' * (self.frames != 1)}, {self.ruler} as the ruler"
                f"{', by the model' if self.voted else ''})")

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def cell_diameters(image: np.ndarray) -> np.ndarray | None:
    """Per cell centre of a frame, its inscribed diameter (px), classically (`frames_diameters` of the frame
    alone); None with too few cells."""
    diameters, frames = frames_diameters([image])
    return diameters if frames else None


def frames_diameters(frames: Sequence[np.ndarray]) -> tuple[np.ndarray, int]:
    """The inscribed diameters (px) of the cell centres over ``frames`` and how many frames gave any (`_measured`)."""
    return _measured(frames)[:2]


def _measured(frames: Sequence[np.ndarray],
              optics: Sequence[ModalityEvidence] | None = None) -> tuple[np.ndarray, int, bool]:
    """The inscribed diameters (px) of the cell centres over ``frames``, how many frames gave any, and whether most
    frames are label-free (the vote's warning, `vote_warning`, rests on it), classically:
    label-free frames by their texture energy, on the copy where it sees cells (`runtime.data.first_pass`), all
    of them measured as one (`pooled`: a run's frames are one microscope at one magnification, and a sparse field
    of a few large cells among dust alone measures its specks — simulated DIC and unstained-brightfield fields of
    one to eight 60-px RBCs, seeds 55–56: 6 of 18 three-frame starts measured 5–8 px frame by frame, none pooled;
    ad hoc; their specks kept: dropped by area, as a folder to label drops them, the simulated macrophage starts of
    `label_free_scale.json` moved both ways, 0.4 µm/px nearer the true scale and 0.2 µm/px further, and BBBC030's
    not at all, ad hoc); others each on a mask by Otsu on the grey image flattened by a wide blur
    (`_stained_diameters`)."""
    stained, copies = [], []
    found = list(optics) if optics is not None else [detect_modality(image) for image in frames]
    label_free_run = 2 * sum(evidence.modality in LABEL_FREE for evidence in found) > len(found)
    for image, evidence in zip(frames, found):
        # a frame taken for a stain without a stain's colour, among mostly label-free ones, is one of them (a
        # sparse DIC field reads like that alone: `ModalityEvidence.tentative`), as in a folder to label
        if evidence.modality in LABEL_FREE or (label_free_run and evidence.tentative):
            copies.append(copies_measured(as_grey(image)))
        else:
            stained.append(_stained_diameters(image))
    stained = [found for found in stained if found is not None]
    label_free = pooled(copies)
    parts = stained + ([] if label_free.diameters is None else [label_free.diameters])
    # frames that gave cells: stained ones with any, label-free ones with any on the copy the pool chose
    gave = len(stained) + sum(any(measure.factor == label_free.factor for measure in seen) for seen in copies)
    return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), gave, label_free_run


def _stained_diameters(image: np.ndarray) -> np.ndarray | None:
    """A frame's cell diameters on a mask by Otsu on the grey image flattened by a wide blur (cells dark or bright,
    whichever side of the median the histogram's tail lies); None with too few cells."""
    grey = cv2.GaussianBlur(as_grey(image), (0, 0), 1.0).astype(np.float32)
    flat = cv2.convertScaleAbs(grey - wide_gaussian(grey, min(grey.shape) / 8) + 128)
    dark = np.median(flat) > flat.mean()
    mode = (cv2.THRESH_BINARY_INV if dark else cv2.THRESH_BINARY) | cv2.THRESH_OTSU
    return peak_diameters(fill_all_holes(cv2.threshold(flat, 0, 255, mode)[1]))


def class_map_scale(class_map: np.ndarray, class_names: Sequence[str],
                    scratch: np.ndarray | None = None) -> tuple[float, str] | None:
    """(pixel size, ruler class) a class map's own cells imply, or None with too few cells: the class with the most
    measurable cells is the ruler, as in `calibrate`, and its median inscribed diameter its typical size. What the
    counter reads off a frame when nothing gave its scale (`csc-data count` on auto-labels made without one);
    ``scratch``, a uint8 buffer of the map's shape, saves an allocation per class."""
    best: tuple[str, np.ndarray] | None = None
    for class_id, name in enumerate(class_names[1:], start=1):
        diameters = peak_diameters(cv2.compare(class_map, class_id, cv2.CMP_EQ, dst=scratch))
        if diameters is not None and (best is None or len(diameters) > len(best[1])):
            best = (name, diameters)
    if best is None:
        return None
    return cell_size(best[0]).pixel_size_um(float(np.median(best[1]))), best[0]


def trained_diameters(metadata: ModelMetadata) -> dict[str, float]:
    """Per cell class, the diameter (px at the model's scale) its cells had in training: recorded in the metadata
    where the exporter knew it, else the class's typical size at the model's pixel size."""
    return {name: metadata.cell_diameter_px.get(name) or cell_size(name).diameter_px(metadata.pixel_size_um)
            for name in metadata.classes[1:]}


def calibrate(frames: Sequence[np.ndarray], metadata: ModelMetadata, segment: Segment | None = None,
              ruler: str | None = None, optics: Sequence[ModalityEvidence] | None = None) -> Calibration:
    """The pixel size of ``frames`` (uint8 BGR or grey) for a model with this metadata; ``segment`` lets the model
    choose the ruler (without it, RBCs where the model has them) and correct the classical guess; ``ruler``, the
    class the frames show most of as the user knows it (`csc-run --calibrate-on`), is the ruler without a vote;
    ``optics``, each frame's optics where the caller has detected them (`Frame.detected_optics`), not detected again.

    The vote cannot tell a label-free field of one kind of cell: at the RBC ruler's zoom a field of macrophages
    alone is shrunk to RBC size and the label-free model calls most of them RBCs, at the macrophage ruler's zoom a
    field of RBCs alone is called macrophages (simulated macrophage fields at 0.4 µm/px: 6 of 6 starts voted RBC,
    0.43–0.60 of the pixel size; BBBC030's CHO cells: 3 of 4 runs; benchmarks/results/label_free_scale.json). So the
    calibration says whether the ruler was voted (``voted``) and the frames were label-free (``label_free``), and a
    run warns where both hold (`vote_warning`); a stained smear's colour tells the model's classes apart."""
    check_ruler(ruler, metadata.classes)
    diameters, measured, label_free = _measured(frames, optics)
    if len(diameters) < MIN_CELLS:
        return Calibration(None, None, len(diameters), len(frames), None,
                           f"{len(diameters)} cell-like objects in {len(frames)} frames (blank, empty or "
                           f"out-of-focus frames?)")
    median = float(np.median(diameters))
    if median < MIN_CELL_PX:
        return Calibration(None, None, len(diameters), measured, None,
                           f"the cell-like objects are {median:.1f} px across: too small to measure")
    q1, q3 = np.percentile(diameters, (25, 75))
    targets = trained_diameters(metadata)
    given = ruler is not None
    ruler = ruler or ("rbc" if "rbc" in targets else next(iter(targets)))
    zoom, note = targets[ruler] / median, f"median cell {median:.1f} px in the frames"
    voted = False  # a vote is taken where the ruler was not given, the model has two classes or more, and saw cells
    if segment is not None:
        class_maps, cells = _model_view(frames, zoom, metadata, segment)
        voted = not given and len(targets) > 1 and max(cells) > 0
        if voted and metadata.classes[1 + int(np.argmax(cells))] != ruler:
            ruler = metadata.classes[1 + int(np.argmax(cells))]
            zoom = targets[ruler] / median
            class_maps = _model_view(frames, zoom, metadata, segment)[0]  # else the maps made at its zoom serve
        # The classical mask is wider or narrower than the cells by its blur and threshold; the model's own class map
        # near the right scale is not: one correction by what it measures there.
        seen = [found for class_map in class_maps
                if (found := peak_diameters(cv2.compare(class_map, metadata.classes.index(ruler), cv2.CMP_EQ)))
                is not None]
        if seen:  # bounded: a model lost on these frames must not move the classical guess far
            seen_px = float(np.median(np.concatenate(seen)))
            zoom *= float(np.clip(targets[ruler] / seen_px, 1 / MAX_CORRECTION, MAX_CORRECTION))
            note += f", {ruler}s of {seen_px:.1f} px in the model's output"
    zoom = 1.0 if abs(zoom - 1.0) <= SNAP else zoom
    if zoom > MAX_ENLARGE:
        return Calibration(None, None, len(diameters), measured, ruler,
                           f"{note}: the frames would need enlarging ×{zoom:.1f} (at most ×{MAX_ENLARGE:g})")
    return Calibration(zoom * metadata.pixel_size_um, float((q3 - q1) / median), len(diameters), measured,
                       ruler, f"{note}, brought to the model's {targets[ruler]:.1f} px", voted=voted,
                       label_free=label_free)


def check_ruler(ruler: str | None, classes: Sequence[str] | None) -> None:
    """A ruler named by the user (`csc-run --calibrate-on`, `RunOptions.calibrate_on`) must be a cell class of the
    model (``classes``, background first, from its metadata; None: it has none), checked before a frame is read;
    None (the model votes) always passes."""
    if ruler is None:
        return
    if classes is None:
        raise CscError(f"a ruler ({ruler!r}) was named, but the model has no metadata to calibrate with",
                       fix="give the frames' pixel size (--pixel-size) instead")
    if ruler not in classes[1:]:
        raise CscError(f"{ruler!r} is not a cell class of the model, so it cannot be the calibration's ruler",
                       fix=f"--calibrate-on one of {', '.join(classes[1:])}, or auto")


def _model_view(frames: Sequence[np.ndarray], zoom: float, metadata: ModelMetadata,
                segment: Segment) -> tuple[list[np.ndarray], list[int]]:
    """The class maps the model makes at ``zoom`` to say which class is the ruler, and the cells per class in them:
    of the first frame's centre — as much of it as one model input holds at that zoom, one inference — or, where
    that holds fewer than MIN_CELLS cells, of the whole first frame, and then of the next frames whole, one by one,
    until they hold MIN_CELLS between them. The whole of a frame a little larger than the input took four tiles (at
    the demo's first guess, ×1.04, 65 ms of a 512×512 run's start), of a 4000×3000 one 48, for a median that a
    model input's cells already give; a sparse field, a few large cells a frame, needs more than one frame
    (simulated label-free fields of one to eight cells, development seeds 55 and 56: the first frame's few cells
    voted RBC on macrophage folders, and the scale came out 2–3× off; ad hoc)."""
    height, width = frames[0].shape[:2]
    crop_h, crop_w = (min(side, int(model / zoom)) for side, model in zip((height, width), metadata.input_size))
    y, x = (height - crop_h) // 2, (width - crop_w) // 2
    first = [frames[0]] if (crop_h, crop_w) == (height, width) else [frames[0][y:y + crop_h, x:x + crop_w], frames[0]]
    class_maps: list[np.ndarray] = []
    cells = [0] * (len(metadata.classes) - 1)
    for k, view in enumerate([*first, *frames[1:]]):
        class_map = segment(view, zoom)
        seen = [cv2.connectedComponents(cv2.compare(class_map, c, cv2.CMP_EQ))[0] - 1
                for c in range(1, len(metadata.classes))]
        if k < len(first):  # the first frame's whole replaces its centre
            class_maps, cells = [class_map], seen
        else:
            class_maps.append(class_map)
            cells = [a + b for a, b in zip(cells, seen)]
        if sum(cells) >= MIN_CELLS:
            break
    return class_maps, cells


def disagreement(given_um: float, calibration: Calibration) -> str | None:
    """The warning when a given pixel size differs from what the frames show by more than DISAGREE×."""
    if not calibration.found:
        return None
    ratio = given_um / calibration.pixel_size_um
    if 1 / DISAGREE <= ratio <= DISAGREE:
        return None
    return (f"--pixel-size {given_um:g} µm/px differs {max(ratio, 1 / ratio):.1f}× from what the frames show "
            f"({calibration.describe()}): check the objective and camera adapter, or drop --pixel-size to use the "
            "calibration")


def vote_warning(calibration: Calibration, metadata: ModelMetadata) -> str | None:
    """The warning when the model voted the ruler (`calibrate`) on label-free frames: there its vote cannot tell a
    field of one kind of cell (size is what tells its classes apart, whatever optics it was trained on), so a field
    of macrophages alone may be read as RBCs at 2–3× the pixel size (the other way round for RBCs alone); None
    where the ruler was named, or the frames are stained (their colour tells the classes apart)."""
    if not (calibration.found and calibration.voted and calibration.label_free):
        return None
    others = [name for name in metadata.classes[1:] if name != calibration.ruler]  # some: a vote had two classes
    return (f"the scale rests on the model's vote that the frames show mostly {calibration.ruler}s: on label-free "
            f"frames it cannot tell a field of one kind of cell (one kind shrunk or enlarged to the other's size "
            f"looks like it); if they show mostly {' or '.join(f'{name}s' for name in others)}, pass "
            f"{' or '.join(f'--calibrate-on {name}' for name in others)}, or give --pixel-size")


@dataclass
class ScaleWatch:
    """Notices when the cells' size changes during a run (an objective switched, a zoom turned), from the cells the
    counter measures anyway: per frame, the median diameter of the ruler class's cells clear of the frame edge, at
    the model's scale. The first BASELINE frames with enough cells set the baseline and its spread; PATIENCE frames
    in a row beyond both (and beyond CHANGE) confirm a change. A frame with too few cells keeps the last scale."""

    ruler_id: int
    baseline: float | None = None
    spread: float = 0.0
    collected: list[float] | None = None
    strikes: list[float] | None = None

    BASELINE = 5
    PATIENCE = 3
    CHANGE = 0.25  # a change smaller than this fraction of the size is no change of objective or zoom

    def observe(self, cells: np.ndarray) -> float | None:
        """Take one frame's cell table (CELL_DTYPE, model scale); the size ratio (now ÷ baseline) once a change is
        confirmed, after which a new baseline is collected."""
        mine = cells[(cells["class_id"] == self.ruler_id) & ~cells["touches_border"]]
        if len(mine) < MIN_CELLS:
            return None
        size = float(np.median(mine["eq_diameter_px"]))
        if self.baseline is None:
            self.collected = (self.collected or []) + [size]
            if len(self.collected) == self.BASELINE:
                self.baseline = float(np.median(self.collected))
                self.spread = float(np.median(np.abs(np.asarray(self.collected) - self.baseline))) / self.baseline
            return None
        ratio = size / self.baseline
        if abs(np.log(ratio)) <= np.log1p(max(self.CHANGE, 3 * self.spread)):
            self.strikes = None
            return None
        self.strikes = (self.strikes or []) + [ratio]
        if len(self.strikes) < self.PATIENCE:
            return None
        confirmed = float(np.median(self.strikes))
        self.baseline, self.collected, self.strikes = None, None, None
        return confirmed
