"""Cells of one class as instances: connected components, optionally with touching cells split.

The module that owns splitting: one implementation shared by the auto-labeller (instance labels for training
data) and the runtime's counting (a clump of three RBCs counts as three), each with its own named preset of the
settings (`SplitSettings`: `LABELLER_SPLIT`, `COUNTER_SPLIT`), so that neither's constant changes the other's cells.
"""
from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from functools import cached_property

import cv2
import numpy as np

from runtime.classes import CellSize
from runtime.counting.scale import window_maxima
from runtime.errors import CscError

# Splitting, relative to the smallest expected cell radius r (see `find_instances`): a marker is a distance
# maximum at least PEAK_HEIGHT·r high (lower ridges are fibres or thin rims, not cell centres), found within a
# window of WINDOW·r. How high each must rise above the saddle to stay apart, and the rules after, are a preset's
# (`SplitSettings`: `COUNTER_SPLIT`, `LABELLER_SPLIT`).
PEAK_HEIGHT = 0.35
WINDOW = 0.5
DYNAMICS_FLOOR = 0.5  # px: below it, distance-map noise
MIN_SINGLES = 5
# `divide_large` divides a blob into at most this many cells (the largest clumps in the Chula and BCCD training
# images hold 8 and 11 cells' area).
MAX_PARTS = 12


@dataclass(frozen=True)
class SplitSettings:
    """How touching cells of one class are split (`split`): the settings of `find_instances` and `divide_large`.

    The project splits with one of two presets, `COUNTER_SPLIT` (the counter, on a model's class maps) and
    `LABELLER_SPLIT` (the auto-labeller, on the masks it makes of images to train on); each says why it differs.
    """

    dynamics: float  # × r: two distance maxima stay apart only when each rises this far above the saddle
    one_cell: float  # two parts together no larger than this × the frame's median single cell are one cell; 0: off
    divide_large: float | None  # blobs of at least this × the median cell divided by area (`divide_large`); None: off
    cut_fraction: float  # a part on the frame edge is kept down to this fraction of the minimum area
    # Where the one-cell rule does not hold for the class (`CellSize.one_cell_safe`: sizes that span so much that
    # two small cells have one large one's area, macrophages), the rule is off and with it the division by area,
    # which needs a median cell that stands for every cell; the distance map alone decides, at these dynamics.
    wide_size_dynamics: float

    def for_size(self, size: CellSize) -> SplitSettings:
        """These settings for a class of this size range: as they are, or without the one-cell rule and the
        division by area (at `wide_size_dynamics`) where the rule does not hold for it."""
        if size.one_cell_safe(self.one_cell):
            return self
        return replace(self, dynamics=self.wide_size_dynamics, one_cell=0.0, divide_large=None)

    def split(self, binary: np.ndarray, radius_px: float | None, min_area: int = 0,
              seeds: np.ndarray | None = None, labels: np.ndarray | None = None, pool: Executor | None = None,
              groups: int = 1, cell_area: float | None = None) -> Instances:
        """The instances of a mask split at these settings (`find_instances`, then `divide_large` where set);
        ``radius_px`` None: connected components, nothing split. Call `for_size` first for a class's own."""
        return split_classes([ClassSplit(binary, radius_px, min_area, self, labels, cell_area)], seeds, pool,
                             groups)[0]


# The counter's preset: it splits a model's class map, whose outlines are coarse and jagged, so a distance maximum
# must rise 0.08 r above the saddle to be a cell of its own (tuned on real stained smears, Chula RBC-12 images
# outside the evaluation subset, and checked on hand-made shapes: two touching discs split, an ellipse of axis
# ratio 1.8 and a ring stay whole). Two parts together no larger than 1.25× the frame's median single cell are one
# cell, whatever their outline: a split would cut an ovalocyte in two, or follow two distance maxima that a jagged
# outline makes; two cells touching or overlapping, even by a third, are larger. The median adapts to the sample
# (Chula RBCs are 7 µm, BCCD's 7.5, the simulator's 6); 1.1 and 1.35 moved the real-image counts by at most 0.8
# points (benchmarks/results/counting_rules.json). No division by area: a count must not rest on the area of a
# blob the model may have merged or swollen. A part cut by the frame edge may show any fraction of its cell: it is
# kept down to a quarter of the minimum area (debris elsewhere), alone (`Instances.large_enough`) or in a clump.
# The user's `CountingConfig.one_cell` and `cut_cell_fraction` start from it.
COUNTER_SPLIT = SplitSettings(dynamics=0.08, one_cell=1.25, divide_large=None, cut_fraction=0.25,
                              wide_size_dynamics=0.08)
# The auto-labeller's preset (`csc-label auto --split-touching`): its labels are what a model learns to split, on
# images where smears are thicker than a monolayer, so overlapping RBCs leave shallow necks or none. It cuts at
# every distance maximum above noise (0.02 r; the floor, half a pixel, decides at most scales) and lets the
# one-cell rule (1.25×, as the counter's) join parts back; blobs of 1.8× the frame's median cell or more are then
# divided by area. Chosen on the BCCD training half (overlapping cells) with the Chula subset's counts and the DSB
# nuclei watched (`python -m benchmarks.accuracy.labeller_settings`): BCCD counts 0.93 of its boxes, 0.87 at the counter's
# dynamics (0.08) and 0.85 without division; a factor of 1.6 takes BCCD to 0.95 but Chula to +4.0 %, 2.0 leaves
# BCCD at 0.92 and the nuclei at 118 of 125. Macrophages (a wide size range) split at 0.08 r, the distance map
# alone: at 0.02 with no one-cell rule to join the parts back, a lobed outline would be cut. `AutoLabelConfig`'s
# ``split_dynamics`` and ``overlap`` start from it.
LABELLER_SPLIT = SplitSettings(dynamics=0.02, one_cell=1.25, divide_large=1.8, cut_fraction=0.25,
                               wide_size_dynamics=0.08)


