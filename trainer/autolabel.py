"""Auto-labels for single-kind images by classical image processing (paper §2.1), torch-free.

The paper's steps, each switchable: Gaussian filter (3×3, σ 0.8) → adaptive Gaussian threshold → Suzuki outer
contours with small areas removed, filled → erosion then dilation (3×3, for macrophages). Its defaults assume
one known magnification and clean brightfield frames; on real stained smears (colour, pale centres, uneven light,
debris, white cells, unknown pixel size) they over-count 1.2–2.3×. So the defaults here add, in order:

- **scale**: the typical cell diameter is estimated per image (runtime/counting/scale.py) unless ``pixel_size_um`` or
  ``diameter_px`` is given, and every size-dependent parameter follows from it;
- **channel**: on colour images, the colour direction that best separates cells from background (Fisher's
  discriminant of a first Otsu split) instead of plain grey: stained cells differ from the background in hue
  more than in brightness, and a grey fibre or scale bar does not;
- **threshold** ``auto``: one global Otsu threshold, on the image flattened by its background (a morphological
  opening wider than the cells, ImageJ's rolling ball) when the illumination varies by more than a quarter of the
  cell contrast — the paper's adaptive threshold stays selectable;
- **per-object level** on bright (fluorescence) images: each object's outline at a fraction of its own peak, so a
  dim nucleus beside a bright one keeps its size;
- **fill** ``holes``: open rims closed, then holes smaller than a cell filled (pale centres), also those of cells
  the frame edge cuts, whereas the paper's filled outer contours also fill the background that a ring of touching
  cells encloses;
- **split**: touching cells split by distance-transform dynamics (runtime/counting/instances.py), shared with counting;
  for RBCs, which overlap in thick smears, at lower dynamics with the counter's one-cell rule, and blobs of two
  or more cells' area divided by area; parts cut by the frame edge kept down to a quarter of the minimum area;
- **reject**: objects that are not cells of the kind — specks, thin fibres, rims left open, and for RBC labels
  white cells (a nucleus stained blue-purple) — are dropped from the label and reported, never counted.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Literal

import cv2
import numpy as np

from runtime.classes import CELL_SIZES, DEFAULT_PIXEL_SIZE_UM, MACROPHAGE, RBC, class_id
from runtime.counting.instances import LABELLER_SPLIT, SplitSettings, fill_all_holes, find_instances
from runtime.counting.blank import is_blank
from runtime.data.first_pass import FirstPass, chosen_copy, copies_measured, first_pass, pooled
from runtime.data.modality import LABEL_FREE, as_grey, check_modality, detect_modality
from runtime.counting.scale import estimate_diameter
from trainer.holes import fill_holes
from trainer.label_free import closed_along_shear, label_free_mask, split_seeds

Polarity = Literal["dark", "bright", "auto"]
NOT_CHECKED = "not checked"  # the modality of an image labelled with a threshold chosen by hand, or of a blank one
BLANK = "blank"  # the threshold of a blank frame: none was needed
# The smallest image labelled: smaller ones are refused with a reason (a 3×3 PNG crashed OpenCV 5.1's cv2.mean in
# the threshold's sampled statistics). The tests label every size from MIN_SIDE up to 40 px in each direction.
MIN_SIDE = 16
# The widest typical cell a given scale may make, px: a macrophage (16.5 µm) at 0.0165 µm/px, four times finer than
# a 100× oil objective on a 6.5 µm camera pixel (0.065 µm/px), itself finer than light resolves (~0.2 µm). Beyond
# it a scale is a typo (a diameter of 1e9 px failed every image), and the filters' kernels grow with it (5000 px:
# 15 s a Chula image, against 1 s at 1000).
MAX_DIAMETER_PX = 1000.0
THRESHOLDS = ("auto", "otsu", "adaptive")
FILLS = ("holes", "contours", "none")
CHANNELS = ("auto", "grey")

# Rejection, relative to the typical cell. Thinner than THIN × its radius (no pixel that far inside): fibres, open
# rims, a scale bar.
THIN = 0.3
# Stained less than UNSTAINED × the median object (colour images): the object's chromaticity moves from the
# background's less than that fraction of the way the typical object's does — grey dust and debris, fibres,
# a scale bar, lysed ghosts. Skipped where objects and background hardly differ in colour (MIN_STAIN, in
# chromaticity units of 1/3 = grey), e.g. grey or fluorescence images.
UNSTAINED = 0.35
MIN_STAIN = 0.01
# For RBC labels, nucleated cells: NUCLEATED of their pixels stained towards blue-purple (blue minus red at least
# NUCLEUS_STAIN grey levels above the image's median), as white-cell nuclei and platelets are in Giemsa, Wright and
# May-Grünwald stains while red cells and background are pink to grey (measured on the BCCD smears: blue minus
# red -10…+8 for 90 % of pixels, 50–90 on nuclei).
NUCLEATED = 0.05
NUCLEUS_STAIN = 30
# The background varies "too much" for one global threshold when its spread exceeds this fraction of the
# cell/background contrast.
UNEVEN = 0.25
# Bright (fluorescence) images, per object (`_per_object_level`): cells are where the contrast exceeds the
# background by PEAK_FRACTION of the object's peak, searched up to PEAK_REACH diameters from the first mask.
# Chosen on the DSB nuclei crop, the one fluorescence image with hand-drawn outlines here: mIoU 0.859–0.879 for
# reaches of 0.1–0.3 at 0.3, 0.845–0.879 (114–121 nuclei) for fractions of 0.25–0.35 (labeller_settings.json).
PEAK_FRACTION = 0.3
PEAK_REACH = 0.2
# Rims are closed with a disc of RIM × the diameter, LABEL_FREE_RIM on label-free images: there a cell's texture
# energy is strong at its edge and weak where its middle is smooth (phase contrast's shade-off, a smooth relief),
# so its mask is a ring open in more places. Chosen on simulated label-free macrophages (seed 20) with BBBC030's
# tuning half watched: phase contrast count 0.86 → 0.90, F1 0.79 → 0.85 from 0.15 to 0.3; BBBC030 F1 0.946 → 0.961.
RIM = 0.15
LABEL_FREE_RIM = 0.3
# A folder of label-free images (`csc-label auto DIR`) is one microscope at one magnification: where the first pass
# pooled over its images (`for_folder`) measures cells at least this many times wider than an image's own first
# pass (or, where the image's own measured none, than the kind's default size it would fall back to), the image is
# labelled at the folder's. A field of one or two large cells among dust measures its specks on its own (the
# cells are too few to measure on the copy that shows them). Only wider: an image's own wider measure, or its
# default, may be right where the pooled one measured specks — simulated fields of 164-px macrophages, one a field
# or none (`benchmarks/results/label_free.json`, sparse, seed 21), were labelled at the folder's specks wherever a
# field measured nothing in a first version that took the folder's there whatever its width (count 3–4× → 13–17×;
# the rule for such fields was then set on seeds 55 and 56). Simulated fields of one to eight label-free RBCs 60 px
# across (0.1 µm/px, 1024 px, seeds 55 and 56) went from F1 0.08–0.63 to 0.85–0.99, count 1.75–9.76× to 0.87–0.98
# (`label_free_sparse_seed55.json`, `…56.json`); at
# the simulator's densities no image took the folder's (seeds 55–56, 512 px and 0.2 µm/px, every optics; BBBC030's
# tuning part at three sizes; measured while choosing). Twice: a speck measures about half a cell or less at any
# magnification where the pass confuses them (`SCALE_JUMP`).
FOLDER_WIDER = 2.0


@dataclass(frozen=True)
class AutoLabelConfig:
    """Step switches and parameters. ``pixel_size_um`` and ``diameter_px`` both None: the scale is estimated per
    image; block size and offset (not in the paper) derive from the cell size as tuned on simulated sets."""

    kind: str = "rbc"
    modality: str = "auto"  # auto: decided per image (runtime/data/modality.py)
    channel: str = "auto"
    gaussian: bool = True
    gaussian_ksize: int = 3
    gaussian_sigma: float = 0.8
    threshold: str = "auto"
    block_size: int | None = None
    offset: float | None = None
    polarity: Polarity = "auto"
    fill: str = "holes"
    close_rims: bool = True
    min_area_px: int | None = None  # None: from the kind's cell size at the image's scale
    min_area_um2: float | None = None
    pixel_size_um: float | None = None
    diameter_px: float | None = None
    morphology: bool | None = None  # None: on for macrophages, as in the paper
    morph_iterations: int = 1
    split_touching: bool = False
    reject: bool = True
    per_object_level: bool = True  # bright images: each object's own level (see _per_object_level)
    # Splitting (see _instances): the labeller's preset, `runtime.counting.instances.LABELLER_SPLIT` (which says
    # why), with these two of it for RBC-like kinds:
    split_dynamics: float = LABELLER_SPLIT.dynamics
    overlap: float = LABELLER_SPLIT.divide_large  # 0: no division by area
    peak_fraction: float = PEAK_FRACTION
    peak_reach: float = PEAK_REACH
    # The folder's label-free cells (diameter px, copy factor; `for_folder`), set by `trainer.labelling` for
    # images whose own first pass measures them narrower than FOLDER_WIDER allows, or not at all; None: each image
    # alone.
    folder_cells: tuple[float, int] | None = None
    # The label-free optics most of the folder's images showed (`for_folder`), for those detected as stained without
    # a stain's colour (`ModalityEvidence.tentative`); None: each image's own.
    folder_modality: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("rbc", "macrophage"):
            raise ValueError(f"--kind must be rbc or macrophage (single-kind images), got {self.kind!r}")
        try:
            check_modality(self.modality)
        except ValueError as err:
            raise ValueError(f"--{err}") from None
        for name, value, allowed in (("--threshold", self.threshold, THRESHOLDS), ("--fill", self.fill, FILLS),
                                     ("--channel", self.channel, CHANNELS), ("--polarity", self.polarity,
                                                                            ("dark", "bright", "auto"))):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.block_size is not None and (self.block_size < 3 or self.block_size % 2 == 0):
            raise ValueError(f"--block-size must be odd and at least 3, got {self.block_size}")
        if self.gaussian_ksize < 1 or self.gaussian_ksize % 2 == 0:
            raise ValueError(f"--gaussian-ksize must be odd and positive, got {self.gaussian_ksize}")
        for name, value in (("--gaussian-sigma", self.gaussian_sigma), ("--offset", self.offset),
                            ("--min-area-um2", self.min_area_um2), ("--pixel-size", self.pixel_size_um),
                            ("--diameter", self.diameter_px)):
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        if self.gaussian_sigma <= 0:
            raise ValueError(f"--gaussian-sigma must be positive, got {self.gaussian_sigma}")
        if self.min_area_px is not None and self.min_area_px < 0:
            raise ValueError(f"--min-area must not be negative, got {self.min_area_px}")
        if self.min_area_um2 is not None and self.min_area_um2 < 0:
            raise ValueError(f"--min-area-um2 must not be negative, got {self.min_area_um2}")
        if self.pixel_size_um is not None and self.pixel_size_um <= 0:
            raise ValueError(f"--pixel-size must be positive, got {self.pixel_size_um}")
        if self.diameter_px is not None and not 2 <= self.diameter_px <= MAX_DIAMETER_PX:
            raise ValueError(f"--diameter must be 2 to {MAX_DIAMETER_PX:g} px, got {self.diameter_px:g}")
        if self.pixel_size_um is not None:
            size = CELL_SIZES[self.class_id]
            if not 2 <= size.diameter_px(self.pixel_size_um) <= MAX_DIAMETER_PX:
                raise ValueError(f"--pixel-size {self.pixel_size_um:g} µm/px makes a typical {self.kind} "
                                 f"{size.diameter_px(self.pixel_size_um):.3g} px across: give "
                                 f"{size.pixel_size_um(MAX_DIAMETER_PX):.3g} to {size.pixel_size_um(2):.3g} µm/px "
                                 f"(2 to {MAX_DIAMETER_PX:g} px)")
        if self.pixel_size_um is not None and self.diameter_px is not None:
            raise ValueError("give --pixel-size or --diameter, not both (each sets the scale)")
        if self.min_area_um2 is not None and self.pixel_size_um is None:
            raise ValueError("--min-area-um2 needs --pixel-size (or give --min-area in px)")
        for name, value in (("split_dynamics", self.split_dynamics), ("overlap", self.overlap),
                            ("peak_fraction", self.peak_fraction), ("peak_reach", self.peak_reach)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number ≥ 0, got {value}")
        if self.morph_iterations < 0:
            raise ValueError(f"--morph-iterations must not be negative, got {self.morph_iterations}")
        self._check_read()

    def _check_read(self) -> None:
        """An error where an option is given that no step of this config reads: each was accepted and silently
        ignored (a --block-size with the default Otsu threshold, --min-area-um2 beside --min-area)."""
        if self.min_area_px is not None and self.min_area_um2 is not None:
            raise ValueError("give --min-area or --min-area-um2, not both (each sets the smallest object kept)")
        default = {f.name: f.default for f in fields(self)}
        adaptive = "by the adaptive threshold (--threshold adaptive, --paper)", self.threshold == "adaptive"
        blurred = "with --gaussian", self.gaussian
        opened = "with --morphology (on by default for macrophages only)", self.use_morphology
        on_intensity = ("by an intensity threshold, which --modality brightfield, phase and dic use only with "
                        "--threshold otsu or adaptive", self.modality not in LABEL_FREE or self.threshold != "auto")
        for option, name, (where, read) in (
                ("--block-size", "block_size", adaptive), ("--offset", "offset", adaptive),
                ("--gaussian-ksize", "gaussian_ksize", blurred), ("--gaussian-sigma", "gaussian_sigma", blurred),
                ("--morph-iterations", "morph_iterations", opened), ("--polarity", "polarity", on_intensity)):
            if not read and getattr(self, name) != default[name]:
                raise ValueError(f"{option} is read only {where}: drop it, or add what it needs")

    @property
    def class_id(self) -> int:
        return class_id(self.kind)

    @property
    def use_morphology(self) -> bool:
        return self.class_id == MACROPHAGE if self.morphology is None else self.morphology

    @property
    def measures_folder(self) -> bool:
        """Whether a folder's label-free cells are measured together (`for_folder`) under this config: the
        scale estimated, the texture threshold, optics that may be label-free."""
        return self.threshold == "auto" and not self.given_scale and self.modality in ("auto", *LABEL_FREE)

    @property
    def votes_optics(self) -> bool:
        """Whether a folder's images vote on their optics (`for_folder`): detected per image, the texture
        threshold."""
        return self.threshold == "auto" and self.modality == "auto"

    @property
    def given_scale(self) -> bool:
        return self.pixel_size_um is not None or self.diameter_px is not None

    def at_scale(self, diameter_px: float) -> Scaled:
        """The size-dependent parameters for cells of this typical diameter in px."""
        return Scaled(self, diameter_px)

    def scaled(self) -> Scaled | None:
        """The parameters at the given scale; None when the scale is to be estimated per image."""
        if self.diameter_px is not None:
            return self.at_scale(self.diameter_px)
        if self.pixel_size_um is not None:
            return self.at_scale(CELL_SIZES[self.class_id].diameter_px(self.pixel_size_um))
        return None


@dataclass(frozen=True)
class Scaled:
    """Size-dependent parameters of one image: everything follows from the typical diameter in px."""

    config: AutoLabelConfig
    diameter_px: float

    @property
    def size(self):
        return CELL_SIZES[self.config.class_id]

    @property
    def pixel_size_um(self) -> float:
        """The pixel size this diameter implies for a typical cell of the kind (exact when it was given)."""
        return self.config.pixel_size_um or self.size.pixel_size_um(self.diameter_px)

    @property
    def min_area(self) -> int:
        """Smallest kept object in px: explicit px, else µm² over the pixel size, else from the cell size."""
        return self.size.min_area(self.pixel_size_um, self.config.min_area_px, self.config.min_area_um2)

    @property
    def block(self) -> int:
        """Adaptive-threshold window in px (odd): ≈1.2 (RBC) / 1.4 (macrophage) of the largest cell's diameter."""
        if self.config.block_size is not None:
            return self.config.block_size
        widths = {RBC: 1.2, MACROPHAGE: 1.4}
        return max(3, int(round(self.size.max_um / self.pixel_size_um * widths[self.config.class_id])) | 1)

    @property
    def threshold_offset(self) -> float:
        """How far below (dark) or above (bright) the local mean a pixel must lie to be a cell (adaptive)."""
        if self.config.offset is not None:
            return self.config.offset
        return {RBC: 6.0, MACROPHAGE: 4.0}[self.config.class_id]

    @property
    def expected_radius_px(self) -> float:
        """Radius of the smallest cell of the kind: the splitter's and the rejection's yardstick."""
        return self.size.min_radius_px(self.pixel_size_um)

    @property
    def split_settings(self) -> SplitSettings:
        """The labeller's splitting preset with this config's dynamics and overlap, for the kind's size range."""
        cfg = self.config
        settings = replace(LABELLER_SPLIT, dynamics=cfg.split_dynamics, divide_large=cfg.overlap or None)
        return settings.for_size(self.size)

    @property
    def typical_area(self) -> float:
        return math.pi * (self.diameter_px / 2.0) ** 2


