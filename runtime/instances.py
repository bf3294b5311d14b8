"""Splitting touching cells of one class into instances: distance transform + marker watershed.

One implementation shared by the auto-labeller (instance labels for training data) and the runtime's counting
(a clump of three RBCs counts as three).
"""
from __future__ import annotations

import cv2
import numpy as np


def split_touching(binary: np.ndarray, radius_px: float, min_area: int = 0) -> np.ndarray:
    """uint16 instance labels for a boolean/uint8 foreground mask.

    Markers are the local maxima of the Euclidean distance transform within a (square) window of 0.7 × the smallest
    expected cell radius: two touching discs of at least that radius have their centres further apart than the
    window, so they get a marker each, while a single disc has one maximum. In a clump with several markers
    each pixel joins its nearest marker (a Voronoi split, which for touching discs is the line through the
    neck — what a watershed on the distance map gives; cv2.watershed itself floods in the order of image
    gradients, which a binary mask does not have). Only clumps are split, on their bounding box, because the
    labelled distance transform is the expensive step.
    """
    fg = np.ascontiguousarray(binary, dtype=np.uint8)
    fg[fg > 0] = 1
    n_comp, comp, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(fg, 8, cv2.CV_32S, cv2.CCL_GRANA)
    if n_comp <= 1:
        return np.zeros(fg.shape, np.uint16)
    dist = cv2.distanceTransform(fg, cv2.DIST_L2, 5)
    window = max(1, int(round(0.7 * radius_px)))
    # A square window: OpenCV dilates with rectangles in separable passes, an ellipse costs ~10× more.
    kernel = np.ones((2 * window + 1, 2 * window + 1), np.uint8)
    peaks = ((dist >= cv2.dilate(dist, kernel) - 1e-3) & (fg > 0)).astype(np.uint8)
    _, markers = cv2.connectedComponents(peaks, connectivity=8)
    py, px = np.nonzero(peaks)
    pairs = np.unique(np.stack([comp[py, px], markers[py, px]]), axis=1)
    markers_per_comp = np.bincount(pairs[0], minlength=n_comp)

    labels = comp.astype(np.int32)
    next_id = n_comp
    for c in np.flatnonzero(markers_per_comp > 1):
        x, y, w, h = stats[c, :4]
        box = (slice(y, y + h), slice(x, x + w))
        region = comp[box] == c
        sites = (peaks[box] > 0) & region
        # Nearest site pixel for every pixel of the box; one id per marker (a plateau is one marker).
        _, nearest = cv2.distanceTransformWithLabels((~sites).astype(np.uint8), cv2.DIST_L2, 5,
                                                     labelType=cv2.DIST_LABEL_PIXEL)
        sy, sx = np.nonzero(sites)
        marker_ids = markers[box][sy, sx]
        _, dense = np.unique(marker_ids, return_inverse=True)
        site_to_new = np.zeros(int(nearest.max()) + 1, np.int32)
        site_to_new[nearest[sy, sx]] = next_id + dense
        crop = labels[box]
        crop[region] = site_to_new[nearest[region]]
        next_id += int(dense.max()) + 1
    if min_area > 0:
        areas = np.bincount(labels.ravel())
        small = areas < min_area
        small[0] = False
        if small.any():
            labels[small[labels]] = 0
    return relabel_sequential(labels)


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 1..N in order of first appearance of their ids (dense, like a hand-made mask)."""
    present = np.bincount(labels.ravel()) > 0
    if present.size > 65536:
        raise ValueError("more than 65535 instances do not fit uint16 labels")
    present[0] = False
    lut = np.zeros(present.size, np.uint16)
    lut[present] = np.arange(1, int(present.sum()) + 1, dtype=np.uint16)
    return lut[labels]
