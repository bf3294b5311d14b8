"""Cells of one class as instances: connected components, optionally with touching cells split.

One implementation shared by the auto-labeller (instance labels for training data) and the runtime's counting
(a clump of three RBCs counts as three).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


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


def find_instances(binary: np.ndarray, radius_px: float | None = None) -> Instances:
    """Connected components (8-connected) of a boolean/uint8 mask; with ``radius_px``, touching cells split.

    Splitting: markers are the local maxima of the Euclidean distance transform within a square window of 0.7 ×
    the smallest expected cell radius: two touching discs of at least that radius have their centres further
    apart than the window, so they get a marker each, while a single disc has one maximum. In a clump with several
    markers each pixel joins its nearest marker (a Voronoi split, which for touching discs is the line through
    the neck — what a watershed on the distance map gives; cv2.watershed itself floods in the order of image
    gradients, which a binary mask does not have). Only clumps are split, on their bounding boxes, and only
    their statistics are recomputed: the whole-frame work is one labelling, one distance transform, one dilation.
    """
    fg = np.ascontiguousarray(binary, dtype=np.uint8)
    n_comp, comp, stats, centroids = cv2.connectedComponentsWithStatsWithAlgorithm(fg, 8, cv2.CV_32S, cv2.CCL_GRANA)
    ids = np.arange(1, n_comp, dtype=np.int32)
    stats, centroids = stats[1:], centroids[1:]
    if radius_px is None or n_comp <= 1:
        return Instances(comp, ids, stats, centroids)
    dist = cv2.distanceTransform(fg, cv2.DIST_L2, 5)
    window = max(1, int(round(0.7 * radius_px)))
    # A square window: OpenCV dilates with rectangles in separable passes, an ellipse costs ~10× more.
    peaks = ((dist >= cv2.dilate(dist, np.ones((2 * window + 1,) * 2, np.uint8)) - 1e-3) & (fg > 0)).astype(np.uint8)
    _, markers = cv2.connectedComponents(peaks, connectivity=8)
    points = cv2.findNonZero(peaks)  # sparse: far cheaper than np.nonzero over the frame
    if points is None:
        return Instances(comp, ids, stats, centroids)
    points = points.reshape(-1, 2)  # (N, 1, 2) in OpenCV 4, (N, 2) in 5
    px, py = points[:, 0], points[:, 1]
    pairs = np.unique(np.stack([comp[py, px], markers[py, px]]), axis=1)
    clumps = np.flatnonzero(np.bincount(pairs[0], minlength=n_comp) > 1)
    if not clumps.size:
        return Instances(comp, ids, stats, centroids)
    new_ids, new_stats, new_centroids = [], [], []
    next_id = n_comp
    for c in clumps:
        x, y, w, h = stats[c - 1, :4]
        box = (slice(y, y + h), slice(x, x + w))
        region = comp[box] == c
        sites = (peaks[box] > 0) & region
        # Nearest site pixel for every pixel of the box; one new id per marker (a plateau is one marker).
        _, nearest = cv2.distanceTransformWithLabels((~sites).astype(np.uint8), cv2.DIST_L2, 5,
                                                     labelType=cv2.DIST_LABEL_PIXEL)
        sy, sx = np.nonzero(sites)
        _, local = np.unique(markers[box][sy, sx], return_inverse=True)
        site_to_local = np.zeros(int(nearest.max()) + 1, np.int32)
        site_to_local[nearest[sy, sx]] = local
        ry, rx = np.nonzero(region)
        part = site_to_local[nearest[ry, rx]]
        comp[box][ry, rx] = next_id + part
        for j in range(int(local.max()) + 1):
            jy, jx = ry[part == j], rx[part == j]
            new_ids.append(next_id + j)
            new_stats.append([x + jx.min(), y + jy.min(), jx.max() - jx.min() + 1, jy.max() - jy.min() + 1, jy.size])
            new_centroids.append([x + jx.mean(), y + jy.mean()])
        next_id += int(local.max()) + 1
    whole = np.ones(len(ids), bool)
    whole[clumps - 1] = False
    return Instances(comp,
                     np.concatenate([ids[whole], np.asarray(new_ids, np.int32)]),
                     np.concatenate([stats[whole], np.asarray(new_stats, np.int32).reshape(-1, 5)]),
                     np.concatenate([centroids[whole], np.asarray(new_centroids, np.float64).reshape(-1, 2)]))


def split_touching(binary: np.ndarray, radius_px: float, min_area: int = 0) -> np.ndarray:
    """uint16 instance labels 1..N of a mask with touching cells split; instances below ``min_area`` dropped."""
    found = find_instances(binary, radius_px)
    if min_area > 0:
        found = found.keep(np.flatnonzero(found.stats[:, cv2.CC_STAT_AREA] >= min_area))
    return found.dense_labels()
