"""Filling the holes of a cell mask: a pale centre, a ring's inside, the centre of a cell the frame edge cuts —
but not the gaps that touching cells enclose, which would weld them into one blob.

Its own module because the label-free masks (`trainer.label_free`) fill holes too, before the auto-labeller
(`trainer.autolabel`) that imports them does.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from runtime.counting.instances import fill_all_holes


def fill_holes(binary: np.ndarray, max_area: float | None = None, min_solidity: float = 0.8) -> np.ndarray:
    """Fill background regions not connected to the image border.

    With ``max_area``, only the holes of a cell: smaller than that and roughly convex (solidity, area over
    convex-hull area, ≥ ``min_solidity``), like a pale centre. The gaps that three or four touching cells enclose
    are concave-sided and stay background: filled, they would weld the cells into one blob that no splitter
    can take apart again.
    """
    filled = fill_all_holes(binary)
    if max_area is None:
        return filled
    holes = cv2.bitwise_xor(filled, binary)
    contours, _ = cv2.findContours(holes, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    drop = [c for c in contours if not _cell_like(c, max_area, min_solidity)]
    cv2.drawContours(holes, drop, -1, 0, thickness=cv2.FILLED)
    return cv2.bitwise_or(cv2.bitwise_or(binary, holes), _edge_holes(filled, max_area, min_solidity))


def _cell_like(contour: np.ndarray, max_area: float, min_solidity: float) -> bool:
    """Whether a hole's outer contour is a pale centre's: smaller than a cell and roughly convex (its area, not the
    pixel count, is the measure, as for the hull)."""
    area = cv2.contourArea(contour)
    return len(contour) <= 4 or (area < max_area and area >= min_solidity * cv2.contourArea(cv2.convexHull(contour)))


def _edge_holes(filled: np.ndarray, max_area: float, min_solidity: float) -> np.ndarray:
    """The pale centres of cells cut by the frame edge (255): background regions that reach the edge, are
    otherwise enclosed, are cell-like as interior holes must be (`_cell_like`), and meet one piece of foreground
    in their bounding box grown by a pixel. A cut cell's rim is a "C" whose opening the frame closes, one arc
    around its centre; the gap the edge closes between two touching cells is concave-sided, which the solidity
    test catches (touching cells are one piece there too). The one-piece test decides mainly where a speck lies
    inside a cut cell's centre, a second piece, and leaves that centre open: a known flaw, kept because the
    bundled model's training labels were made with it (without it 66 of the 668 Chula training labels change).
    Unfilled, the rim is a thin arc that the thin-object rejection drops with its cell.

    Such a centre lies within a cell's diameter (at most 2·√(max_area/π)) of the edge, so only strips that wide
    along the four sides are searched, each turned to have the edge as its first row: a hole is a region there
    that touches the first row and not the last (labelling the whole frame's background costs 10× more)."""
    h, w = filled.shape
    out = np.zeros_like(filled)
    band = min(h, w, int(2 * math.sqrt(max_area / math.pi)) + 2)
    for mask, found in ((filled[:band], out[:band]), (filled[::-1][:band], out[::-1][:band]),
                        (filled.T[:band], out.T[:band]), (filled.T[::-1][:band], out.T[::-1][:band])):
        n, regions, stats, _ = cv2.connectedComponentsWithStats(cv2.bitwise_not(np.ascontiguousarray(mask)), 4,
                                                                cv2.CV_32S)
        y, height, area = stats[:, cv2.CC_STAT_TOP], stats[:, cv2.CC_STAT_HEIGHT], stats[:, cv2.CC_STAT_AREA]
        for i in np.flatnonzero((y == 0) & (y + height < band) & (area < max_area) & (np.arange(n) > 0)):
            x, _, width, _ = stats[i, :4]
            x0, x1, y1 = max(0, x - 1), min(mask.shape[1], x + width + 1), height[i] + 1
            hole = (regions[:y1, x0:x1] == i).astype(np.uint8)
            contours, _ = cv2.findContours(hole, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            if not _cell_like(contours[0], max_area, min_solidity):
                continue
            _, pieces = cv2.connectedComponents(np.ascontiguousarray(mask[:y1, x0:x1]), connectivity=8)
            rim = pieces[cv2.dilate(hole, None) > hole]  # the hole's 8-neighbours (OpenCV's default 3×3 element)
            if len(np.unique(rim[rim > 0])) == 1:
                found[:y1, x0:x1][hole > 0] = 255
    return out