@dataclass
class AutoLabel:
    mask: np.ndarray  # uint8 class map with the kind's class id
    instances: np.ndarray | None  # uint16 labels when touching cells are split
    polarity: str  # the polarity used (what `auto` decided); "either" on label-free images
    diameter_px: float  # the typical cell diameter used (given, or estimated from the image)
    scale: str  # "given" | "estimated" | "folder" | "default": where the diameter came from (see FOLDER_WIDER)
    threshold: str  # the threshold used: "otsu", "flattened otsu" or "adaptive"
    rejected: dict[str, int] = field(default_factory=dict)  # objects left out of the label, by reason
    modality: str = "stained"  # given, or what `detect_modality` decided (NOT_CHECKED with a hand-chosen threshold)


def detect_polarity(grey: np.ndarray) -> str:
    """``dark`` when cells are darker than the background (brightfield), ``bright`` otherwise (fluorescence).

    Of the two classes of an Otsu split, the background is the one whose largest connected region spans the
    frame, while cells are blobs (the older rule alone, that the background is the bulk of the histogram, fails
    on dense smears where cells cover more than half of the frame). When both or neither span, that rule
    decides: the median sits near the background level and cells make the longer tail on their side of it.
    Both look at the image with its slow illumination changes removed (minus a blur a fifth of the frame wide):
    a vignetted corner would otherwise be one more dark "blob".
    """
    small = np.ascontiguousarray(grey[::4, ::4]) if min(grey.shape) >= 256 else np.ascontiguousarray(grey[::2, ::2])
    sigma = min(small.shape) / 10
    shrink = max(1, int(sigma // 4))
    smooth = cv2.GaussianBlur(cv2.resize(small, None, fx=1 / shrink, fy=1 / shrink, interpolation=cv2.INTER_AREA),
                              (0, 0), sigma / shrink)
    smooth = cv2.resize(smooth, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_LINEAR)
    small = cv2.add(cv2.subtract(small, smooth, dtype=cv2.CV_16S), 128, dtype=cv2.CV_8U)
    bright = cv2.threshold(small, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)[1]
    spans = [_spans(part) for part in (bright, cv2.bitwise_not(bright))]
    if spans[0] != spans[1]:
        return "dark" if spans[0] else "bright"
    cdf = np.cumsum(cv2.calcHist([small], [0], None, [256], [0, 256]).ravel())
    lo, med, hi = np.searchsorted(cdf, cdf[-1] * np.array([0.005, 0.5, 0.995]))
    return "dark" if med - lo >= hi - med else "bright"


def _spans(part: np.ndarray, reach: float = 0.9) -> bool:
    """Whether the largest connected region of a binary image reaches across ``reach`` of its width and height."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(part, 4, cv2.CV_32S)
    if n < 2:
        return False
    x, y, w, h, _ = stats[1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))]
    return w >= reach * part.shape[1] and h >= reach * part.shape[0]


_KERNEL3 = np.ones((3, 3), np.uint8)


@dataclass
class _Foreground:
    """The first half of labelling: the thresholded mask and what was decided on the way."""

    binary: np.ndarray  # 255 on cells
    cells: np.ndarray | None  # the cells-bright image thresholded (None on label-free images)
    polarity: str
    threshold: str
    scaled: Scaled
    scale: str  # "given" | "estimated" | "folder" | "default"
    # From the final mask (after rim closing, hole filling and rejection), where its touching cells are split from
    # (`find_instances`' seeds); None: from the mask itself.
    seeds: Callable[[np.ndarray], np.ndarray] | None = None


def _modality(image: np.ndarray, config: AutoLabelConfig, entry: FolderEntry | None = None) -> str:
    """The given modality, else the detected one, or the folder's where the image's own is tentative
    (`ModalityEvidence.tentative`). The paper's adaptive threshold (and any threshold chosen by hand) is an intensity
    method: it asks for the intensity path whatever the optics, so detection (1–35 ms, and a first pass on frames
    over 512 px) is skipped there and the modality not checked. ``entry``: the image's `folder_entry`, whose
    detection is not made again."""
    if config.modality != "auto":
        return config.modality
    if config.threshold != "auto":
        return NOT_CHECKED
    if entry is None or entry.modality is None:
        found = detect_modality(image)
        entry = FolderEntry(found.modality, found.tentative, None)
    return config.folder_modality if config.folder_modality and entry.tentative else entry.modality


@dataclass(frozen=True)
class FolderEntry:
    """One image's part in its folder's measure (`folder_entry`, `for_folder`)."""

    modality: str | None  # detected, or given; None: a blank image, or one left out of the folder's measure
    tentative: bool  # a stain's verdict without a stain's colour (`ModalityEvidence.tentative`)
    copies: list[FirstPass] | None  # first-pass measures where it is label-free at an estimated scale


def folder_entry(image: np.ndarray, config: AutoLabelConfig) -> FolderEntry:
    """One image's optics and first-pass measures (`copies_measured`) for its folder's (`for_folder`); its copies
    are None where the image is not labelled as a label-free image at an estimated scale (a scale given, a stained
    or blank image, a threshold chosen by hand)."""
    if not (config.measures_folder or config.votes_optics) or is_blank(image):
        return FolderEntry(None, False, None)
    found = detect_modality(image) if config.votes_optics else None
    modality = config.modality if found is None else found.modality
    copies = (copies_measured(_grey(image, config, colour=False), blurred=config.gaussian)
              if config.measures_folder and modality in LABEL_FREE else None)
    return FolderEntry(modality, found is not None and found.tentative, copies)


def for_folder(config: AutoLabelConfig, entries: Iterable[FolderEntry]) -> AutoLabelConfig:
    """``config`` for the images of one folder (one microscope, one magnification), given each one's
    `folder_entry`:
    - with their label-free cells measured as one (`runtime.data.first_pass.pooled`; diameter in px and the copy
      that saw them) as its ``folder_cells``, which an image takes where FOLDER_WIDER says;
    - where more than half of its checked images are label-free, with the most common of their optics as its
      ``folder_modality``, which an image takes where its own verdict is tentative (a stain without colour: a
      sparse DIC crop of BBBC030, labelled as stained, counted dozens of specks).
    As it is where neither applies."""
    entries = list(entries)
    found = pooled((entry.copies for entry in entries if entry.copies), drop_specks=True)
    if found.diameter is not None:
        config = replace(config, folder_cells=(round(found.diameter, 2), found.factor))
    checked = [entry.modality for entry in entries if entry.modality is not None]
    label_free = Counter(modality for modality in checked if modality in LABEL_FREE)
    if config.votes_optics and 2 * sum(label_free.values()) > len(checked):
        config = replace(config, folder_modality=label_free.most_common(1)[0][0])
    return config


def auto_label(image: np.ndarray, config: AutoLabelConfig, entry: FolderEntry | None = None) -> AutoLabel:
    """The auto-label of one single-kind image (uint8 BGR or grey, at least MIN_SIDE px a side). A blank frame
    (`runtime.counting.blank`: lens cap, lamp off, a uniform field) has no cells: its label is empty, threshold "blank".
    ``entry``: the image's `folder_entry`, where its folder's measure made it: its optics and first-pass measures
    are not made again."""
    if image.ndim not in (2, 3) or min(image.shape[:2]) < MIN_SIDE:
        raise ValueError(f"an image to label must be at least {MIN_SIDE}×{MIN_SIDE} px (grey or BGR), "
                         f"got shape {image.shape}")
    if is_blank(image):
        empty, fixed = np.zeros(image.shape[:2], np.uint8), config.scaled()
        return AutoLabel(empty, empty.astype(np.uint16) if config.split_touching else None, "either",
                         round(fixed.diameter_px if fixed else _fallback(config), 1),
                         "given" if fixed else "default", BLANK, {}, NOT_CHECKED)
    modality = _modality(image, config, entry)
    label_free = modality in LABEL_FREE and config.threshold == "auto"
    fg = (_label_free_foreground(image, config, modality, entry.copies if entry else None) if label_free
          else _intensity_foreground(image, config, modality))
    binary, cells, polarity, used, scaled, origin = fg.binary, fg.cells, fg.polarity, fg.threshold, fg.scaled, fg.scale
    min_area = scaled.min_area
    if cells is not None and polarity == "bright" and used != "adaptive" and config.per_object_level:
        binary = _per_object_level(cells, binary, config.peak_fraction, config.peak_reach * scaled.diameter_px)
    if config.fill == "contours":
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        keep = [c for c in contours if cv2.contourArea(c) >= min_area]
        binary = np.zeros_like(binary)
        cv2.drawContours(binary, keep, -1, 255, thickness=cv2.FILLED)
    else:
        if config.close_rims:
            side = max(3, int(round((LABEL_FREE_RIM if label_free else RIM) * scaled.diameter_px)) | 1)
            binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side)))
        if config.fill == "holes":
            binary = fill_holes(binary, max_area=scaled.typical_area)
    if config.use_morphology and config.morph_iterations:
        binary = cv2.erode(binary, _KERNEL3, anchor=(-1, -1), iterations=config.morph_iterations)
        binary = cv2.dilate(binary, _KERNEL3, anchor=(-1, -1), iterations=config.morph_iterations)
    rejected = {}
    if config.reject:
        binary, rejected["thin"] = _remove_thin(binary, THIN * scaled.diameter_px / 2.0,
                                                keep_outline=config.class_id == MACROPHAGE)
    found = _instances(binary, scaled, min_area, None if fg.seeds is None else fg.seeds(binary),
                       scaled.typical_area if label_free and origin != "default" else None)
    # Specks and debris (a split never leaves a part this small: parts merge instead); a part cut by the frame edge
    # is kept down to a quarter of the minimum, as the counter keeps it.
    bad = ~found.large_enough(min_area, binary.shape, scaled.split_settings.cut_fraction)
    rejected["small"] = int(bad.sum())
    if config.reject:
        if image.ndim == 3 and not label_free and len(found.ids):
            # Colour tests look at every second pixel (every fourth for cells over 12 px): they average over cells.
            step = 4 if scaled.diameter_px >= 12 else 2
            sample = np.ascontiguousarray(image[::step, ::step])
            labels = np.ascontiguousarray(found.labels[::step, ::step])
            if config.class_id == RBC:
                nucleated = ~bad & _nucleated(found, sample, labels)
                rejected["nucleated"] = int(nucleated.sum())
                bad |= nucleated
            unstained = ~bad & _unstained(found, sample, labels, binary[::step, ::step])
            rejected["unstained"] = int(unstained.sum())
            bad |= unstained
    instances = found.keep(np.flatnonzero(~bad)).dense_labels() if config.split_touching else None
    cells = (binary if instances is None else instances) > 0
    for (x, y, w, h), i in zip(found.stats[bad, :4], found.ids[bad]) if instances is None else ():
        cells[y:y + h, x:x + w][found.labels[y:y + h, x:x + w] == i] = False  # a few boxes: cheaper than relabelling
    mask = cells.view(np.uint8) * np.uint8(config.class_id)
    return AutoLabel(mask, instances, polarity, round(scaled.diameter_px, 1), origin, used,
                     {k: v for k, v in rejected.items() if v}, modality)


def _grey(image: np.ndarray, config: AutoLabelConfig, colour: bool) -> np.ndarray:
    """The grey image, with the paper's Gaussian filter (step 1) unless colour takes over the threshold."""
    grey = as_grey(image)
    if config.gaussian and not colour:  # with colour, grey only decides polarity and seeds the colour split
        grey = cv2.GaussianBlur(grey, (config.gaussian_ksize,) * 2, config.gaussian_sigma)
    return grey


def _scale(config: AutoLabelConfig, estimate: Callable[[], float | None]) -> tuple[Scaled, str]:
    """The given scale, else the diameter ``estimate()`` reads off the image, else the kind's default."""
    scaled = config.scaled()
    if scaled is not None:
        return scaled, "given"
    diameter = estimate()
    return (config.at_scale(diameter), "estimated") if diameter else (config.at_scale(_fallback(config)), "default")


def _intensity_foreground(image: np.ndarray, config: AutoLabelConfig, modality: str) -> _Foreground:
    """Cells by their intensity or colour: stained brightfield and fluorescence (and any image asked to be
    labelled by the paper's adaptive threshold)."""
    colour = config.channel == "auto" and image.ndim == 3
    grey = _grey(image, config, colour)
    polarity = config.polarity
    if polarity == "auto" and config.modality != "auto":  # told the optics: absorbing or emitting cells
        polarity = {"stained": "dark", "fluorescence": "bright"}.get(modality, "auto")
    polarity = detect_polarity(grey) if polarity == "auto" else polarity
    if colour:
        cells = cell_contrast(image, grey, polarity)
        if config.gaussian:
            cells = cv2.GaussianBlur(cells, (config.gaussian_ksize,) * 2, config.gaussian_sigma)
    else:
        cells = cv2.bitwise_not(grey) if polarity == "dark" else grey
    flat = None
    if config.threshold == "auto":
        binary, used, flat = _auto_threshold(cells)
    scaled, origin = _scale(config, lambda: estimate_diameter(fill_all_holes(
        binary if flat is not None else _otsu(_level(cells, smooth_background(cells))))))
    if flat is None:
        binary, used = _threshold(cells, scaled)
    else:
        cells = flat  # contrasts below are measured on what was thresholded
    return _Foreground(binary, cells, polarity, used, scaled, origin)


def _label_free_foreground(image: np.ndarray, config: AutoLabelConfig, modality: str,
                           copies: list[FirstPass] | None = None) -> _Foreground:
    """Cells by their local contrast of either sign (trainer/label_free.py): unstained brightfield, phase
    contrast and DIC; DIC masks of smooth cells are closed along the shear, where their relief fades, and joined
    by their optical path integrated along it (`trainer.label_free.closed_along_shear`); touching cells are split
    from the mask without the halo lines between them and, for cells with processes, without its lowest optical
    path, as the optics allow (`trainer.label_free.split_seeds`)."""
    grey = _grey(image, config, colour=False)
    # The copy the first pass saw the cells on sets the mask's finest scales, also where the scale was given.
    first = first_pass(grey, blurred=config.gaussian) if copies is None else chosen_copy(copies)
    folder = config.folder_cells
    from_folder = folder is not None and folder[0] >= FOLDER_WIDER * (first.diameter or _fallback(config))
    if from_folder:
        first = FirstPass(np.array([folder[0]], np.float32), folder[1])
    scaled, origin = _scale(config, lambda: first.diameter)
    if from_folder and origin == "estimated":
        origin = "folder"
    smooth = config.class_id != MACROPHAGE  # cells without processes
    binary = label_free_mask(grey, scaled.diameter_px, processes=not smooth, factor=first.factor)
    if modality == "dic" and smooth:
        binary = closed_along_shear(binary, grey, scaled.diameter_px)
    seeds = split_seeds(grey, binary, modality, scaled.diameter_px, not smooth) if config.split_touching else None
    return _Foreground(binary, None, "either", "texture", scaled, origin, seeds)


def _instances(binary: np.ndarray, scaled: Scaled, min_area: int, seeds: np.ndarray | None = None,
               cell_area: float | None = None):
    """The mask's cells: connected components, or with ``split_touching`` touching and overlapping cells split at
    the labeller's preset (`runtime.counting.instances.LABELLER_SPLIT`, which says why it differs from the
    counter's) for the kind's size range: for RBCs, cut at every distance maximum above noise, parts no larger than
    one cell joined back, large blobs divided by area; for macrophages, the distance map alone. With ``seeds``
    (any kind, `trainer.label_free.split_seeds`), the distance map is the seeds' where they hold two cells or more
    (`find_instances`).

    ``cell_area`` (label-free images: the estimated diameter's disc) stands in for the frame's median single cell
    where it has too few (`find_instances`): a DIC field of a few large RBCs, each of whose masks has a waist
    across the relief's faint sides, has no single cell, and every cell stayed cut in two. Not on stained smears,
    where such frames are dense smears of overlapping cells, which it joined on the BCCD training half."""
    if not scaled.config.split_touching:
        return find_instances(binary, None, min_area)
    return scaled.split_settings.split(binary, scaled.expected_radius_px, min_area, seeds, cell_area=cell_area)


def _fallback(config: AutoLabelConfig) -> float:
    """The diameter when an image holds too few cells to measure: the kind's typical size at the default pixel
    size (the simulator's)."""
    return CELL_SIZES[config.class_id].diameter_px(DEFAULT_PIXEL_SIZE_UM)


def _per_object_level(cells: np.ndarray, binary: np.ndarray, fraction: float, reach_px: float) -> np.ndarray:
    """The mask of a bright-cell (fluorescence) image redrawn object by object: each object's pixels, and those
    within ``reach_px`` of it, are cells where they exceed the background by ``fraction`` of the object's own peak
    contrast (PEAK_FRACTION and PEAK_REACH diameters by default).

    In emission images brightness follows the amount of stain, and each object's edge is its peak blurred by the
    optics: one global threshold cuts dim nuclei small and lets bright ones spread. Each pixel takes the level of
    its nearest object (a bright nucleus's level does not swallow its dim neighbour)."""
    dist, nearest = cv2.distanceTransformWithLabels(cv2.bitwise_not(binary), cv2.DIST_L2, 5,
                                                    labelType=cv2.DIST_LABEL_CCOMP)
    ys, xs = np.nonzero(dist <= reach_px)
    outside = binary == 0
    if not ys.size or not outside.any():
        return binary
    sampled = cells[::2, ::2][outside[::2, ::2]]  # every 2nd pixel will do, unless the background is that thin
    background = float(np.median(sampled if sampled.size else cells[outside]))
    owner = nearest[ys, xs]
    value = cells[ys, xs].astype(np.float32)
    peak = np.full(int(nearest.max()) + 1, background, np.float32)
    np.maximum.at(peak, owner, value)
    keep = value > background + fraction * (peak[owner] - background)
    out = np.zeros_like(binary)
    out[ys[keep], xs[keep]] = 255
    return out


def _remove_thin(binary: np.ndarray, depth: float, keep_outline: bool = False) -> tuple[np.ndarray, int]:
    """The mask without its thin parts and how many objects vanished entirely: opened with a disc of radius
    ``depth`` — fibres, open rims and a scale bar vanish, also where they cross a cell, whose outline it barely
    touches. With ``keep_outline``, an object that keeps any part keeps its whole outline (opening by
    reconstruction): a macrophage's pseudopods and ruffles are thin, and they are the cell."""
    side = max(3, 2 * int(round(depth)) + 1)
    opened = cv2.morphologyEx(binary, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side)))
    if keep_outline:
        n, labels = cv2.connectedComponents(binary, connectivity=8)
        kept = np.zeros(n, bool)
        kept[labels[opened > 0]] = True
        kept[0] = False
        return kept[labels].view(np.uint8) * np.uint8(255), n - 1 - int(kept.sum())
    # Counted on every second pixel: the number is a report, the mask above is exact.
    n, labels = cv2.connectedComponents(np.ascontiguousarray(binary[::2, ::2]), connectivity=8)
    points = cv2.findNonZero(np.ascontiguousarray(opened[::2, ::2]))
    if points is None:
        return opened, n - 1
    points = points.reshape(-1, 2)
    surviving = len(np.unique(labels[points[:, 1], points[:, 0]]))
    return opened, n - 1 - surviving


