"""Evaluating a model on labelled images: the paper's eq. (5) mIoU, eq. (6) FWIoU, Dice, per-class IoU, the
confusion matrix, and per-class counts against ground truth with the runtime's one counting implementation;
on count-only datasets (points or boxes), counts only: ratio, MAE per image and point F1."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from runtime.classes import CLASS_NAMES, DEFAULT_PIXEL_SIZE_UM
from runtime.data.count_dataset import CountSample
from runtime.counting.metrics import CountTally
from runtime.counting.counter import CellCounter, CountingConfig
from runtime.data.dataset import Labels, instance_counts
from runtime.counting.evaluation import PointScorer
from runtime.io.imageio import read_image
from trainer.metrics import confusion_matrix, dice, fwiou, miou, per_class_iou
from trainer.preprocess import Preprocess


@torch.no_grad()
def predict_class_map(model: nn.Module, image_bgr: np.ndarray, stride: int, device: torch.device,
                      preprocess: Preprocess | None = None) -> np.ndarray:
    """uint8 class map of one full frame; padded (reflect) to a multiple of the model's stride, then cropped."""
    preprocess = preprocess or Preprocess().to(device)
    h, w = image_bgr.shape[:2]
    x = preprocess(torch.from_numpy(np.ascontiguousarray(image_bgr))[None].to(device))
    pad_h, pad_w = (-h) % stride, (-w) % stride
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
    logits = model(x)[..., :h, :w]
    return logits.argmax(1)[0].to(torch.uint8).cpu().numpy()


def predict_at_zoom(model: nn.Module, image_bgr: np.ndarray, zoom: float, stride: int, device: torch.device,
                    preprocess: Preprocess | None = None) -> np.ndarray:
    """The class map of a frame segmented at ``zoom`` × its size (the model's scale), at the frame's own size."""
    if abs(zoom - 1.0) <= 1e-3:
        return predict_class_map(model, image_bgr, stride, device, preprocess)
    h, w = image_bgr.shape[:2]
    small = cv2.resize(image_bgr, (max(1, round(w * zoom)), max(1, round(h * zoom))),
                       interpolation=cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR)
    return cv2.resize(predict_class_map(model, small, stride, device, preprocess), (w, h),
                      interpolation=cv2.INTER_NEAREST)


def evaluate(model: nn.Module, samples: Iterable[Labels], stride: int, device: torch.device,
             class_names: tuple[str, ...] = CLASS_NAMES, pixel_size_um: float = DEFAULT_PIXEL_SIZE_UM,
             on_image: Callable[[], None] | None = None, zoom: float = 1.0) -> dict:
    """Metrics pooled over all samples (one confusion matrix), as the paper reports them; each image segmented at
    ``zoom`` × its size (the model's scale: `predict_at_zoom`) and scored, and counted, at its own pixels."""
    was_training = model.training
    model.eval()
    n = len(class_names)
    cm = np.zeros((n, n), np.int64)
    counter = CellCounter(CountingConfig(class_names=class_names, pixel_size_um=pixel_size_um))
    tally = CountTally(class_names[1:])
    preprocess = Preprocess().to(device)
    for labels in samples:
        pred = predict_at_zoom(model, labels.image, zoom, stride, device, preprocess)
        cm += confusion_matrix(pred, labels.mask, n)
        if labels.instances is not None:
            true = instance_counts(labels.mask, labels.instances, n)
            tally.add(counter.count(pred).counts, {name: int(true[i]) for i, name in enumerate(class_names) if i})
        if on_image is not None:
            on_image()
    model.train(was_training)
    iou = per_class_iou(cm)
    result = {
        "miou": round(miou(cm), 4),
        "fwiou": round(fwiou(cm), 4),
        "dice": round(dice(cm), 4),
        "per_class_iou": {name: (None if np.isnan(v) else round(float(v), 4)) for name, v in zip(class_names, iou)},
        "confusion_matrix": cm.tolist(),
    }
    if tally.images:
        result["counts"] = tally.summary()
    return result


def evaluate_counts(model: nn.Module, samples: Iterable[CountSample], stride: int, device: torch.device,
                    class_names: tuple[str, ...], truth_classes: list[str], pixel_size_um: float = 0.4,
                    on_image: Callable[[], None] | None = None, zoom: float = 1.0) -> dict:
    """Count ratio, MAE per image and point precision / recall / F1 of the model's counted cells against points
    (or box centres), scored by the runtime's `PointScorer` as `csc-data count --truth` scores class maps.
    ``pixel_size_um`` is the images'; ``zoom`` (theirs over the model's) brings each to the model's scale first, as
    the runtime does, and its class map comes back to the image's pixels, where the points are."""
    was_training = model.training
    model.eval()
    scorer = PointScorer(CountingConfig(class_names=class_names, pixel_size_um=pixel_size_um), truth_classes)
    preprocess = Preprocess().to(device)
    for sample in samples:
        image = read_image(sample.image)
        scorer.add(predict_at_zoom(model, image, zoom, stride, device, preprocess), sample)
        if on_image is not None:
            on_image()
    model.train(was_training)
    return scorer.summary()
