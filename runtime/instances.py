"""Cells of one class as instances: connected components, optionally with touching cells split.

One implementation shared by the auto-labeller (instance labels for training data) and the runtime's counting
(a clump of three RBCs counts as three).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from runtime.errors import CscError

# Splitting, relative to the smallest expected cell radius r (see `find_instances`): a marker is a distance
# maximum at least PEAK_HEIGHT·r high (lower ridges are fibres or thin rims, not cell centres), found within a
# window of WINDOW·r; two markers stay apart only when each rises DYNAMICS·r (at least half a pixel) above the
# saddle between them. Tuned on real stained smears (Chula RBC-12 images outside the evaluation subset) and
# checked on hand-made shapes: two touching discs split, an ellipse of axis ratio 1.8 and a ring stay whole.
PEAK_HEIGHT = 0.35
WINDOW = 0.5
DYNAMICS = 0.08
DYNAMICS_FLOOR = 0.5  # px: below it, distance-map noise
MIN_SINGLES = 5
# `divide_large` divides a blob into at most this many cells (the largest clumps in the Chula and BCCD training
# images hold 8 and 11 cells' area).
MAX_PARTS = 12
# A part cut by the frame edge may show any fraction of its cell: such parts are kept down to this fraction of the
# minimum area (debris elsewhere). Labelling and counting both apply it (`large_enough`).
CUT_CELL_FRACTION = 0.25


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
                     cut_fraction: float = CUT_CELL_FRACTION) -> np.ndarray:
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
                   one_cell: float = 0.0, dynamics: float = DYNAMICS,
                   cut_fraction: float = CUT_CELL_FRACTION) -> Instances:
    """Connected components (8-connected) of a boolean/uint8 mask; with ``radius_px``, touching cells split.

    Splitting follows the distance transform's h-maxima, the criterion of a watershed with dynamics: markers are
    distance maxima of cell-like height (≥ PEAK_HEIGHT·r); a clump with several is divided between them by a
    watershed on the distance map (cv2.watershed itself floods by image gradients, which a binary mask does not
    have; see `_split_clump`); then neighbouring parts merge again, highest saddle first, when the lower of their
    two peaks rises less than ``dynamics``·r above the saddle between them (one cell's ridge: an ellipse, a ring, a
    lobed outline), or when one of them is smaller than ``min_area`` (a part of a cell is never dropped as debris:
    a clump loses no pixels; a part on the frame edge needs only ``cut_fraction`` of it, the rule `large_enough`
    applies to a cut cell standing alone), or, with ``one_cell``, when the two parts together are no larger than
    ``one_cell`` × the median area of the frame's single cells (see `runtime.counting.ONE_CELL`; merges go pairwise,
    highest saddle first, so a larger clump can end with one such merged part beside others).
    Only clumps are split, on their bounding boxes, and only their statistics are recomputed: the whole-frame
    work is one labelling, one distance transform, one dilation.
    """
    fg = np.ascontiguousarray(binary, dtype=np.uint8)
    n_comp, comp, stats, centroids = cv2.connectedComponentsWithStatsWithAlgorithm(fg, 8, cv2.CV_32S, cv2.CCL_GRANA)
    ids = np.arange(1, n_comp, dtype=np.int32)
    stats, centroids = stats[1:], centroids[1:]
    if radius_px is None or n_comp <= 1:
        return Instances(comp, ids, stats, centroids)
    dist = cv2.distanceTransform(fg, cv2.DIST_L2, 5)
    window = max(1, int(round(WINDOW * radius_px)))
    # A square window: OpenCV dilates with rectangles in separable passes, an ellipse costs ~10× more.
    peaks = cv2.compare(dist, cv2.dilate(dist, np.ones((2 * window + 1,) * 2, np.uint8)) - 1e-3, cv2.CMP_GE)
    peaks &= cv2.compare(dist, PEAK_HEIGHT * radius_px, cv2.CMP_GE)
    points = cv2.findNonZero(peaks)  # sparse: far cheaper than np.nonzero over the frame
    if points is None:
        return Instances(comp, ids, stats, centroids)
    _, markers = cv2.connectedComponents(peaks, connectivity=8)
    points = points.reshape(-1, 2)  # (N, 1, 2) in OpenCV 4, (N, 2) in 5
    px, py = points[:, 0], points[:, 1]
    pairs = np.unique(np.stack([comp[py, px], markers[py, px]]), axis=1)
    n_markers = np.bincount(pairs[0], minlength=n_comp)
    clumps = np.flatnonzero(n_markers > 1)
    if not clumps.size:
        return Instances(comp, ids, stats, centroids)
    dynamics = max(DYNAMICS_FLOOR, dynamics * radius_px)
    one_cell_area = _one_cell_area(stats, n_markers[1:] == 1, fg.shape, min_area, one_cell)
    parts_of, next_id = [], n_comp
    for c in clumps:
        x, y, w, h = stats[c - 1, :4]
        box = (slice(y, y + h), slice(x, x + w))
        region = comp[box] == c
        edges = (y == 0, x + w == fg.shape[1], y + h == fg.shape[0], x == 0)  # top, right, bottom, left
        parts = _split_clump(region, peaks[box] > 0, markers[box], dist[box], dynamics, min_area, one_cell_area,
                             edges, cut_fraction)
        ry, rx = np.nonzero(region)
        parts_of.append(_relabel(comp, x, y, ry, rx, parts[ry, rx] - 1, next_id))
        next_id += len(parts_of[-1][0])
    return _replace(Instances(comp, ids, stats, centroids), clumps - 1, parts_of)


def _relabel(labels: np.ndarray, x: int, y: int, ry: np.ndarray, rx: np.ndarray, part: np.ndarray,
             first_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Give an instance's pixels (``ry``, ``rx`` in its box at ``x``, ``y``) the ids ``first_id`` + ``part`` (parts
    0..P-1, each non-empty) in ``labels``; returns the parts' ids, cv2-style statistics and centroids."""
    labels[y + ry, x + rx] = first_id + part
    n = int(part.max()) + 1
    area = np.bincount(part, minlength=n)
    x0, y0, x1, y1 = np.full(n, rx.max()), np.full(n, ry.max()), np.zeros(n, np.int64), np.zeros(n, np.int64)
    np.minimum.at(x0, part, rx), np.minimum.at(y0, part, ry)
    np.maximum.at(x1, part, rx), np.maximum.at(y1, part, ry)
    stats = np.stack([x + x0, y + y0, x1 - x0 + 1, y1 - y0 + 1, area], 1).astype(np.int32)
    centroids = np.stack([x + np.bincount(part, rx, n) / area, y + np.bincount(part, ry, n) / area], 1)
    return np.arange(first_id, first_id + n, dtype=np.int32), stats, centroids


