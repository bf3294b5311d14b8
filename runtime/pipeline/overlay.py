"""Drawing class maps over frames for people: class-coloured outlines, a legend with counts and FPS."""
from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

from runtime.classes import CLASS_NAMES

# BGR outline colour per class id: RBC red, macrophage cyan (readable on a pale brightfield background).
CLASS_COLOURS = np.array([[0, 0, 0], [40, 40, 230], [230, 200, 0]] + [[0, 200, 0]] * 253, np.uint8)
_KERNEL = np.ones((3, 3), np.uint8)
_LUT3 = CLASS_COLOURS.reshape(256, 1, 3)


class OverlayRenderer:
    """Reusable renderer: buffers are allocated once per frame size, not per frame."""

    def __init__(self, class_names: tuple[str, ...] = CLASS_NAMES, thickness: int = 1):
        self.class_names = class_names
        self.thickness = thickness
        self._shape: tuple[int, int] | None = None

    def _buffers(self, shape: tuple[int, int]) -> None:
        if self._shape != shape:
            self._shape = shape
            self._eroded = np.empty(shape, np.uint8)
            self._dilated = np.empty(shape, np.uint8)
            self._edge = np.empty(shape, np.uint8)
            self._dilated3 = np.empty((*shape, 3), np.uint8)
            self._colour = np.empty((*shape, 3), np.uint8)

    def outlines(self, frame: np.ndarray, class_map: np.ndarray, out: np.ndarray | None = None,
                 instances: np.ndarray | None = None) -> np.ndarray:
        """Colour the pixels where the class changes (a morphological gradient of the class map), and, given an
        instance map, where the cell changes: touching cells of one class are otherwise one blob."""
        self._buffers(class_map.shape)
        out = frame.copy() if out is None else out
        kernel = _KERNEL if self.thickness <= 1 else np.ones((2 * self.thickness + 1,) * 2, np.uint8)
        cv2.erode(class_map, kernel, dst=self._eroded)
        cv2.dilate(class_map, kernel, dst=self._dilated)
        cv2.compare(self._eroded, self._dilated, cv2.CMP_NE, dst=self._edge)
        if instances is not None:  # float32 holds instance ids exactly up to 2**24 (OpenCV erodes no int32)
            ids = instances.astype(np.float32)
            self._edge |= cv2.compare(cv2.erode(ids, kernel), cv2.dilate(ids, kernel), cv2.CMP_NE)
        # Colour every pixel by its (dilated) class through a lookup table, then copy only the edge pixels:
        # whole-image OpenCV calls instead of numpy boolean indexing, which costs more than the rest together.
        cv2.merge([self._dilated] * 3, dst=self._dilated3)
        cv2.LUT(self._dilated3, _LUT3, dst=self._colour)
        cv2.copyTo(self._colour, self._edge, out)
        return out

    def legend(self, image: np.ndarray, counts: Mapping[str, float], fps: float | None = None) -> np.ndarray:
        """Per-class counts (and FPS) in a box at the top-left corner, drawn in place."""
        lines = [(f"{name}: {_fmt(counts.get(name, 0))}", CLASS_COLOURS[i]) for i, name in enumerate(self.class_names) if i]
        if fps is not None:
            lines.append((f"{fps:.1f} FPS", np.array([255, 255, 255], np.uint8)))
        scale = max(0.4, image.shape[0] / 1000)
        height = int(22 * scale / 0.5)
        width = int(max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for t, _ in lines)) + 12
        box = image[: height * len(lines) + 8, : width]
        box[:] = (box * 0.35).astype(np.uint8)
        for row, (text, colour) in enumerate(lines):
            y = height * (row + 1)
            cv2.putText(image, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, tuple(int(c) for c in colour), 1, cv2.LINE_AA)
        return image

    def ids(self, image: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """Cell ids at their centroids (a per-cell table from runtime.counting.counter), drawn in place."""
        for cell in cells:
            colour = tuple(int(c) for c in CLASS_COLOURS[cell["class_id"]])
            cv2.putText(image, str(int(cell["id"])), (int(cell["cx"]) - 4, int(cell["cy"]) + 4),
                        cv2.FONT_HERSHEY_PLAIN, 0.8, colour, 1, cv2.LINE_AA)
        return image

    def marks(self, frame: np.ndarray, points: Mapping[str, np.ndarray],
              boxes: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Count-only annotations on a copy of the frame: a cross per point, a rectangle per box, class-coloured."""
        out = frame.copy()
        size, thick = max(6, out.shape[0] // 40), max(1, out.shape[0] // 240)
        for name, pts in (points if boxes is None else boxes).items():
            colour = tuple(int(c) for c in CLASS_COLOURS[self.class_names.index(name)])
            for row in np.rint(pts).astype(int):
                if boxes is not None:
                    cv2.rectangle(out, tuple(row[:2]), tuple(row[2:]), colour, thick)
                else:
                    cv2.drawMarker(out, tuple(row), colour, cv2.MARKER_CROSS, size, thick)
        return out

    def preview(self, image: np.ndarray, class_map: np.ndarray, instances: np.ndarray | None = None,
                cell: int = 256) -> np.ndarray:
        """A grid tile of a labelled image: image and labels fitted to ``cell`` px first, then the outlines (and the
        lines between touching cells) drawn at that size, where they stay one visible pixel wide."""
        def labels(m: np.ndarray) -> np.ndarray:
            return fit(m, cell, cv2.INTER_NEAREST)

        cells = None if instances is None else labels(instances)
        return self.outlines(fit(image, cell), labels(class_map), instances=cells)

    def preview_marks(self, frame: np.ndarray, points: Mapping[str, np.ndarray],
                      boxes: Mapping[str, np.ndarray] | None = None, cell: int = 256) -> np.ndarray:
        """A grid tile of a count-only image: the frame fitted to ``cell`` px, then its marks drawn at that size."""
        small = fit(frame, cell)
        scale = small.shape[0] / frame.shape[0]

        def scaled(marks: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {name: np.asarray(xy, float) * scale for name, xy in marks.items()}

        return self.marks(small, scaled(points), None if boxes is None else scaled(boxes))

    def render(self, frame: np.ndarray, class_map: np.ndarray, counts: Mapping[str, float] | None = None,
               fps: float | None = None, cells: np.ndarray | None = None) -> np.ndarray:
        """Outlines, optional cell ids, and the legend with counts and FPS, on a copy of the frame."""
        out = self.outlines(frame, class_map)
        if cells is not None:
            self.ids(out, cells)
        if counts is not None:
            self.legend(out, counts, fps)
        return out


def _fmt(value: float) -> str:
    return f"{value:g}"


def fit(image: np.ndarray, cell: int, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """The image scaled to fit a ``cell`` px square, its aspect ratio kept: labels (``cv2.INTER_NEAREST``) and the
    photo are scaled alike before anything is drawn, so that outlines are drawn at the size they are shown."""
    h, w = image.shape[:2]
    scale = cell / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return image
    if interpolation == cv2.INTER_AREA and scale > 1:
        interpolation = cv2.INTER_LINEAR  # INTER_AREA enlarges as nearest neighbour would
    return cv2.resize(image, size, interpolation=interpolation)


def tile_grid(images: list[np.ndarray], columns: int = 4, cell: int = 256) -> np.ndarray:
    """Images fitted into ``cell`` px squares (aspect ratio kept, centred on white) and laid out in a grid, for a
    person to look at. Draw on images already fitted (`fit`): a line drawn at full size shrinks out of sight."""
    columns = max(1, min(columns, len(images)))
    rows = -(-len(images) // columns)
    grid = np.full((rows * cell, columns * cell, 3), 255, np.uint8)
    for i, image in enumerate(images):
        small = fit(image, cell)
        h, w = small.shape[:2]
        row, column = divmod(i, columns)
        top, left = row * cell + (cell - h) // 2, column * cell + (cell - w) // 2
        grid[top : top + h, left : left + w] = small
    return grid
