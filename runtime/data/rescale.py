"""One dataset at another pixel size (`csc-data rescale`): a model sees cells of one size in pixels, so images from
a microscope at another magnification are brought to its scale before training (and frames before inference,
`csc-run --pixel-size`)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from runtime.data.dataset import DatasetWriter, check_new_dataset_folder, open_dataset
from runtime.errors import CscError


def zoomed_size(shape: tuple[int, ...], zoom: float) -> tuple[int, int]:
    """(h, w) of an image of this shape scaled by ``zoom`` (at least 1 px each)."""
    return max(1, int(round(shape[0] * zoom))), max(1, int(round(shape[1] * zoom)))


def resize_to(image: np.ndarray, zoom: float, labels: bool = False) -> np.ndarray:
    """``image`` scaled by ``zoom``: label maps by nearest neighbour (ids never blend), pictures by area
    averaging when shrinking and linear interpolation when enlarging. The one resize of a dataset
    (`rescale_dataset`) and of `csc-run`'s frames to the model's pixel size (`runtime.pipeline.stream`)."""
    h, w = zoomed_size(image.shape, zoom)
    method = cv2.INTER_NEAREST if labels else cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=method)


def rescale_dataset(root: str | Path, out: str | Path, pixel_size_um: float, source_pixel_size_um: float | None = None,
                    on_image: Callable[[], None] | None = None) -> float:
    """Write ``out``: every image, class map and instance map of ``root`` at ``pixel_size_um``; returns the zoom.

    The source's pixel size is ``source_pixel_size_um`` or its dataset.json's; an estimated one (auto-labels made
    without --pixel-size) is refused unless given, since it assumes cells of typical size. ``out`` must be new or
    empty (`check_new_dataset_folder`): the dataset itself, above all, which it would overwrite while reading."""
    dataset = open_dataset(root)
    if pixel_size_um <= 0 or (source_pixel_size_um is not None and source_pixel_size_um <= 0):
        raise CscError("pixel sizes must be positive", fix="give µm per pixel, e.g. --pixel-size 0.4")
    if source_pixel_size_um is None and not dataset.scale_known:
        why = "estimated from its cells, not given" if dataset.meta.get("pixel_size_um") else "not recorded"
        raise CscError(f"the dataset's pixel size was {why}", path=dataset.root,
                       fix="give the camera's pixel size with --from UM")
    check_new_dataset_folder(Path(out))
    source = source_pixel_size_um or dataset.pixel_size_um
    zoom = source / pixel_size_um
    extra = {k: v for k, v in dataset.meta.items() if k in ("kind", "labels", "autolabel", "diameter_px")}
    extra.update(scale="given", rescaled={"from": str(dataset.root), "pixel_size_um": source, "zoom": round(zoom, 4)})
    with DatasetWriter(Path(out), source=f"{dataset.meta.get('source', dataset.root)}, rescaled ×{zoom:.3g}",
                       seed=dataset.meta.get("seed"), pixel_size_um=pixel_size_um, classes=tuple(dataset.classes),
                       labels=dataset.meta.get("labels"), extra=extra) as writer:
        for i, sample in enumerate(dataset.samples):
            labels = dataset.load(i)
            instances = None if labels.instances is None else resize_to(labels.instances, zoom, labels=True)
            writer.add(sample.stem, resize_to(labels.image, zoom), resize_to(labels.mask, zoom, labels=True), instances)
            if on_image is not None:
                on_image()
    return zoom