def _replace(found: Instances, rows: np.ndarray, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Instances:
    """``found`` with its ``rows`` replaced by the parts `_relabel` made of them (appended at the end)."""
    whole = np.ones(len(found.ids), bool)
    whole[rows] = False
    return Instances(found.labels, np.concatenate([found.ids[whole], *(p[0] for p in parts)]),
                     np.concatenate([found.stats[whole], *(p[1] for p in parts)]),
                     np.concatenate([found.centroids[whole], *(p[2] for p in parts)]))


def _one_cell_area(stats: np.ndarray, single: np.ndarray, shape: tuple[int, int], min_area: int,
                   factor: float) -> float:
    """``factor`` × the median area of this frame's single cells — components with exactly one marker (see
    `_median_cell`) — or 0 where there are too few of them."""
    median = _median_cell(stats, shape, min_area, single) if factor else None
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


_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


def _split_clump(region: np.ndarray, peaks: np.ndarray, markers: np.ndarray, dist: np.ndarray, dynamics: float,
                 min_area: int, one_cell_area: float = 0.0, edges: tuple[bool, bool, bool, bool] = (False,) * 4,
                 cut_fraction: float = CUT_CELL_FRACTION) -> np.ndarray:
    """Part labels 1..P (0 outside) of one clump's bounding box: a watershed on the distance map by drainage —
    every pixel follows its steepest uphill neighbour to a maximum, each maximum belongs to its nearest marker —
    then h-maxima merges. Drainage keeps part boundaries on the saddle lines between cells; a nearest-marker
    (Voronoi) split would let a marker near a neck claim pixels of the neighbouring cell."""
    h, w = region.shape
    flow = np.where(region, dist, -1.0).astype(np.float32)
    padded = cv2.copyMakeBorder(flow, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=-1.0)
    index = np.arange(h * w, dtype=np.int64).reshape(h, w)
    best, target = flow.copy(), index.copy()
    for dy, dx in _NEIGHBOURS:
        neighbour = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        higher = neighbour > best
        best = np.where(higher, neighbour, best)
        target = np.where(higher, index + dy * w + dx, target)
    target = target.ravel()
    for _ in range(max(1, int(h * w).bit_length())):  # pointer jumping: each step doubles the path followed
        target = target[target]
    sites = peaks & region
    # Each maximum (where drainage ends) goes to its nearest marker; a plateau marker is one part.
    _, nearest = cv2.distanceTransformWithLabels((~sites).astype(np.uint8), cv2.DIST_L2, 5,
                                                 labelType=cv2.DIST_LABEL_PIXEL)
    sy, sx = np.nonzero(sites)
    _, local = np.unique(markers[sy, sx], return_inverse=True)
    k = int(local.max()) + 2  # parts 1..k-1, 0 outside the clump
    site_to_part = np.zeros(int(nearest.max()) + 1, np.int32)
    site_to_part[nearest[sy, sx]] = local + 1
    part_of_pixel = site_to_part[nearest.ravel()]
    parts = np.where(region, part_of_pixel[target].reshape(h, w), 0)
    peak = np.zeros(k, np.float32)
    np.maximum.at(peak, local + 1, dist[sy, sx])
    area = np.bincount(parts.ravel(), minlength=k)
    # A part on the frame edge may be the visible piece of a cut cell: it needs only cut_fraction of min_area.
    cut = np.zeros(k, bool)
    for touches, line in zip(edges, (parts[0], parts[:, -1], parts[-1], parts[:, 0])):
        if touches:
            cut[line] = True
    cut[0] = False
    smallest = np.where(cut, cut_fraction * min_area, min_area)
    # Saddle between two neighbouring parts: the highest distance value on their common border (4-neighbours).
    a = np.concatenate([parts[:, :-1].ravel(), parts[:-1, :].ravel()])
    b = np.concatenate([parts[:, 1:].ravel(), parts[1:, :].ravel()])
    s = np.concatenate([np.minimum(dist[:, :-1], dist[:, 1:]).ravel(), np.minimum(dist[:-1, :], dist[1:, :]).ravel()])
    border = (a != b) & (a > 0) & (b > 0)
    # One saddle per touching pair, from the border pixels sorted by pair: memory grows with the border, not with
    # the square of the parts (a k × k table took 827 MB for a clump of 12 100 cells).
    key = np.minimum(a[border], b[border]).astype(np.int64) * k + np.maximum(a[border], b[border])
    order = np.argsort(key, kind="stable")
    pairs, first = np.unique(key[order], return_index=True)
    saddles = np.maximum.reduceat(s[border][order], first) if len(first) else np.zeros(0, np.float32)
    touching = saddles > 0
    pairs, saddles = pairs[touching], saddles[touching]
    root = np.arange(k)

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    highest_first = np.argsort(-saddles, kind="stable")
    for pair, saddle in zip(pairs[highest_first], saddles[highest_first]):
        i, j = find(pair // k), find(pair % k)
        if i != j and (min(peak[i], peak[j]) - saddle < dynamics or area[i] < smallest[i]
                       or area[j] < smallest[j] or area[i] + area[j] <= one_cell_area):
            root[j] = i
            peak[i], area[i], smallest[i] = max(peak[i], peak[j]), area[i] + area[j], min(smallest[i], smallest[j])
    final = np.array([find(i) for i in range(k)])
    _, dense = np.unique(final[1:], return_inverse=True)
    lut = np.concatenate([[0], dense + 1]).astype(np.int32)
    return lut[parts]


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
        parts_of.append(_relabel(found.labels, x, y, ry, rx, part, next_id))
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
