"""Training batches from project-format datasets: random crops with the paper's augmentation, seeded.

Each batch is a pure function of (seed, step, rank): resuming at step s draws exactly the batch an
uninterrupted run would have drawn, and ranks of a distributed run draw disjoint halves of one global batch.
Augmentation (paper §3.1): rotation, scaling and grey-value changes, plus flips; OpenCV on uint8 frames. The
``microscope`` set adds what differs between real microscopes and slides — stain colour, uneven light, focus
and a wider range of scales — so a model trained on one lab's smears does not learn their exact look.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from runtime.data.dataset import Dataset, Labels
from runtime.errors import CscError


@dataclass(frozen=True)
class Augment:
    rotate: bool = True
    scale: tuple[float, float] = (0.8, 1.25)
    grey: bool = True
    flip: bool = True
    colour: bool = False  # stain: hue shift ±8° (of 180), saturation ×0.7–1.3, channel gains ×0.9–1.1
    light: bool = False  # illumination falling across the crop by up to ±25 %
    blur: bool = False  # defocus: a Gaussian blur of σ 0.5–1.5 px on a third of the crops


AUGMENTS = {"paper": Augment(),
            "microscope": Augment(scale=(0.7, 1.4), colour=True, light=True, blur=True)}


def instance_diameters(mask: np.ndarray, instances: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Per class present, the equivalent diameters (√(4·area/π), px) of its instances (the class of an instance is
    the mask's largest id over its pixels)."""
    ids, area = np.unique(instances[instances > 0], return_counts=True)
    if not len(ids):
        return []
    cls = np.zeros(int(ids.max()) + 1, np.int64)
    np.maximum.at(cls, instances.ravel(), mask.ravel())
    diameters = np.sqrt(4 * area / np.pi)
    return [(int(c), diameters[cls[ids] == c]) for c in np.unique(cls[ids]) if c > 0]


