"""Segmentation metrics exactly as the paper's equations (5) mIoU and (6) FWIoU, plus Dice; numpy only.

All metrics come from one confusion matrix accumulated over a whole dataset (pooled), as the paper reports them.
Rows are the ground-truth class, columns the prediction.
"""
from __future__ import annotations

import numpy as np


def confusion_matrix(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> np.ndarray:
    """n×n pixel counts; ``out[i, j]`` = pixels of true class i predicted as j."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {truth.shape} differ in shape")
    index = truth.astype(np.int64).ravel() * n_classes + pred.astype(np.int64).ravel()
    return np.bincount(index, minlength=n_classes * n_classes)[: n_classes * n_classes].reshape(n_classes, n_classes)


def per_class_iou(cm: np.ndarray) -> np.ndarray:
    """p_ii / (Σ_j p_ij + Σ_j p_ji − p_ii); NaN for a class absent from both prediction and truth."""
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(axis=1) + cm.sum(axis=0) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / denom, np.nan)


def miou(cm: np.ndarray) -> float:
    """Equation (5): the mean IoU over the k+1 classes, background included (absent classes skipped)."""
    return float(np.nanmean(per_class_iou(cm)))


def fwiou(cm: np.ndarray) -> float:
    """Equation (6): IoU of each class weighted by its share of the ground-truth pixels."""
    freq = cm.sum(axis=1) / max(1, cm.sum())
    iou = np.nan_to_num(per_class_iou(cm))
    return float((freq * iou).sum())


def per_class_dice(cm: np.ndarray) -> np.ndarray:
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(axis=1) + cm.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / denom, np.nan)


def dice(cm: np.ndarray) -> float:
    """Mean Dice over classes (background included, as the paper's Table 2 compares with its mIoU)."""
    return float(np.nanmean(per_class_dice(cm)))
