"""From class map to counted cells — the one counting implementation of the project.

Per class: connected components, small false positives dropped by a per-class minimum area (paper §3.3),
optionally touching cells split (beyond the paper), a border policy, and a per-cell table. The trainer's
evaluation, `csc-data count`, the runtime pipeline and the benchmarks all call `CellCounter.count`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from runtime.classes import CLASS_NAMES, DEFAULT_PIXEL_SIZE_UM, cell_size
from runtime.errors import CscError
from runtime.counting.instances import (COUNTER_SPLIT, ClassSplit, Instances, SplitSettings, on_border,
                                        pixel_statistics, split_classes)
from runtime.counting.metrics import tidy_count
from runtime.counting.calibration import class_map_scale

BORDER_POLICIES = ("count", "ignore", "half")
# px: a narrower class map holds no cell, and OpenCV takes a one-pixel-wide map of 1 or 4 px for a scalar
# (`cv2.compare` of a 4×1 map of ones with 1 gives 255, 0, 0, 0), so the counter would miscount or crash on it.
MIN_SIDE = 2
_BORDER_WEIGHT = {"count": 1.0, "ignore": 0.0, "half": 0.5}
CELL_DTYPE = np.dtype([
    ("id", np.int32), ("class_id", np.uint8), ("cx", np.float32), ("cy", np.float32), ("area_px", np.int32),
    ("area_um2", np.float32), ("x", np.int32), ("y", np.int32), ("w", np.int32), ("h", np.int32),
    ("eq_diameter_px", np.float32), ("eq_diameter_um", np.float32), ("touches_border", np.bool_),
])


@dataclass(frozen=True)
class CountingConfig:
    """Counting options. Defaults: minimum areas from the cell sizes, touching cells split, border cells counted
    once (a cell cut by the frame edge is still a cell in the frame, as in the simulator's ground truth).

    The scale: ``pixel_size_um``, or ``diameter_px`` (the typical diameter in px of the first cell class, an RBC
    by default, i.e. a pixel size of that class's typical µm over it), or neither (None, None): estimated for each
    frame from its own class map.
    """

    class_names: tuple[str, ...] = CLASS_NAMES
    pixel_size_um: float | None = DEFAULT_PIXEL_SIZE_UM
    min_area_px: Mapping[str, int] | None = None
    min_area_um2: Mapping[str, float] | None = None
    split_touching: bool = True
    border: str = "count"
    diameter_px: float | None = None
    # The splitter's settings are the counter's preset (`runtime.counting.instances.COUNTER_SPLIT`, which says why)
    # with these two of it:
    one_cell: float = COUNTER_SPLIT.one_cell  # 0: split by the distance map alone (see one_cell_factor)
    cut_cell_fraction: float = COUNTER_SPLIT.cut_fraction  # 1: cut cells need the full minimum area too

    def __post_init__(self) -> None:
        if self.border not in BORDER_POLICIES:
            raise ValueError(f"border policy must be one of {', '.join(BORDER_POLICIES)}, got {self.border!r}")
        # Written so that NaN fails too (every comparison with it is false), and infinity: either ended the count
        # in a traceback at the first frame.
        if self.pixel_size_um is not None and not 0 < self.pixel_size_um < math.inf:
            raise ValueError(f"pixel size must be positive, got {self.pixel_size_um}")
        if self.diameter_px is not None and not 2 <= self.diameter_px < math.inf:
            raise ValueError(f"diameter must be at least 2 px, got {self.diameter_px}")
        if not (math.isfinite(self.one_cell) and self.one_cell >= 0 and 0 <= self.cut_cell_fraction <= 1):
            raise ValueError(f"one_cell must be ≥ 0 and cut_cell_fraction in 0–1, got {self.one_cell}, "
                             f"{self.cut_cell_fraction}")
        if self.min_area_um2 and self.pixel_size_um is None:
            raise ValueError("minimum areas in µm² need a pixel size")
        for table in (self.min_area_px or {}, self.min_area_um2 or {}):
            for name, value in table.items():
                if name not in self.class_names[1:]:
                    raise ValueError(f"unknown class {name!r} in minimum areas; classes: {', '.join(self.class_names[1:])}")
                if value < 0:
                    raise ValueError(f"minimum area of {name} must not be negative, got {value}")

    @property
    def fixed_pixel_size_um(self) -> float | None:
        """The pixel size every frame is counted at, or None when it is estimated per frame."""
        if self.diameter_px is not None:
            return cell_size(self.class_names[1]).pixel_size_um(self.diameter_px)
        return self.pixel_size_um

    def min_area(self, class_id: int, pixel_size_um: float | None = None) -> int:
        pixel_size_um = pixel_size_um or self.fixed_pixel_size_um or DEFAULT_PIXEL_SIZE_UM
        name = self.class_names[class_id]
        return cell_size(name).min_area(pixel_size_um, (self.min_area_px or {}).get(name),
                                        (self.min_area_um2 or {}).get(name))

    def split_settings(self, class_id: int) -> SplitSettings:
        """How a class's touching cells are split: `COUNTER_SPLIT` with this config's ``one_cell`` and
        ``cut_cell_fraction``, for the class's size range (`SplitSettings.for_size`)."""
        settings = replace(COUNTER_SPLIT, one_cell=self.one_cell, cut_fraction=self.cut_cell_fraction)
        return settings.for_size(cell_size(self.class_names[class_id]))

    def one_cell_factor(self, class_id: int) -> float:
        """`one_cell` where the rule is safe for the class (`CellSize.one_cell_safe`), else 0."""
        return self.split_settings(class_id).one_cell

    def min_radius_px(self, class_id: int, pixel_size_um: float | None = None) -> float:
        pixel_size_um = pixel_size_um or self.fixed_pixel_size_um or DEFAULT_PIXEL_SIZE_UM
        return cell_size(self.class_names[class_id]).min_radius_px(pixel_size_um)


@dataclass
class FrameCounts:
    """Counts per class name (floats only under the `half` border policy) and one table row per cell."""

    counts: dict[str, float]
    cells: np.ndarray  # structured array of CELL_DTYPE
    labels: np.ndarray | None = None  # int32 instance map (ids = cells["id"]) when asked for
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    pixel_size_um: float = DEFAULT_PIXEL_SIZE_UM  # the scale counted at (given, or estimated from this frame)
    scale: str = "given"  # "given", "estimated" or "default" (estimation asked for, too few cells to measure)


class CellCounter:
    """Counts cells in class maps; reuse one instance per stream so per-frame buffers are allocated once.

    With one worker the classes of a frame are split in one pass (`split_classes`: a 512×512 frame's splitting is
    mostly a fixed cost of array calls per pass, paid once for both classes). With ``workers`` > 1 the classes of
    one frame are counted at once, one thread each (OpenCV and numpy release the GIL: a 4000×3000 frame's two
    classes take about the time of one), and the workers left over are shared by the classes present, each class's
    components split in that many runs at once (`split_classes`' ``groups``; on threads of a second pool, which the
    class threads wait on), so a frame of one class uses the cores too; for a stream of frames the pipeline counts
    consecutive frames at once instead (`RunOptions.count_workers`), each thread with a counter of its own:
    one counter must not count two frames at once, since its buffers are the frame's. Those buffers (a mask and an
    int32 label image per class, 60 MB a class at 4000×3000) stay allocated for the counter's life, sized to the
    last frame: a counter that sees one large frame among small ones holds that frame's memory until it is freed.
    """

    def __init__(self, config: CountingConfig | None = None, workers: int = 1):
        self.config = config or CountingConfig()
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None  # the classes
        self._group_pool: ThreadPoolExecutor | None = None  # runs of one class's components (`split_classes`)
        self._shape: tuple[int, int] | None = None
        self._binary: np.ndarray | None = None
        # Per class, a mask and a label image (see `split_classes`) kept from frame to frame; one pair per class,
        # so that the classes can be counted at once.
        self._buffers: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def count(self, class_map: np.ndarray, return_labels: bool = False) -> FrameCounts:
        self._validate(class_map)
        cfg = self.config
        if class_map.size == 0:
            zero = {name: 0 for name in cfg.class_names[1:]}
            return FrameCounts(zero, np.zeros(0, CELL_DTYPE), np.zeros(class_map.shape, np.int32) if return_labels else None)
        h, w = class_map.shape
        if self._shape != (h, w):
            self._shape, self._binary, self._buffers = (h, w), np.empty((h, w), np.uint8), {}
        rows: list[np.ndarray] = []
        labels_out = np.zeros((h, w), np.int32) if return_labels else None
        next_id = 1
        pixel_size, scale = self._scale(class_map)
        classes = range(1, len(cfg.class_names))
        groups = self.workers if self.workers == 1 or len(classes) == 1 else self._groups(class_map)
        if groups > 1:  # made here, not in the class threads, which would race to make it
            self._group_pool = self._group_pool or ThreadPoolExecutor(self.workers, thread_name_prefix="count-split")
        if self.workers > 1 and len(classes) > 1:
            self._pool = self._pool or ThreadPoolExecutor(self.workers, thread_name_prefix="count-class")
            found_by_class = [found for (found,) in self._pool.map(
                lambda c: self._instances(class_map, [c], pixel_size, groups), classes)]
        else:  # on one core, the classes split in one pass (`split_classes`)
            found_by_class = self._instances(class_map, list(classes), pixel_size, groups)
        for class_id, found in zip(classes, found_by_class):
            table = _table(found.stats, found.centroids, class_id, next_id, pixel_size, h, w)
            if labels_out is not None and len(table):
                lut = np.zeros(int(found.labels.max()) + 1, np.int32)
                lut[found.ids] = table["id"]
                labels_out += lut[found.labels]
            next_id += len(table)
            rows.append(table)
        cells = np.concatenate(rows) if rows else np.zeros(0, CELL_DTYPE)
        return self._frame_counts(cells, labels_out, pixel_size, scale)

    def _groups(self, class_map: np.ndarray) -> int:
        """Runs of components each class is split in (`split_classes`' ``groups``) while the classes are counted
        at once: the workers shared among the classes present. Where each class already has a core, more runs only
        add threads and packings (a 4000×3000 frame of two classes on two cores was slower with two runs a class)."""
        n = len(self.config.class_names)
        present = np.count_nonzero(cv2.calcHist([class_map], [0], None, [n], [0, n]).ravel()[1:])
        return max(1, self.workers // max(1, present))

    def _instances(self, class_map: np.ndarray, class_ids: list[int], pixel_size: float,
                   groups: int = 1) -> list[Instances]:
        """These classes' cells: components, split where touching (in ``groups`` runs at once), those large enough
        kept (parts cut by the frame edge are kept smaller; the border policy decides whether they count)."""
        cfg = self.config
        classes = []
        for class_id in class_ids:
            if class_id not in self._buffers:
                self._buffers[class_id] = (np.empty(class_map.shape, np.uint8), np.empty(class_map.shape, np.int32))
            mask, labels = self._buffers[class_id]
            classes.append(ClassSplit(
                cv2.compare(class_map, class_id, cv2.CMP_EQ, dst=mask),
                cfg.min_radius_px(class_id, pixel_size) if cfg.split_touching else None,
                cfg.min_area(class_id, pixel_size), cfg.split_settings(class_id), labels=labels))
        found = split_classes(classes, pool=self._group_pool, groups=groups)
        return [f.keep(np.flatnonzero(f.large_enough(c.min_area, class_map.shape, cfg.cut_cell_fraction)))
                for f, c in zip(found, classes)]

    def count_instances(self, class_map: np.ndarray, instances: np.ndarray, return_labels: bool = False) -> FrameCounts:
        """A split made elsewhere — the auto-labeller's ``instances/``, an import — counted as it is, under this
        config's scale and border policy: scoring a labelled dataset must score the labeller's cells, not the
        counter's re-split of its class maps (on 27 held-out BCCD smears the two gave 610 and 502 cells)."""
        self._validate(class_map)
        if instances.shape != class_map.shape:
            raise CscError(f"instances are {instances.shape[::-1]} px, the class map {class_map.shape[::-1]}")
        pixel_size, scale = self._scale(class_map)
        rows = [cells_from_instances(np.where(class_map == c, instances, 0), c, pixel_size)
                for c in range(1, len(self.config.class_names))]
        cells = np.concatenate(rows) if rows else np.zeros(0, CELL_DTYPE)
        return self._frame_counts(cells, instances.astype(np.int32) if return_labels else None, pixel_size, scale)

    def _frame_counts(self, cells: np.ndarray, labels: np.ndarray | None, pixel_size: float, scale: str) -> FrameCounts:
        """Counts per class from a cell table under the border policy."""
        names = self.config.class_names
        weights = np.where(cells["touches_border"], _BORDER_WEIGHT[self.config.border], 1.0).astype(np.float32)
        totals = np.bincount(cells["class_id"], weights=weights, minlength=len(names))
        counts = {name: tidy_count(totals[i]) for i, name in enumerate(names) if i}
        return FrameCounts(counts, cells, labels, weights, pixel_size, scale)

    def _scale(self, class_map: np.ndarray) -> tuple[float, str]:
        """(pixel size, where it came from) for this frame: the configured one, else read off its own cells
        (`runtime.counting.calibration.class_map_scale`: the class with the most cells is the ruler)."""
        fixed = self.config.fixed_pixel_size_um
        if fixed is not None:
            return fixed, "given"
        found = class_map_scale(class_map, self.config.class_names, self._binary)
        return (found[0], "estimated") if found else (DEFAULT_PIXEL_SIZE_UM, "default")

    def _validate(self, class_map: np.ndarray) -> None:
        if not isinstance(class_map, np.ndarray) or class_map.ndim != 2 or class_map.dtype != np.uint8:
            got = f"{class_map.dtype} {class_map.shape}" if isinstance(class_map, np.ndarray) else type(class_map).__name__
            raise CscError(f"a class map must be a 2-D uint8 array, got {got}",
                           fix="pass the model's argmax output (one class id per pixel)")
        self._check_contents(class_map.shape, int(class_map.max()) if class_map.size else 0)

    def _check_contents(self, shape: tuple[int, ...], max_id: int) -> None:
        """What this counter and the GPU's ask of a class map past its type: a size that holds a cell (an empty
        map is a zero count) and only configured class ids."""
        if 0 < min(shape) < MIN_SIDE:
            raise CscError(f"a class map of {shape[1]}×{shape[0]} px is too thin to hold a cell",
                           fix=f"count class maps at least {MIN_SIDE} px on each side (the model's output)")
        if max_id >= len(self.config.class_names):
            raise CscError(f"class id {max_id} is not in the configured classes "
                           f"({', '.join(f'{i} {n}' for i, n in enumerate(self.config.class_names))})",
                           fix="check that the model and the counting configuration use the same classes")


def cells_from_instances(labels: np.ndarray, class_id: int, pixel_size_um: float) -> np.ndarray:
    """The cell table (CELL_DTYPE) of an instance label image made elsewhere — the auto-labeller's split, an
    imported annotation, a baseline — with ``id`` the label value, so that it scores like the counter's own."""
    ys, xs = np.nonzero(labels)
    ids_of = labels[ys, xs].astype(np.int64)
    ids = np.unique(ids_of)
    if not len(ids):
        return np.zeros(0, CELL_DTYPE)
    stats, sums = pixel_statistics(ids_of, ys, xs, int(ids[-1]) + 1)
    stats = stats[ids]
    centroids = sums[ids] / stats[:, cv2.CC_STAT_AREA, None]
    table = _table(stats, centroids, class_id, 1, pixel_size_um, *labels.shape)
    table["id"] = ids
    return table


def _table(stats, centroids, class_id, first_id, pixel_size_um, h, w) -> np.ndarray:
    table = np.zeros(len(stats), CELL_DTYPE)
    if not len(stats):
        return table
    x, y, bw, bh, area = (stats[:, i] for i in range(5))
    table["id"] = np.arange(first_id, first_id + len(stats))
    table["class_id"] = class_id
    table["cx"], table["cy"] = centroids[:, 0], centroids[:, 1]
    table["area_px"] = area
    table["area_um2"] = area * pixel_size_um**2
    table["x"], table["y"], table["w"], table["h"] = x, y, bw, bh
    table["eq_diameter_px"] = np.sqrt(4.0 * area / math.pi)
    table["eq_diameter_um"] = table["eq_diameter_px"] * pixel_size_um
    table["touches_border"] = on_border(stats, (h, w))
    return table