def _unstained(found, image: np.ndarray, labels: np.ndarray, binary: np.ndarray) -> np.ndarray:
    """Per instance: is its colour shift from the background below UNSTAINED × the median instance's.

    Colour as the chromaticity of the mean colour (blue and red shares of B+G+R: brightness-free); ``image``,
    ``labels`` and ``binary`` are the same subsample of the frame, its instance labels and its mask."""
    if len(found.ids) < 3:
        return np.zeros(len(found.ids), bool)
    flat = labels.reshape(-1)
    size = int(found.labels.max()) + 1
    means = np.stack([np.bincount(flat, weights=image[..., c].reshape(-1), minlength=size)[found.ids]
                      for c in range(3)], 1)
    background = np.asarray(cv2.mean(image, mask=cv2.compare(binary, 0, cv2.CMP_EQ))[:3])
    chroma = means[:, ::2] / np.maximum(means.sum(1, keepdims=True), 1.0)
    shift = chroma - background[::2] / max(background.sum(), 1.0)
    typical = np.median(shift, axis=0)
    norm = float(np.hypot(*typical))
    if norm < MIN_STAIN:
        return np.zeros(len(found.ids), bool)
    return shift @ (typical / norm) < UNSTAINED * norm


def _nucleated(found, image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per instance: are at least NUCLEATED of its pixels stained like a nucleus (see NUCLEUS_STAIN); ``image``
    and ``labels`` are the same subsample of the frame and its instance labels."""
    purple = cv2.subtract(image[..., 0], image[..., 2], dtype=cv2.CV_16S)
    level = int(np.median(purple[::4, ::4])) + NUCLEUS_STAIN
    size = int(found.labels.max()) + 1
    stained = np.bincount(labels[purple >= level], minlength=size)[found.ids]
    sampled = np.bincount(labels.reshape(-1), minlength=size)[found.ids]
    return stained >= NUCLEATED * np.maximum(sampled, 1)


_COVARIANCE = cv2.COVAR_NORMAL | cv2.COVAR_ROWS | cv2.COVAR_SCALE  # a class's covariance (1/n) and mean, in C


def cell_contrast(image: np.ndarray, grey: np.ndarray, polarity: str) -> np.ndarray:
    """uint8 image in which cells are bright: the colour direction that best separates cells from background.

    Fisher's linear discriminant of the two classes of a first Otsu split of the grey image (statistics from every
    eighth pixel), stretched to 0–255 and oriented so that the cell class (dark in grey for brightfield) is high.
    """
    sample = image[::8, ::8].reshape(-1, 3).astype(np.float32)
    split = cv2.threshold(np.ascontiguousarray(grey[::8, ::8]), 0, 1,
                          cv2.THRESH_BINARY | cv2.THRESH_OTSU)[1].reshape(-1).astype(bool)
    cells = ~split if polarity == "dark" else split
    if cells.sum() < 8 or (~cells).sum() < 8:
        return cv2.bitwise_not(grey) if polarity == "dark" else grey
    (cov_c, mean_c), (cov_b, mean_b) = (cv2.calcCovarMatrix(part, None, _COVARIANCE) for part in (sample[cells],
                                                                                                sample[~cells]))
    within = cov_c * cells.mean() + cov_b * (~cells).mean()
    direction = np.linalg.solve(within + 1e-3 * np.eye(3), (mean_c - mean_b).ravel())
    projected = sample @ direction
    lo, hi = np.percentile(projected, (0.5, 99.5))
    scale = 255.0 / max(hi - lo, 1e-6)
    matrix = np.append(direction * scale, -lo * scale).reshape(1, 4).astype(np.float32)
    return cv2.transform(image, matrix)  # uint8 in, uint8 out: OpenCV saturates to 0–255


def smooth_background(cells: np.ndarray, size: tuple[int, int] | None = None, iterations: int = 3) -> np.ndarray:
    """The illumination as a quadratic surface (float32; at ``size`` (h, w), the image's by default), fitted to the
    background only: fitted to a grid of about 32 pixels along the shorter side, then refitted without the pixels
    that lie well above it (cells, being bright here) — vignetting and a tilted lamp are smooth at the frame's
    scale whatever the cells' size, not known yet, and six coefficients need no more samples."""
    step = max(1, min(cells.shape) // 32)
    grid = cells[::step, ::step].astype(np.float32)
    basis = _quadratic_basis(grid.shape)
    values = grid.reshape(-1)
    keep = np.ones(values.size, bool)
    for _ in range(iterations):
        kept = basis[keep]
        if min(grid.shape) >= 3:
            coef = np.linalg.solve(kept.T @ kept + 1e-6 * np.eye(6, dtype=np.float32), kept.T @ values[keep])
        else:  # one or two rows or columns cannot fix a quadratic across them: the least-norm fit
            coef = np.linalg.lstsq(kept.astype(np.float64), values[keep], rcond=None)[0].astype(np.float32)
        residual = values - basis @ coef
        keep = residual < 2.0 * residual[keep].std() + 1e-6
    h, w = size or cells.shape
    # A quadratic is smooth: evaluating it on a coarse grid and enlarging linearly loses nothing visible.
    coarse = (min(h, grid.shape[0]), min(w, grid.shape[1]))
    surface = (_quadratic_basis(coarse) @ coef).reshape(coarse).astype(np.float32)
    return surface if coarse == (h, w) else cv2.resize(surface, (w, h), interpolation=cv2.INTER_LINEAR)


def _quadratic_basis(shape: tuple[int, int]) -> np.ndarray:
    """(h·w, 6) float32: 1, u, v, u², uv, v² at the pixel grid of ``shape``, u and v spanning the frame as −½…½."""
    v, u = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    u, v = u / shape[1] - 0.5, v / shape[0] - 0.5
    return np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], -1).reshape(-1, 6)