@dataclass
class Instances:
    """Instances of a binary mask: a label image and, per instance, its label id and cv2-style statistics.

    Ids need not be dense (a split clump's id is replaced by new ones); ``dense_labels`` renumbers them 1..N.
    """

    labels: np.ndarray  # int32, 0 background
    ids: np.ndarray  # int32 (N,), the label value of each instance
    stats: np.ndarray  # int32 (N, 5): x, y, width, height, area
    centroids: np.ndarray  # float64 (N, 2): x, y

    def keep(self, rows: np.ndarray) -> Instances:
        return Instances(self.labels, self.ids[rows], self.stats[rows], self.centroids[rows])

    def large_enough(self, min_area: float, shape: tuple[int, int],
                     cut_fraction: float = COUNTER_SPLIT.cut_fraction) -> np.ndarray:
        """Per instance: is it at least ``min_area``, or ``cut_fraction`` of it where the frame edge cuts it."""
        area = self.stats[:, cv2.CC_STAT_AREA]
        return (area >= min_area) | (on_border(self.stats, shape) & (area >= cut_fraction * min_area))

    def dense_labels(self) -> np.ndarray:
        """uint16 labels 1..N in row order, instances not kept set to 0 (like a hand-made instance mask)."""
        if len(self.ids) > 65535:
            raise CscError(f"{len(self.ids)} cells: more than a uint16 instance mask holds (65 535)",
                           fix="crop the image into tiles")
        lut = np.zeros(int(self.labels.max()) + 1, np.uint16)
        lut[self.ids] = np.arange(1, len(self.ids) + 1, dtype=np.uint16)
        return lut[self.labels]


def find_instances(binary: np.ndarray, radius_px: float | None = None, min_area: int = 0,
                   one_cell: float = 0.0, dynamics: float = COUNTER_SPLIT.dynamics,
                   cut_fraction: float = COUNTER_SPLIT.cut_fraction, seeds: np.ndarray | None = None,
                   labels: np.ndarray | None = None, pool: Executor | None = None, groups: int = 1,
                   cell_area: float | None = None) -> Instances:
    """Connected components (8-connected) of a boolean/uint8 mask; with ``radius_px``, touching cells split (the
    defaults: the counter's preset without the one-cell rule; `SplitSettings.split` passes a preset's).

    Splitting follows the distance transform's h-maxima, the criterion of a watershed with dynamics: markers are
    distance maxima of cell-like height (≥ PEAK_HEIGHT·r) within a window of WINDOW·r of the cell's own pixels; a
    clump with several is divided between them by a watershed on the distance map (cv2.watershed itself floods by
    image gradients, which a binary mask does not have; see `_split_clumps`); then neighbouring parts merge again,
    highest saddle first, when the lower of their two peaks rises less than ``dynamics``·r above the saddle between
    them (one cell's ridge: an ellipse, a ring, a lobed outline), or when one of them is smaller than ``min_area``
    (a part of a cell is never dropped as debris: a clump loses no pixels; a part on the frame edge needs only
    ``cut_fraction`` of it, the rule `large_enough` applies to a cut cell standing alone), or, with ``one_cell``,
    when the two parts together are no larger than ``one_cell`` × the median area of the frame's single cells (see
    `COUNTER_SPLIT`; merges go pairwise, highest saddle first, so a larger clump can end with one such
    merged part beside others).
    The whole-frame work is the labelling and the list of the foreground's pixels: the distance map, its window
    maxima and the splits are computed on the components' bounding boxes packed side by side (`_Packed`), a few
    percent of a sparse frame. (On a dense one — half the frame cells, none touching — the pixel list makes this
    slower than OpenCV's statistics and a loop over the boxes were; see docs/counting.md.)

    ``seeds``, a part of the mask (non-zero), where the image shows lines between cells that the mask has closed
    over (the bright halo between touching cells in phase contrast): the distance map, and with it the markers,
    the drainage and the saddles, is measured in the seeds, while the cells are still the mask's components, every
    pixel of them assigned (a pixel off the seeds drains uphill into a neighbouring part, or, inside a wide line,
    goes to the nearest marker). A component whose seeds hold fewer than two markers is split as without seeds.

    ``labels``, an int32 array of the mask's shape that the label image is written into (and that the result's
    ``labels`` then is): a caller that counts frame after frame passes the same one. A 4000×3000 label image is
    48 MB, above what the heap keeps (`runtime.io.heap`): made afresh, its pages are mapped and zeroed every frame.

    ``pool`` and ``groups``: the components, in ``groups`` runs of consecutive rows of about equal pixels (no more
    runs than leave GROUP_PIXELS to each on average; runs end at components, so one can be smaller), are packed
    and split on ``pool``'s threads, each run on its own (`_Group`). Components split
    independently of each other (each alone in its packed box; the one-cell rule's median, the only figure of the
    whole frame, is taken between the two stages), so the result is the one of a single pass, ids included.
    Several classes of one frame are split in one pass by `split_classes`.

    ``cell_area``, the area (px) of a typical cell as the caller knows it: the one-cell rule's yardstick where the
    frame has too few single cells for a median (a field of a few large cells, each of which the mask shows with
    a waist: no component is a single cell, and without it every one stayed cut in two).
    """
    settings = SplitSettings(dynamics, one_cell, None, cut_fraction, dynamics)
    return split_classes([ClassSplit(binary, radius_px, min_area, settings, labels, cell_area)], seeds, pool,
                         groups)[0]


@dataclass(frozen=True)
class ClassSplit:
    """One class of a frame for `split_classes`: its mask, its smallest expected cell radius (None: connected
    components, nothing split), minimum area and split settings (a class's own: `SplitSettings.for_size`), the
    int32 label image to write into (`find_instances`' ``labels``) and a typical cell's area (``cell_area``)."""

    mask: np.ndarray
    radius_px: float | None
    min_area: int
    settings: SplitSettings
    labels: np.ndarray | None = None
    cell_area: float | None = None