class CropSampler:
    """Draws (image, mask) crops of ``size`` from the samples of one or more datasets (all kept in memory)."""

    def __init__(self, sources: list[tuple[Dataset, list[int]]], size: int, augment: Augment | None = Augment(),
                 n_classes: int = 3, touching_gap: int = 0):
        self.size = size
        self.augment = augment
        self.pools: list[list[Labels]] = []
        fractions = np.zeros(n_classes)
        diameters: list[list[np.ndarray]] = [[] for _ in range(n_classes)]
        for dataset, indices in sources:
            pool = [dataset.load(i) for i in indices]
            for labels, i in zip(pool, indices):
                if int(labels.mask.max()) >= n_classes:
                    raise CscError(f"class id {int(labels.mask.max())} but the model has {n_classes} classes",
                                   path=dataset.samples[i].mask, fix="train with a matching --classes or fix the mask")
                if labels.instances is not None:
                    for c, d in instance_diameters(labels.mask, labels.instances):
                        diameters[c].append(d)
                if touching_gap and labels.instances is not None:
                    labels.mask = carve_gaps(labels.mask, labels.instances, touching_gap)
                fractions = np.maximum(fractions, np.bincount(labels.mask.ravel(), minlength=n_classes) / labels.mask.size)
            if not pool:
                raise CscError("no images to train on", path=dataset.root, fix="add images or lower --n / the split")
            self.pools.append(pool)
        self.class_fractions = fractions  # per class, the largest share of a training image (runtime/pipeline/domain.py)
        # Per class, the median equivalent diameter (px) of the training cells (runtime/counting/calibration.py).
        self.cell_diameters = [float(np.median(np.concatenate(d))) if d else None for d in diameters]
        self.modalities = sorted({m for dataset, _ in sources for m in dataset.modalities})  # (runtime/pipeline/domain.py)

    def batch(self, seed: int, step: int, batch: int, rank: int = 0, world: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images (B, H, W, 3) and masks (B, H, W) for this rank's share of global step ``step``."""
        images = np.empty((batch, self.size, self.size, 3), np.uint8)
        masks = np.empty((batch, self.size, self.size), np.uint8)
        for j in range(batch):
            k = rank * batch + j  # position in the global batch
            rng = np.random.default_rng([seed, step, k])
            pool = self.pools[k % len(self.pools)]  # several sources: each batch draws from all (paper §3.3)
            sample = pool[int(rng.integers(len(pool)))]
            images[j], masks[j] = self._crop(rng, sample)
        return images, masks

    def _crop(self, rng: np.random.Generator, sample: Labels) -> tuple[np.ndarray, np.ndarray]:
        image, mask = sample.image, sample.mask
        s = self.size
        aug = self.augment
        h, w = mask.shape
        scale = float(rng.uniform(*aug.scale)) if aug else 1.0
        angle = float(rng.uniform(0, 360)) if aug and aug.rotate else 0.0
        # Crop centre in the source; the affine map rotates/scales around it into an s×s output.
        span = s / scale / 2
        cy = float(rng.uniform(min(span, h / 2), max(h - span, h / 2)))
        cx = float(rng.uniform(min(span, w / 2), max(w - span, w / 2)))
        matrix = cv2.getRotationMatrix2D((cx, cy), angle, scale)
        matrix[:, 2] += (s / 2 - cx, s / 2 - cy)
        image = cv2.warpAffine(image, matrix, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        mask = cv2.warpAffine(mask, matrix, (s, s), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101)
        if aug and aug.flip and rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if aug and aug.grey:
            gain, bias, gamma = rng.uniform(0.8, 1.2), rng.uniform(-20, 20), rng.uniform(0.8, 1.25)
            lut = np.clip(255.0 * (np.arange(256) / 255.0) ** gamma * gain + bias, 0, 255).astype(np.uint8)
            image = cv2.LUT(np.ascontiguousarray(image), lut)
        if aug and aug.colour:
            image = _stain(rng, np.ascontiguousarray(image))
        if aug and aug.light:
            image = _light(rng, image)
        if aug and aug.blur and rng.random() < 1 / 3:
            image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.5, 1.5)))
        return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def _stain(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Another stain batch or camera white balance: hue and saturation moved, channels scaled."""
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + int(rng.integers(-8, 9))) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.7, 1.3), 0, 255)
    image = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
    return cv2.transform(image, np.diag(rng.uniform(0.9, 1.1, 3)).astype(np.float32))  # uint8, saturated


def _light(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Uneven illumination: brightness falling linearly across the crop in a random direction."""
    s = image.shape[0]
    angle, strength = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.25)
    ramp = (np.arange(s, dtype=np.float32) / max(1, s - 1) - 0.5) * 2 * strength
    field = 1.0 + np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    return np.clip(image * field[..., None], 0, 255).astype(np.uint8)


def carve_gaps(mask: np.ndarray, instances: np.ndarray, gap: int) -> np.ndarray:
    """The class map with a background gap ``gap`` px wide wherever two instances touch.

    Taught by such masks, a network draws the line between touching cells itself (the original U-Net weighted the
    loss there for the same reason), instead of leaving the counter's splitter a blob to guess at: measured on
    pseudo-labels of real smears, a 2-px gap and no splitting counted better than splitting gap-less masks.
    """
    side = max(1, gap // 2) * 2 + 1
    kernel = np.ones((side, side), np.uint8)
    inst = instances.astype(np.uint16, copy=False)
    high = cv2.dilate(inst, kernel)
    low = cv2.erode(np.where(inst > 0, inst, np.uint16(65535)).astype(np.uint16), kernel)
    border = (inst > 0) & (high != low) & (low != 65535) & (high != 0)
    out = mask.copy()
    out[border] = 0
    return out


def split_indices(n: int, seed: int, fractions=(0.75, 0.125, 0.125)) -> tuple[list[int], list[int], list[int]]:
    """The paper's 450/75/75 split of 600 images, as fractions, seeded; at least one image in train and val."""
    if n < 2:
        raise CscError(f"a dataset of {n} image(s) cannot be split into training and validation",
                       fix="use at least 2 images (the paper used 600: 450/75/75)")
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_val = max(1, int(round(n * fractions[1])))
    n_test = int(round(n * fractions[2])) if n - n_val > 2 else 0
    n_train = n - n_val - n_test
    return order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