def _level(cells: np.ndarray, background: np.ndarray, median: float | None = None) -> np.ndarray:
    """The image minus its background (same size), the background's median level (``median``, else read off
    every 8th pixel) kept, as uint8 (saturated)."""
    median = float(np.median(background[::8, ::8])) if median is None else median
    return cv2.subtract(cells, cv2.subtract(background, median, dtype=cv2.CV_32F), dtype=cv2.CV_8U)


def _field_width(cells: np.ndarray) -> float:
    """The widest background window: a fifth of the frame, and at least 64 px (half the frame if smaller), so
    that on a small crop it still exceeds the cells before their size is known."""
    side = min(cells.shape)
    return max(side / 5, min(side / 2, 64.0))


def _otsu(cells: np.ndarray) -> np.ndarray:
    return cv2.threshold(cells, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)[1]


def _threshold(cells: np.ndarray, scaled: Scaled) -> tuple[np.ndarray, str]:
    """Binary cell mask (255) of the cells-bright image by the adaptive or the Otsu method, and the method."""
    if scaled.config.threshold == "adaptive":
        return adaptive_gaussian_threshold(cells, scaled.block, scaled.threshold_offset, "bright"), "adaptive"
    return _otsu(cells), "otsu"


def _auto_threshold(cells: np.ndarray) -> tuple[np.ndarray, str, np.ndarray]:
    """Otsu on the image flattened by its background where the background varies by more than UNEVEN of the
    cell contrast, else on the image as it is; returns the mask, the method and the image thresholded.

    The background is the quadratic illumination surface plus what a grey opening a fifth of the frame wide
    finds on the rest (local unevenness; ImageJ's rolling ball): both are wider than any cell the frame shows more
    than a few of, so neither needs the cells' size. The quadratic is fitted on a sparse grid, the opening runs on
    a copy shrunk until its disc spans 9–18 px, and the decision is made on every 4th pixel: the full-size work is
    one shrink and one Otsu pass, and, where the light is uneven, one enlargement and one subtraction."""
    h, w = cells.shape
    width = _field_width(cells)
    # A power of two, and the rows and columns beyond a multiple of it left out of the shrink (a few px of a
    # smooth background): INTER_AREA then takes its integer path, far faster than a fractional shrink.
    factor = 1 << max(0, int(math.log2(width / 9)))
    small = cv2.resize(cells[:h - h % factor, :w - w % factor], (w // factor, h // factor),
                       interpolation=cv2.INTER_AREA) if factor > 1 else cells
    smooth = smooth_background(cells, small.shape)
    residual = _level(small, smooth, float(np.median(smooth)))
    side = max(3, round(width / factor) | 1)
    local = cv2.morphologyEx(residual, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side)))
    local = cv2.GaussianBlur(local, (0, 0), side / 2)
    background = cv2.add(smooth, cv2.subtract(local, float(np.median(local)), dtype=cv2.CV_32F))
    median = float(np.median(background))
    sample = np.ascontiguousarray(cells[::4, ::4])
    binary = _otsu(_level(sample, cv2.resize(background, (sample.shape[1], sample.shape[0]),
                                             interpolation=cv2.INTER_LINEAR), median))
    contrast = cv2.mean(sample, mask=binary)[0] - cv2.mean(sample, mask=cv2.bitwise_not(binary))[0]
    if np.subtract(*np.percentile(background, (95, 5))) > UNEVEN * contrast:
        full = cv2.resize(background, (w, h), interpolation=cv2.INTER_LINEAR) if factor > 1 else background
        flat = _level(cells, full, median)
        return _otsu(flat), "flattened otsu", flat
    return _otsu(cells), "otsu", cells