def split_classes(classes: Sequence[ClassSplit], seeds: np.ndarray | None = None, pool: Executor | None = None,
                  groups: int = 1) -> list[Instances]:
    """The instances of each class of a frame (`find_instances`, then `divide_large` where a class's settings
    set it), the classes with a radius split in one pass: the components of all of them packed in one image, one
    distance map, one marker labelling and one watershed, each class by its own window, heights, dynamics and
    areas. A 512×512 frame's work is mostly a fixed cost of array calls per pass (its ~35 cells are a few thousand
    pixels), which one pass for two classes pays once. Each class's result — labels, ids, statistics, centroids —
    is the one it gets alone: its components never meet another's in the packed image. The masks are those of one
    class map, disjoint: with ``seeds``, one image labels every class's seeded pixels, and where two masks overlap
    one class's labels there would hide the other's."""
    if not classes:
        return []
    masks = [np.ascontiguousarray(c.mask, dtype=np.uint8) for c in classes]
    shape = masks[0].shape
    if seeds is not None and seeds.shape != shape:
        raise ValueError(f"seeds are {seeds.shape[::-1]} px, the mask {shape[::-1]}")
    for mask, c in zip(masks, classes):
        if mask.shape != shape:
            raise ValueError(f"the masks of one frame differ in size: {mask.shape[::-1]} and {shape[::-1]} px")
        if c.labels is not None and (c.labels.shape != shape or c.labels.dtype != np.int32):
            raise ValueError(f"labels must be int32 of the mask's {shape[1]}×{shape[0]} px, got {c.labels.dtype} "
                             f"{c.labels.shape[1]}×{c.labels.shape[0]}")
    found: list[Instances | None] = [None] * len(classes)
    for k in [k for k, c in enumerate(classes) if c.radius_px is None]:
        # no pixel list needed: OpenCV's statistics pass is cheaper than one on a dense frame
        n_comp, comp, stats, centroids = cv2.connectedComponentsWithStatsWithAlgorithm(
            masks[k], 8, cv2.CV_32S, cv2.CCL_GRANA, labels=classes[k].labels)
        found[k] = Instances(comp, np.arange(1, n_comp, dtype=np.int32), stats[1:], centroids[1:])
    # A class absent from the frame is labelled after the others: its label image (48 MB at 4000×3000, the pages
    # touched when it is written) then adds nothing to the peak of the others' split.
    split = [k for k, c in enumerate(classes) if c.radius_px is not None and cv2.countNonZero(masks[k])]
    if split:
        for k, instances in zip(split, _split_masks([classes[k] for k in split], [masks[k] for k in split], seeds,
                                                    pool, groups)):
            settings = classes[k].settings
            found[k] = divide_large(instances, settings.divide_large, classes[k].min_area, shape) \
                if settings.divide_large else instances
    for k in [k for k, f in enumerate(found) if f is None]:
        labels = np.zeros(shape, np.int32) if classes[k].labels is None else classes[k].labels
        labels.fill(0)
        found[k] = Instances(labels, np.zeros(0, np.int32), np.zeros((0, 5), np.int32), np.zeros((0, 2)))
    return found


