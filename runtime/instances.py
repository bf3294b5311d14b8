"""Cells of one class as instances: connected components, optionally with touching cells split.

One implementation shared by the auto-labeller (instance labels for training data) and the runtime's counting
(a clump of three RBCs counts as three).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

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

    def dense_labels(self) -> np.ndarray:
        """uint16 labels 1..N in row order, instances not kept set to 0 (like a hand-made instance mask)."""
        if len(self.ids) > 65535:
            raise ValueError("more than 65535 instances do not fit uint16 labels")
        lut = np.zeros(int(self.labels.max()) + 1, np.uint16)
        lut[self.ids] = np.arange(1, len(self.ids) + 1, dtype=np.uint16)
        return lut[self.labels]


def find_instances(binary: np.ndarray, radius_px: float | None = None, min_area: int = 0,
                   one_cell: float = 0.0) -> Instances:
    """Connected components (8-connected) of a boolean/uint8 mask; with ``radius_px``, touching cells split.

    Splitting follows the distance transform's h-maxima, the criterion of a watershed with dynamics: markers are
    distance maxima of cell-like height (≥ PEAK_HEIGHT·r); a clump with several is divided between them by a
    watershed on the distance map (cv2.watershed itself floods by image gradients, which a binary mask does not
    have; see `_split_clump`); then neighbouring parts merge again, highest saddle first, when the lower of their two peaks rises less than
    DYNAMICS·r above the saddle between them (one cell's ridge: an ellipse, a ring, a lobed outline), or when one
    of them is smaller than ``min_area`` (a part of a cell is never dropped as debris: a clump loses no pixels),
    or, with ``one_cell``, when the two parts together are no larger than ``one_cell`` × the median area of the
    frame's single cells (see `runtime.counting.ONE_CELL`; merges go pairwise, highest saddle first, so a larger
    clump can end with one such merged part beside others).
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
    dynamics = max(DYNAMICS_FLOOR, DYNAMICS * radius_px)
    one_cell_area = _one_cell_area(stats, n_markers[1:] == 1, fg.shape, min_area, one_cell)
    new_ids, new_stats, new_centroids = [], [], []
    next_id = n_comp
    for c in clumps:
        x, y, w, h = stats[c - 1, :4]
        box = (slice(y, y + h), slice(x, x + w))
        region = comp[box] == c
        parts = _split_clump(region, peaks[box] > 0, markers[box], dist[box], dynamics, min_area, one_cell_area)
        ry, rx = np.nonzero(region)
        part = parts[ry, rx]
        n_parts = int(part.max())
        comp[box][ry, rx] = next_id + part - 1
        for j in range(1, n_parts + 1):
            jy, jx = ry[part == j], rx[part == j]
            new_ids.append(next_id + j - 1)
            new_stats.append([x + jx.min(), y + jy.min(), jx.max() - jx.min() + 1, jy.max() - jy.min() + 1, jy.size])
            new_centroids.append([x + jx.mean(), y + jy.mean()])
        next_id += n_parts
    whole = np.ones(len(ids), bool)
    whole[clumps - 1] = False
    return Instances(comp,
                     np.concatenate([ids[whole], np.asarray(new_ids, np.int32)]),
                     np.concatenate([stats[whole], np.asarray(new_stats, np.int32).reshape(-1, 5)]),
                     np.concatenate([centroids[whole], np.asarray(new_centroids, np.float64).reshape(-1, 2)]))


def _one_cell_area(stats: np.ndarray, single: np.ndarray, shape: tuple[int, int], min_area: int,
                   factor: float) -> float:
    """``factor`` × the median area of this frame's single cells — components with exactly one marker, above the
    minimum area and clear of the frame edge (a cut cell shows only part of its area) — or 0 where fewer than
    MIN_SINGLES of them leave no reliable median."""
    if not factor:
        return 0.0
    x, y, w, h, area = (stats[:, i] for i in range(5))
    inside = (x > 0) & (y > 0) & (x + w < shape[1]) & (y + h < shape[0])
    areas = area[single & inside & (area >= min_area)]
    return factor * float(np.median(areas)) if len(areas) >= MIN_SINGLES else 0.0


_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


def _split_clump(region: np.ndarray, peaks: np.ndarray, markers: np.ndarray, dist: np.ndarray, dynamics: float,
                 min_area: int, one_cell_area: float = 0.0) -> np.ndarray:
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
    # Saddle between two neighbouring parts: the highest distance value on their common border (4-neighbours).
    a = np.concatenate([parts[:, :-1].ravel(), parts[:-1, :].ravel()])
    b = np.concatenate([parts[:, 1:].ravel(), parts[1:, :].ravel()])
    s = np.concatenate([np.minimum(dist[:, :-1], dist[:, 1:]).ravel(), np.minimum(dist[:-1, :], dist[1:, :]).ravel()])
    border = (a != b) & (a > 0) & (b > 0)
    key = np.minimum(a[border], b[border]) * k + np.maximum(a[border], b[border])
    saddle = np.zeros(k * k, np.float32)
    np.maximum.at(saddle, key, s[border])
    touching = np.flatnonzero(saddle)
    root = np.arange(k)

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    for pair in touching[np.argsort(-saddle[touching], kind="stable")]:
        i, j = find(pair // k), find(pair % k)
        if i != j and (min(peak[i], peak[j]) - saddle[pair] < dynamics or min(area[i], area[j]) < min_area
                       or area[i] + area[j] <= one_cell_area):
            root[j] = i
            peak[i], area[i] = max(peak[i], peak[j]), area[i] + area[j]
    final = np.array([find(i) for i in range(k)])
    _, dense = np.unique(final[1:], return_inverse=True)
    lut = np.concatenate([[0], dense + 1]).astype(np.int32)
    return lut[parts]


def split_touching(binary: np.ndarray, radius_px: float, min_area: int = 0) -> np.ndarray:
    """uint16 instance labels 1..N of a mask with touching cells split; instances below ``min_area`` dropped."""
    found = find_instances(binary, radius_px, min_area)
    if min_area > 0:
        found = found.keep(np.flatnonzero(found.stats[:, cv2.CC_STAT_AREA] >= min_area))
    return found.dense_labels()