def adaptive_gaussian_threshold(grey: np.ndarray, block: int, offset: float, polarity: str) -> np.ndarray:
    """255 where a pixel lies ``offset`` below (dark) or above (bright) its Gaussian-weighted local mean.

    The same rule as cv2.adaptiveThreshold(ADAPTIVE_THRESH_GAUSSIAN_C), with σ from the block size as OpenCV
    derives it. A wide block makes that a slow wide filter (RBC 21 taps, macrophage 71), but the local mean is
    smooth, so it is computed on a copy shrunk by the largest power of two ≤ block/10 (the shrunk σ stays ≥ 1.5 px;
    a power of two takes INTER_AREA's fast integer path) and enlarged again: 2.5–5× faster, < 0.1 % of pixels
    differ (tested).
    """
    sigma = 0.3 * ((block - 1) * 0.5 - 1) + 0.8
    factor = 1 << max(0, int(math.log2(block / 10)))
    if factor == 1:
        mode, c = (cv2.THRESH_BINARY_INV, offset) if polarity == "dark" else (cv2.THRESH_BINARY, -offset)
        return cv2.adaptiveThreshold(grey, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, mode, block, c)
    h, w = grey.shape
    small = cv2.resize(grey, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA).astype(np.float32)
    blurred = cv2.GaussianBlur(small, (0, 0), sigma / factor, borderType=cv2.BORDER_REPLICATE)
    # OpenCV compares against the mean rounded to a grey level; doing the same keeps noise-level pixels alike.
    mean = np.round(cv2.resize(blurred, (w, h), interpolation=cv2.INTER_LINEAR))
    if polarity == "dark":
        return cv2.compare(grey.astype(np.float32), mean - offset, cv2.CMP_LE)
    return cv2.compare(grey.astype(np.float32), mean + offset, cv2.CMP_GT)


def config_for(kind: str, **overrides) -> AutoLabelConfig:
    """The default configuration for a kind, with overrides (used by the CLI and the ablation)."""
    return replace(AutoLabelConfig(kind=kind), **overrides)


# The paper's pipeline as published, at a given pixel size: the ablation's base and `--paper` on the CLI.
PAPER_STEPS = dict(channel="grey", threshold="adaptive", fill="contours", close_rims=False, reject=False)

__all__ = ["AutoLabel", "AutoLabelConfig", "PAPER_STEPS", "auto_label", "config_for", "detect_polarity", "RBC",
           "MACROPHAGE"]
