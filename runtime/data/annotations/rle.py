"""Run-length encodings of cell masks: COCO's (through pycocotools, the reference implementation) and CVAT's.

pycocotools is imported on first use, so `import runtime` keeps needing only numpy and OpenCV.
"""
from __future__ import annotations

import numpy as np

from runtime.errors import CscError


def _coco():
    try:
        from pycocotools import mask
    except ImportError:
        raise CscError("COCO polygons and RLE need pycocotools, which is not installed",
                       fix="pip install pycocotools (a dependency of auto-csc; a --no-deps install skips it)") from None
    return mask


def coco_mask(polygons_or_rle: list | dict, h: int, w: int) -> np.ndarray:
    """bool (h, w) mask of COCO polygons (flat x, y lists on pixel corners) or an RLE dict, as pycocotools draws it."""
    mask = _coco()
    if isinstance(polygons_or_rle, dict) and isinstance(polygons_or_rle["counts"], str):
        rle = {"size": list(polygons_or_rle["size"]), "counts": polygons_or_rle["counts"].encode("ascii")}
    else:  # polygons, or an uncompressed RLE (counts as a list)
        rles = mask.frPyObjects(polygons_or_rle, h, w)
        rle = mask.merge(rles) if isinstance(rles, list) else rles
    return mask.decode(rle).astype(bool)


def coco_rle(crop: np.ndarray, top: int, left: int, h: int, w: int) -> dict:
    """COCO compressed RLE, as JSON-ready ``{"size": [h, w], "counts": str}``, of a bool crop lying at (top, left)
    in an h × w image. The runs are found in the crop alone (a full-frame mask per cell took 16 s for 886 cells of
    a 2048² frame): in COCO's column-major order the frame's runs change only inside the crop's columns, where a
    change at crop row r of column c starts a run at frame pixel (left + c) · h + top + r."""
    ch, cw = crop.shape
    padded = np.zeros((ch + 2, cw), np.int8)  # a background row above and below: each column starts and ends off
    padded[1:-1] = crop
    col, row = np.divmod(np.flatnonzero(np.diff(padded.ravel(order="F"))) + 1, ch + 2)
    starts = (left + col) * h + top + row - 1
    # On the frame's bottom row a column's run ends where the next column's begins: a cell on the bottom and the
    # top row there goes on in one run (the two changes cancel), and on the frame's last pixel no run follows.
    twin = np.r_[starts[1:] == starts[:-1], False]
    starts = starts[~twin & ~np.r_[False, twin[:-1]] & (starts < h * w)]
    counts = np.diff(np.concatenate([[0], starts, [h * w]]))
    rle = _coco().frPyObjects({"size": [h, w], "counts": counts.tolist()}, h, w)
    return {"size": [h, w], "counts": rle["counts"].decode("ascii")}


def cvat_rle(crop: np.ndarray) -> list[int]:
    """CVAT's mask RLE: alternating run lengths over the crop in row-major order, starting with a background run."""
    flat = crop.ravel().astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat.size and flat[0] else runs


def cvat_mask(runs: list[int], height: int, width: int) -> np.ndarray:
    """bool (height, width) crop from CVAT's mask RLE; the runs must cover the crop exactly."""
    if sum(runs) != height * width or any(r < 0 for r in runs):
        raise ValueError(f"the run lengths add up to {sum(runs)}, not {width}×{height} = {width * height}")
    values = np.arange(len(runs)) % 2 == 1
    return np.repeat(values, runs).reshape(height, width)