def _split_masks(classes: Sequence[ClassSplit], masks: Sequence[np.ndarray], seeds: np.ndarray | None,
                 pool: Executor | None, groups: int) -> list[Instances]:
    """`split_classes` for classes that all have a radius and pixels: components of every class, rows class after
    class."""
    shape = masks[0].shape
    components = [_components(mask, c.labels) for mask, c in zip(masks, classes)]
    found = [Instances(comp, np.arange(1, len(stats) + 1, dtype=np.int32), stats, centroids)
             for comp, _, stats, centroids in components]
    counts = [len(stats) for _, _, stats, _ in components]
    first = np.cumsum([0, *counts[:-1]])
    if len(classes) == 1:  # the pixel list as it is: a confluent frame's is 9 M pixels
        points, stats = components[0][1], components[0][2]
    else:
        points = _Points(*(np.concatenate([getattr(c[1], name) for c in components]) for name in "xy"),
                         np.concatenate([c[1].row + f for c, f in zip(components, first)]))
        stats = np.concatenate([c[2] for c in components])
    comps = [comp for comp, _, _, _ in components]
    del components  # the pixel lists now in ``points`` alone
    rules = _Rules.of(classes, shape)
    row_class = np.repeat(np.arange(len(classes)), counts)
    row_label = np.concatenate([np.arange(1, n + 1, dtype=np.int32) for n in counts])
    run_groups = _Group.of(points, stats, gap=np.maximum(2, rules.window),
                           count=min(groups, max(1, len(points.x) // GROUP_PIXELS)), classes=row_class,
                           labels=row_label)
    del points  # each group holds its own components' pixels
    run = pool.map if pool is not None and len(run_groups) > 1 else map
    marked = list(run(lambda group: group.mark(comps, seeds, rules), run_groups))
    n_markers = np.concatenate([group.n_markers for group in marked])
    if not (n_markers > 1).any():
        return found
    rules = replace(rules, one_cell_area=np.array([
        _one_cell_area(stats[f:f + n], n_markers[f:f + n] == 1, shape, c.min_area, c.settings.one_cell, c.cell_area)
        for c, f, n in zip(classes, first, counts)]))
    parts_of = [parts for parts in run(lambda group: group.split(shape, rules), marked) if parts is not None]
    new: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in classes]
    next_id = [n + 1 for n in counts]
    for parts in parts_of:  # groups in row order, clumps in row order within each: ids as one pass over the frame gives
        for k in np.unique(parts.classes).tolist():  # a group's parts class after class (rows are)
            mine = np.flatnonzero(parts.classes == k)
            at = slice(None) if len(mine) == len(parts.classes) else parts.classes[parts.part] == k
            comps[k][parts.y[at], parts.x[at]] = next_id[k] + parts.part[at] - mine[0]
            new[k].append((np.arange(next_id[k], next_id[k] + len(mine), dtype=np.int32), parts.stats[mine],
                           parts.centroids[mine]))
            next_id[k] += len(mine)
    return [_replace(f, np.flatnonzero(n_markers[s:s + n] > 1), parts) if parts else f
            for f, s, n, parts in zip(found, first, counts, new)]


@dataclass(frozen=True)
class _Rules:
    """Per class of a split (`_split_masks`), indexed by its place in the call: the marker window and height (px),
    the dynamics (px), the minimum area and the fraction of it a part cut by the frame edge needs; the one-cell
    area (px, 0: off) once the frame's single cells are known."""

    window: np.ndarray
    height: np.ndarray
    dynamics: np.ndarray
    min_area: np.ndarray
    cut_fraction: np.ndarray
    one_cell_area: np.ndarray | None = None

    @classmethod
    def of(cls, classes: Sequence[ClassSplit], shape: tuple[int, int]) -> _Rules:
        """The rules of ``classes`` in a frame of this (h, w) ``shape``. The window stops at the frame's longer side:
        a wider one sees no more of a component (none is larger), yet each packed box's gap grew with it, and a scale
        given in the wrong unit (`--diameter 1e9`) asked for exabytes."""
        return cls(np.array([min(max(shape), max(1, int(round(WINDOW * c.radius_px)))) for c in classes]),
                   np.array([PEAK_HEIGHT * c.radius_px for c in classes]),
                   np.array([max(DYNAMICS_FLOOR, c.settings.dynamics * c.radius_px) for c in classes]),
                   np.array([c.min_area for c in classes]), np.array([c.settings.cut_fraction for c in classes]))


@dataclass
class _Points:
    """Foreground pixels of a mask in raster order: frame coordinates (int32, as OpenCV lists them: 8 bytes a
    pixel, not 16; `_flat` widens them before they are multiplied) and component row (0-based)."""

    x: np.ndarray
    y: np.ndarray
    row: np.ndarray

    def where(self, keep: np.ndarray) -> _Points:
        return _Points(self.x[keep], self.y[keep], self.row[keep])


def _components(fg: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, _Points, np.ndarray, np.ndarray]:
    """The 8-connected components of a uint8 mask: label image (ids 1..N in OpenCV's order), the foreground pixels,
    and cv2-style statistics and centroids (rows 0..N-1), equal to cv2.connectedComponentsWithStats's.

    The statistics come from the foreground's runs (a row's consecutive pixels, one component's; `pixel_statistics`).
    OpenCV's statistics pass visits every pixel of the frame, background too, and took about as long as the
    labelling itself on a sparse 4000×3000 frame; the pixel list is needed anyway, to pack the components for
    splitting (`_Packed.filled`), and a run's label is read once, not once per pixel."""
    n_comp, comp = cv2.connectedComponentsWithAlgorithm(fg, 8, cv2.CV_32S, cv2.CCL_GRANA, labels=labels)
    found = cv2.findNonZero(fg)
    xy = np.zeros((0, 2), np.int32) if found is None else found.reshape(-1, 2)  # (N, 1, 2) in OpenCV 4, (N, 2) in 5
    x, y = xy[:, 0], xy[:, 1]
    new_run = np.ones(len(x), bool)
    np.not_equal(x[1:], x[:-1] + 1, out=new_run[1:])
    new_run[1:] |= y[1:] != y[:-1]
    start = np.flatnonzero(new_run)
    length = np.diff(start, append=len(x))
    run_label = comp.ravel()[_flat(y[start], x[start], fg.shape[1])]
    stats, sums = pixel_statistics(run_label, y[start], x[start], n_comp, length)
    stats, area = stats[1:].astype(np.int32), stats[1:, cv2.CC_STAT_AREA]
    return comp, _Points(x, y, np.repeat(run_label - 1, length)), stats, sums[1:] / np.maximum(area, 1)[:, None]


def pixel_statistics(label: np.ndarray, y: np.ndarray, x: np.ndarray, n: int,
                     length: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """cv2-style statistics (n, 5: x, y, width, height, area; int64) and coordinate sums (n, 2: Σx, Σy; float64) of
    labels 0..n−1, from their pixels — or, with ``length``, from runs: ``length`` pixels from (``x``, ``y``) along
    the row. Rows of labels without pixels are meaningless. The sums are of integers, exact in float64 (a run's Σx
    is length·(2·x + length − 1)/2), so a centroid is the same whatever the order of the pixels. The one reckoning
    of the counter's components, the splitter's parts and the cells of an instance image made elsewhere."""
    y, x = y.astype(np.intp), x.astype(np.intp)  # ufunc.at between int32 values and intp arrays leaves its fast path
    last = x if length is None else x + length - 1
    area = np.bincount(label, minlength=n) if length is None else np.bincount(label, length, n).astype(np.intp)
    x0, y0 = np.full(n, int(x.max(initial=0)) + 1, np.intp), np.full(n, int(y.max(initial=0)) + 1, np.intp)
    x1, y1 = np.zeros(n, np.intp), np.zeros(n, np.intp)
    np.minimum.at(x0, label, x), np.minimum.at(y0, label, y)
    np.maximum.at(x1, label, last), np.maximum.at(y1, label, y)
    stats = np.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1, area], 1)
    if length is None:
        return stats, np.stack([np.bincount(label, x, n), np.bincount(label, y, n)], 1)
    return stats, np.stack([np.bincount(label, length * (2 * x + length - 1) // 2, n),
                            np.bincount(label, length * y, n)], 1)


def _flat(y: np.ndarray, x: np.ndarray, width: int) -> np.ndarray:
    """Flat indices ``y·width + x`` in intp: int32 coordinates multiplied as they are would wrap past 2³¹."""
    return y.astype(np.intp) * width + x


# Runs of components split on threads of their own hold this many pixels or more on average: below, a run's own
# packing and array calls weigh against what it saves (a 4000×3000 class map's class holds ~300 000).
GROUP_PIXELS = 100_000


@dataclass
class _Group:
    """Consecutive components of a frame (rows of its statistics) with their pixels (rows counted from the first),
    each row's class (its place in `split_classes`' call) and label in its class's label image, packed and split
    on their own (`split_classes`' ``groups``)."""

    points: _Points
    stats: np.ndarray
    gap: int | np.ndarray  # px around each box: one for all, or per class
    classes: np.ndarray
    labels: np.ndarray

    @classmethod
    def of(cls, points: _Points, stats: np.ndarray, gap: int | np.ndarray, count: int,
           classes: np.ndarray | None = None, labels: np.ndarray | None = None) -> list[_Group]:
        """``count`` groups (fewer where components are few) of consecutive rows holding about equal pixels; rows of
        one class, labelled 1..N, unless ``classes`` and ``labels`` say otherwise."""
        classes = np.zeros(len(stats), np.intp) if classes is None else classes
        labels = np.arange(1, len(stats) + 1, dtype=np.int32) if labels is None else labels
        if count <= 1:
            return [cls(points, stats, gap, classes, labels)]
        total = np.cumsum(stats[:, cv2.CC_STAT_AREA])
        edges = np.unique(np.concatenate([[0], np.searchsorted(total, np.arange(1, count) * total[-1] / count) + 1,
                                          [len(stats)]]).clip(0, len(stats)))
        groups = []
        for first, end in zip(edges[:-1].tolist(), edges[1:].tolist()):
            mine = points.where((points.row >= first) & (points.row < end))
            groups.append(cls(_Points(mine.x, mine.y, mine.row - first), stats[first:end], gap, classes[first:end],
                              labels[first:end]))
        return groups

    def mark(self, comps: Sequence[np.ndarray], seeds: np.ndarray | None, rules: _Rules) -> _Marked:
        """Packed, with its distance map and markers (`find_instances`); ``comps``, each class's label image."""
        packed = _Packed.of(self.points, self.stats, self.gap, classes=self.classes, labels=self.labels)
        dist = packed.distances(comps)
        peaks = packed.maxima(dist, rules)
        if seeds is not None:
            dist, peaks = _seeded(packed, self.points, seeds, dist, peaks, rules)
        found = _markers(packed, peaks)
        if found is None:
            return _Marked(self.points, packed, dist, None, np.zeros(len(self.stats), np.intp))
        px, py, marker, row, n_markers = found
        in_clump = n_markers[row] > 1
        return _Marked(self.points, packed, dist, _Sites(px[in_clump], py[in_clump], marker[in_clump], row[in_clump]),
                       n_markers)


@dataclass
class _Marked:
    """A `_Group` packed, with its distance map, the marker pixels inside clumps and each component's markers."""

    points: _Points
    packed: _Packed
    dist: np.ndarray
    sites: _Sites | None
    n_markers: np.ndarray

    def split(self, shape: tuple[int, int], rules: _Rules) -> _Parts | None:
        """The parts of this group's clumps (`_split_clumps`), None where it has none."""
        clumps = np.flatnonzero(self.n_markers > 1)
        if not clumps.size:
            return None
        # The clumps' pixels alone from here on: a confluent frame's foreground is 9 M pixels, 200 MB of lists.
        points = self.points.where((self.n_markers > 1)[self.points.row])
        return _split_clumps(shape, points, self.packed, self.dist, clumps, self.sites, rules)


@dataclass
class _Parts:
    """The parts a group's clumps split into: each clump pixel's frame coordinates and part (0-based, in clump
    order), and the parts' cv2-style statistics, centroids and classes."""

    y: np.ndarray
    x: np.ndarray
    part: np.ndarray
    stats: np.ndarray
    centroids: np.ndarray
    classes: np.ndarray  # per part, its class (its place in `split_classes`' call)


def _markers(packed: _Packed, peaks: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """The peak pixels of a packed peak image — x, y, marker id, component row — and the number of markers in each
    component; None where there are none.

    A marker is an 8-connected group of peak pixels (a plateau), numbered 1..M by its first pixel in raster order:
    the numbering of OpenCV's Wu labelling (the block-based ones number in block order). One pass over the packed
    image, as its distance map and its maxima take: a union-find over the list of peak pixels, which this replaced
    with the same markers, made the 512×512 benchmark frames' counting 4–7 % slower and a confluent 4000×3000
    frame's about 10 % (ad hoc A/B runs in one process)."""
    points = cv2.findNonZero(peaks)
    if points is None:
        return None
    points = points.reshape(-1, 2)  # (N, 1, 2) in OpenCV 4, (N, 2) in 5
    px, py = points[:, 0].astype(np.int64), points[:, 1].astype(np.int64)
    marker = cv2.connectedComponentsWithAlgorithm(peaks, 8, cv2.CV_32S, cv2.CCL_WU)[1][py, px]
    row = packed.rows[py, px] - 1  # the 8-connected pixels of one marker lie in one component
    first = np.unique(marker, return_index=True)[1]
    return px, py, marker, row, np.bincount(row[first], minlength=len(packed.box))


def _seeded(packed: _Packed, points: _Points, seeds: np.ndarray, dist: np.ndarray, peaks: np.ndarray,
            rules: _Rules) -> tuple[np.ndarray, np.ndarray]:
    """The distance map and peaks of the seeds in the components where they hold two markers or more, the mask's
    own elsewhere: seeds that lose a cell (one bright all over) must not keep whole a blob the mask would split.
    """
    seeded = _seeded_distances(packed, points, seeds)
    seed_peaks = packed.maxima(seeded, rules)
    found = _markers(packed, seed_peaks)
    if found is None:
        return dist, peaks
    use = np.concatenate([[False], found[-1] > 1])[packed.rows]
    return np.where(use, seeded, dist), np.where(use, seed_peaks, peaks)


def _seeded_distances(packed: _Packed, points: _Points, seeds: np.ndarray) -> np.ndarray:
    """The distance map of the seeds' part of each component, packed in the mask's layout (`_Packed.filled`) so
    that each lies where its component does; measured as the frame's, components cut by its edge included."""
    seeded_points = points.where(seeds.ravel()[_flat(points.y, points.x, seeds.shape[1])] > 0)
    seeded_comp = np.zeros(seeds.shape, np.int32)  # one image for every class: rows + 1
    seeded_comp.ravel()[_flat(seeded_points.y, seeded_points.x, seeds.shape[1])] = seeded_points.row + 1
    return packed.filled(seeded_points).distances(seeded_comp, np.arange(1, len(packed.box) + 1))


@dataclass
class _Packed:
    """A frame's components, each alone in its bounding box, packed on shelves (tallest first; each class on
    shelves of its own, so that its window maxima are taken on its band of rows alone) into one small image with
    ``gap`` px of background around every box. Distances to the background there equal the frame's (OpenCV's 5×5
    chamfer steps reach at most 2 px, so the gap's background is as near as the frame's; see `distances` for cells
    on the frame edge), and a window of up to ``gap`` px sees only the component's own pixels. The gap may be one
    per class (each class's window): a wider one than its own window needs only enlarges the image."""

    rows: np.ndarray  # int32: component row + 1 inside a component, 0 elsewhere
    ax: np.ndarray  # top-left corner of each component's box in the packed image
    ay: np.ndarray
    box: np.ndarray  # int64 (N, 4): each component's box in the frame, x, y, width, height
    classes: np.ndarray | None = None  # per row, its class (its place in `split_classes`' call); None: one class
    labels: np.ndarray | None = None  # per row, its label in its class's label image; None: row + 1
    bands: tuple[tuple[int, int, int], ...] = ()  # per class present: (class, first packed row, end row)

    @classmethod
    def of(cls, points: _Points, stats: np.ndarray, gap: int | np.ndarray, classes: np.ndarray | None = None,
           labels: np.ndarray | None = None) -> _Packed:
        box = stats[:, :4].astype(np.int64)
        w, h = box[:, 2], box[:, 3]
        classes = np.zeros(len(w), np.intp) if classes is None else classes
        gaps = np.asarray(gap) if np.ndim(gap) else np.full(int(classes.max()) + 1, gap)  # per class
        row_gap = gaps[classes]
        gaps, margin = gaps.tolist(), int(gaps.max())
        width = max(int(w.max()), int(np.sqrt(float(((w + row_gap) * (h + row_gap)).sum())) * 1.2)) + 2 * margin
        ax, ay = np.zeros(len(w), np.int64), np.zeros(len(w), np.int64)
        order = np.argsort(-h, kind="stable") if classes[0] == classes[-1] else np.lexsort((-h, classes))
        first = int(classes[order[0]])
        x, y, shelf, space = gaps[first], margin, 0, gaps[first]  # space: the gap of the class being packed
        starts = [(first, y)]
        for k, c in zip(order, classes[order].tolist()):
            if c != starts[-1][0]:  # a class's boxes on shelves of their own (its band: `maxima` slices it)
                x, y, shelf, space = gaps[c], y + shelf + gaps[c], 0, gaps[c]
                starts.append((c, y))
            if x > space and x + w[k] + space > width:
                x, y, shelf = space, y + shelf + space, 0
            ax[k], ay[k] = x, y
            x, shelf = x + w[k] + space, max(shelf, int(h[k]))
        ends = [start for _, start in starts[1:]] + [y + shelf]
        bands = tuple((c, start, end) for (c, start), end in zip(starts, ends))
        rows = np.zeros((y + shelf + margin, width), np.int32)
        return cls(rows, ax, ay, box, classes, labels, bands).filled(points)

    def filled(self, points: _Points) -> _Packed:
        """This layout with ``points`` (the frame's component pixels, or a part of them: the seeds) copied into
        each component's place."""
        rows = np.zeros_like(self.rows)
        rows.ravel()[self.index_of(points)] = points.row + 1
        return _Packed(rows, self.ax, self.ay, self.box, self.classes, self.labels, self.bands)

    def index_of(self, points: _Points) -> np.ndarray:
        """Flat indices in the packed image of frame pixels."""
        return _flat(points.y, points.x, self.rows.shape[1]) + self.shift[points.row]

    @cached_property
    def shift(self) -> np.ndarray:
        """Per component, its flat index in the packed image minus its frame pixels' ``y·width + x`` (1-D: moving
        pixels costs one gather by row)."""
        return (self.ay - self.box[:, 1]) * self.rows.shape[1] + self.ax - self.box[:, 0]

    def distances(self, comps: np.ndarray | Sequence[np.ndarray], labels: np.ndarray | None = None) -> np.ndarray:
        """The frame's distance map (cv2's 5×5 chamfer L2), packed. A component cut by the frame edge is measured
        apart, in its box cropped at that edge: OpenCV puts no background beyond an image's edge, while the packed
        image has a gap of background on every side. ``comps``, the label image of every class or one per class;
        ``labels``, each row's label there (else this packing's)."""
        dist = cv2.distanceTransform(cv2.compare(self.rows, 0, cv2.CMP_GT), cv2.DIST_L2, 5)
        comps = [comps] if isinstance(comps, np.ndarray) else comps
        labels = self.labels if labels is None else labels
        height, width = comps[0].shape
        x, y, w, h = self.box.T
        for k in np.flatnonzero((x == 0) | (y == 0) | (x + w == width) | (y + h == height)):
            comp = comps[0 if len(comps) == 1 else int(self.classes[k])]
            label = int(k) + 1 if labels is None else int(labels[k])
            x0, y0 = max(0, x[k] - 2), max(0, y[k] - 2)
            crop = cv2.compare(comp[y0:y[k] + h[k] + 2, x0:x[k] + w[k] + 2], label, cv2.CMP_EQ)
            inside = (slice(y[k] - y0, y[k] - y0 + h[k]), slice(x[k] - x0, x[k] - x0 + w[k]))
            packed = (slice(self.ay[k], self.ay[k] + h[k]), slice(self.ax[k], self.ax[k] + w[k]))
            np.copyto(dist[packed], cv2.distanceTransform(crop, cv2.DIST_L2, 5)[inside], where=crop[inside] > 0)
        return dist

    def maxima(self, dist: np.ndarray, rules: _Rules) -> np.ndarray:
        """The markers' peak pixels of a packed distance map (`window_maxima`), each class's band of shelves at its
        own window and height."""
        if len(self.bands) == 1:
            c = self.bands[0][0]
            return window_maxima(dist, int(rules.window[c]), float(rules.height[c]))
        peaks = np.zeros(dist.shape, np.uint8)
        for c, start, end in self.bands:
            peaks[start:end] = window_maxima(dist[start:end], int(rules.window[c]), float(rules.height[c]))
        return peaks


@dataclass
class _Sites:
    """The peak pixels inside clumps: packed coordinates, marker id and component row."""

    x: np.ndarray
    y: np.ndarray
    marker: np.ndarray
    row: np.ndarray


def _replace(found: Instances, rows: np.ndarray, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Instances:
    """``found`` with its ``rows`` replaced by their parts (ids, statistics, centroids; appended at the end)."""
    whole = np.ones(len(found.ids), bool)
    whole[rows] = False
    return Instances(found.labels, np.concatenate([found.ids[whole], *(p[0] for p in parts)]),
                     np.concatenate([found.stats[whole], *(p[1] for p in parts)]),
                     np.concatenate([found.centroids[whole], *(p[2] for p in parts)]))


def _one_cell_area(stats: np.ndarray, single: np.ndarray, shape: tuple[int, int], min_area: int,
                   factor: float, cell_area: float | None = None) -> float:
    """``factor`` × the median area of this frame's single cells — components with exactly one marker (see
    `_median_cell`) — or, where there are too few of them, of ``cell_area``; else 0."""
    median = (_median_cell(stats, shape, min_area, single) or cell_area) if factor else None
    return factor * median if median else 0.0


def _median_cell(stats: np.ndarray, shape: tuple[int, int], min_area: int,
                 rows: np.ndarray | None = None) -> float | None:
    """The median area of the instances (``rows`` of them, else all) of at least ``min_area`` and clear of the frame
    edge (a cut cell shows only part of its area); None where fewer than MIN_SINGLES leave no reliable median."""
    area = stats[:, cv2.CC_STAT_AREA]
    keep = ~on_border(stats, shape) & (area >= min_area)
    areas = area[keep if rows is None else keep & rows]
    return float(np.median(areas)) if len(areas) >= MIN_SINGLES else None


def on_border(stats: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Per row of cv2-style statistics: does the bounding box reach the edge of a frame of this (h, w) shape."""
    x, y, bw, bh = (stats[:, i] for i in range(4))
    return (x == 0) | (y == 0) | (x + bw == shape[1]) | (y + bh == shape[0])


# Steepest-ascent drainage looks at the pixel itself first, then its 8 neighbours in this order; the first of equal
# heights wins, so a pixel on a plateau drains nowhere and neighbours are taken in a fixed order.
_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
_CHUNK = 1 << 18  # pixels whose neighbours are looked at together (`_steepest`): ~7 MB of temporaries


def _split_clumps(shape: tuple[int, int], points: _Points, packed: _Packed, dist: np.ndarray, clumps: np.ndarray,
                  sites: _Sites, rules: _Rules) -> _Parts:
    """Split every clump (component rows ``clumps``, their pixels ``points`` in the frame's raster order, which
    within each box is the packed image's too) of a frame of this (h, w) ``shape``, each by its class's ``rules``;
    returns each pixel's part and the parts' cv2-style statistics, centroids and classes, in clump order.

    Per clump, a watershed on the distance map by drainage — every pixel follows its steepest uphill neighbour to
    a maximum, each maximum belongs to its nearest marker — then h-maxima merges. Drainage keeps part boundaries on
    the saddle lines between cells; a nearest-marker (Voronoi) split would let a marker near a neck claim pixels of
    the neighbouring cell. All clumps at once, on the list of their packed pixels: the gaps between packed boxes
    keep drainage, saddles and merges inside each clump.
    """
    height, width = dist.shape
    row, fy, fx = points.row, points.y, points.x
    pixels = packed.index_of(points)
    flat = dist.ravel()
    position = np.full(height * width, -1, np.int64)  # numpy indexes with intp: narrower indices only add casts
    position[pixels] = np.arange(len(pixels))
    target = np.empty(len(pixels), np.int64)
    for start in range(0, len(pixels), _CHUNK):  # in chunks: a confluent frame's clumps hold 12 M pixels
        target[start:start + _CHUNK] = position[_steepest(flat, pixels[start:start + _CHUNK], width)]
    while True:  # pointer jumping: each step doubles the path followed
        further = target[target]
        if np.array_equal(further, target):
            break
        target = further
    del further
    ends = np.flatnonzero(target == np.arange(len(target)))
    # Parts 1..P: each clump's markers in id order, clump after clump.
    slot = np.searchsorted(clumps, sites.row)
    base = int(sites.marker.max()) + 1
    unique_pairs, site_part = np.unique(slot.astype(np.int64) * base + sites.marker, return_inverse=True)
    site_part = site_part.astype(np.int32) + 1
    n_parts = len(unique_pairs) + 1  # part 0: outside
    part_class = np.zeros(n_parts, np.intp)
    part_class[1:] = packed.classes[clumps[unique_pairs // base]]
    site_at = position[sites.y * width + sites.x]
    part_of = np.zeros(len(pixels), np.int32)
    part_of[site_at] = site_part
    _nearest_sites(part_of, ends, pixels, row, packed)
    parts = part_of[target]
    del target, part_of  # a confluent frame's clump is millions of pixels: arrays go as soon as they are done
    peak = np.zeros(n_parts, np.float32)
    np.maximum.at(peak, site_part, flat[pixels[site_at]])
    area = np.bincount(parts, minlength=n_parts).astype(np.float64)
    # A part on the frame edge may be the visible piece of a cut cell: it needs only cut_fraction of min_area.
    cut = np.zeros(n_parts, bool)
    cut[parts[(fy == 0) | (fx == 0) | (fy == shape[0] - 1) | (fx == shape[1] - 1)]] = True
    min_area = rules.min_area[part_class]
    smallest = np.where(cut, rules.cut_fraction[part_class] * min_area, min_area)
    root = _merge(parts, pixels, position, flat, width, peak, area, smallest, rules.dynamics[part_class],
                  rules.one_cell_area[part_class])
    del position, pixels
    roots = root[parts]
    del parts
    # 0-based, in clump order. A marker whose pixels all drained to another one's end keeps no pixel: it gets no
    # number (it had one, and counted as a cell of no pixels where the minimum area was 0).
    kept = np.zeros(len(root), bool)
    kept[roots] = True
    part = (np.cumsum(kept) - 1)[roots]
    del roots
    _, stats, centroids = _part_statistics(part, fy, fx, row, packed.box, 0)
    return _Parts(fy, fx, part, stats, centroids, part_class[kept])


def _steepest(flat: np.ndarray, pixels: np.ndarray, width: int) -> np.ndarray:
    """Per pixel (flat indices into an image ``width`` px wide), the index of its highest 8-neighbour, or the pixel
    itself where none is higher; of equal neighbours the first in `_NEIGHBOURS` order. One neighbour at a time,
    which was faster here than an (N, 9) gather and argmax."""
    best, steepest = flat[pixels], pixels.copy()
    for dy, dx in _NEIGHBOURS:
        neighbour = pixels + (dy * width + dx)
        height = flat[neighbour]
        higher = height > best
        np.maximum(best, height, out=best)
        np.copyto(steepest, neighbour, where=higher)
    return steepest


def _nearest_sites(part_of: np.ndarray, ends: np.ndarray, pixels: np.ndarray, row: np.ndarray,
                   packed: _Packed) -> None:
    """Give every drainage end that is not a marker pixel (a low bump of the distance map) the part of its nearest
    marker pixel in its own clump, in place in ``part_of``: a distance transform with labels per such clump.

    OpenCV numbers the marker pixels of a box in its raster order (DIST_LABEL_PIXEL), which is the order of
    ``pixels`` (packed raster order) within the box: the label of a marker pixel is its rank there, read off the
    sorted list of all marker pixels rather than off the box (which cost as much as the transform itself)."""
    lost = ends[part_of[ends] == 0]
    if not len(lost):
        return
    height, width = packed.rows.shape
    sites = np.zeros(height * width, np.int32)
    sites[pixels] = part_of
    sites = sites.reshape(height, width)
    lost = lost[np.argsort(row[lost], kind="stable")]
    marked = np.flatnonzero(part_of)
    marked = marked[np.argsort(row[marked], kind="stable")]  # by clump, each clump's in raster order
    clumps, first = np.unique(row[lost], return_index=True)
    starts = np.searchsorted(row[marked], clumps)
    ey, ex = pixels[lost] // width, pixels[lost] % width
    for k, start, ends_here in zip(clumps.tolist(), starts.tolist(), np.split(np.arange(len(lost)), first[1:])):
        x, y, w, h = int(packed.ax[k]), int(packed.ay[k]), int(packed.box[k, 2]), int(packed.box[k, 3])
        _, nearest = cv2.distanceTransformWithLabels(cv2.compare(sites[y:y + h, x:x + w], 0, cv2.CMP_EQ), cv2.DIST_L2,
                                                     5, labelType=cv2.DIST_LABEL_PIXEL)
        rank = nearest[ey[ends_here] - y, ex[ends_here] - x] - 1
        part_of[lost[ends_here]] = part_of[marked[start + rank]]


def _merge(parts: np.ndarray, pixels: np.ndarray, position: np.ndarray, flat: np.ndarray, width: int,
           peak: np.ndarray, area: np.ndarray, smallest: np.ndarray, dynamics: np.ndarray,
           one_cell_area: np.ndarray) -> np.ndarray:
    """The h-maxima merges of all clumps' parts, highest saddle first, each by its class's ``dynamics`` and
    ``one_cell_area`` (per part: the two parts of a pair are of one clump); returns each part's root part."""
    # As Python floats: beside the map's float32 heights a numpy float64 moves the drop's comparison to float64,
    # where a drop of exactly the dynamics (2.8 − 1.0 against 1.8) is less than it and merges; a Python float is
    # compared in float32.
    dynamics, one_cell_area = dynamics.tolist(), one_cell_area.tolist()
    n_parts = len(peak)
    # Saddle between two neighbouring parts: the highest distance value on their common border (4-neighbours).
    keys, heights = [], []
    for step in (1, width):
        other = position[pixels + step]
        both = np.flatnonzero(other >= 0)
        a, b = parts[both], parts[other[both]]
        border = np.flatnonzero(a != b)  # only the border pixels are kept: a confluent frame has millions of pairs
        a, b, both = a[border], b[border], both[border]
        keys.append(np.minimum(a, b).astype(np.int64) * n_parts + np.maximum(a, b))
        heights.append(np.minimum(flat[pixels[both]], flat[pixels[both] + step]))
        del other, a, b, both
    # One saddle per touching pair, from the border pixels sorted by pair: memory grows with the border, not with
    # the square of the parts (a k × k table took 827 MB for a clump of 12 100 cells).
    key, s = np.concatenate(keys), np.concatenate(heights)
    order = np.argsort(key, kind="stable")
    key = key[order]
    first = np.flatnonzero(np.diff(key, prepend=key[:1] - 1))  # each pair's first border pixel
    pairs = key[first]
    saddles = np.maximum.reduceat(s[order], first) if len(first) else np.zeros(0, np.float32)
    root = np.arange(n_parts)

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    highest_first = np.argsort(-saddles, kind="stable")
    for pair, saddle in zip(pairs[highest_first].tolist(), saddles[highest_first].tolist()):
        i, j = find(pair // n_parts), find(pair % n_parts)
        if i != j and (min(peak[i], peak[j]) - saddle < dynamics[i] or area[i] < smallest[i]
                       or area[j] < smallest[j] or area[i] + area[j] <= one_cell_area[i]):
            root[j] = i
            peak[i], area[i], smallest[i] = max(peak[i], peak[j]), area[i] + area[j], min(smallest[i], smallest[j])
    return np.array([find(i) for i in range(n_parts)])


def _part_statistics(part: np.ndarray, y: np.ndarray, x: np.ndarray, row: np.ndarray, box: np.ndarray,
                     first_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ids, cv2-style statistics and centroids of parts 0..P-1 from their pixels' frame coordinates and component
    ``row``; each centroid is its clump box's corner plus the mean offset in the box (the rounding the counter has
    always had; the offsets' sum is Σx − area·corner, exact in float64, so the order of the pixels does not
    matter)."""
    n = int(part.max()) + 1
    stats, sums = pixel_statistics(part, y, x, n)
    area = stats[:, cv2.CC_STAT_AREA]
    part_row = np.zeros(n, np.int64)
    part_row[part] = row
    corner = box[part_row, :2]
    offset = sums - area[:, None] * corner  # Σ(x − corner), exact as Σx − area·corner
    stats = stats.astype(np.int32)
    centroids = corner + offset / area[:, None]
    return np.arange(first_id, first_id + n, dtype=np.int32), stats, centroids


def divide_large(found: Instances, factor: float, min_area: int, shape: tuple[int, int]) -> Instances:
    """Instances at least ``factor`` × the frame's median cell divided into round(area ÷ median) parts.

    Overlapping cells (blood smears thicker than a monolayer) leave no neck and no second distance maximum: the
    splitter sees one round-ish blob. Its area still tells how many cells it holds. The median is over instances
    of at least ``min_area`` clear of the frame edge, and needs MIN_SINGLES of them. A blob of more than MAX_PARTS
    cells' area is left whole: not a clump but a thick patch of smear or an artefact (and k-means on it would
    take seconds). Each blob is divided by k-means on its pixel coordinates, started from k slices along its long
    axis (deterministic), so the parts are compact and their centroids lie near the cells' centres.
    ``found.labels`` is relabelled in place.
    """
    median = _median_cell(found.stats, shape, min_area) if factor and len(found.ids) else None
    if median is None:
        return found
    area = found.stats[:, cv2.CC_STAT_AREA]
    large = np.flatnonzero((area >= factor * median) & (area < (MAX_PARTS + 0.5) * median))
    if not len(large):
        return found
    parts_of, next_id = [], int(found.labels.max()) + 1
    for row in large:
        x, y, w, h = found.stats[row, :4]
        ry, rx = np.nonzero(found.labels[y:y + h, x:x + w] == found.ids[row])
        part = _kmeans_parts(np.stack([rx, ry], 1).astype(np.float32), max(2, round(area[row] / median)))
        found.labels[y + ry, x + rx] = next_id + part
        parts_of.append(_part_statistics(part, y + ry, x + rx, np.zeros(len(part), np.intp),
                                         found.stats[row:row + 1, :4].astype(np.int64), next_id))
        next_id += len(parts_of[-1][0])
    return _replace(found, large, parts_of)


def _kmeans_parts(points: np.ndarray, k: int) -> np.ndarray:
    """Part 0..P-1 (P ≤ k, no part empty) of each point: k-means started from k equal slices along the points'
    long axis, so that the result does not depend on a random start."""
    centred = points - points.mean(0)
    axis = np.linalg.eigh(centred.T @ centred)[1][:, -1]
    start = (np.argsort(np.argsort(centred @ axis)) * k // len(points)).astype(np.int32).reshape(-1, 1)
    _, part, _ = cv2.kmeans(points, k, start, (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5), 1,
                            cv2.KMEANS_USE_INITIAL_LABELS)
    return np.unique(part.ravel(), return_inverse=True)[1]


def split_touching(binary: np.ndarray, radius_px: float, min_area: int = 0) -> np.ndarray:
    """uint16 instance labels 1..N of a mask with touching cells split; instances below ``min_area`` dropped."""
    found = find_instances(binary, radius_px, min_area)
    if min_area > 0:
        found = found.keep(np.flatnonzero(found.stats[:, cv2.CC_STAT_AREA] >= min_area))
    return found.dense_labels()


def fill_all_holes(binary: np.ndarray) -> np.ndarray:
    """Fill background regions not connected to the image border (flood fill from a padded corner)."""
    padded = cv2.copyMakeBorder(binary, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 255)
    holes = cv2.bitwise_not(flood)[1:-1, 1:-1]
    return cv2.bitwise_or(binary, holes)
