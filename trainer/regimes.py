"""The paper's three training regimes (§3.3) as data set-ups around the one training loop.

- U-Base: labelled mixed images, split 75/12.5/12.5 % (the paper's 450/75/75 of 600).
- U-Single: auto-labelled single-kind sets only; every batch draws from both (RBC and macrophage).
- U-Transfer: U-Single fine-tuned on N labelled mixed images at lr 5e-4.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from runtime.dataset import open_dataset
from runtime.errors import CscError
from trainer.checkpoint import load_checkpoint
from trainer.data import CropSampler, split_indices
from trainer.train import TrainConfig, train


def run_base(data: Path, out: Path, config: TrainConfig, **kw) -> dict:
    dataset = open_dataset(data)
    train_idx, val_idx, test_idx = split_indices(len(dataset), config.seed)
    config = replace(config, pixel_size_um=dataset.pixel_size_um, classes=tuple(dataset.classes),
                     sources={"train": str(data), "split": [len(train_idx), len(val_idx), len(test_idx)]})
    sampler = CropSampler([(dataset, train_idx)], config.size, n_classes=len(config.classes))
    return train(config, sampler, [dataset.load(i) for i in val_idx], out, **kw)


def run_single(rbc: Path, macrophage: Path, out: Path, config: TrainConfig, **kw) -> dict:
    sets = [open_dataset(rbc), open_dataset(macrophage)]
    sources, val = [], []
    for dataset in sets:
        train_idx, val_idx, test_idx = split_indices(len(dataset), config.seed, (0.9, 0.1, 0.0))
        sources.append((dataset, train_idx + test_idx))
        val += [dataset.load(i) for i in val_idx]
    config = replace(config, pixel_size_um=sets[0].pixel_size_um, classes=tuple(sets[0].classes),
                     sources={"rbc": str(rbc), "macrophage": str(macrophage)})
    sampler = CropSampler(sources, config.size, n_classes=len(config.classes))
    return train(config, sampler, val, out, **kw)


def run_transfer(checkpoint: Path, mixed: Path, n: int, out: Path, config: TrainConfig, **kw) -> dict:
    start = load_checkpoint(checkpoint)
    dataset = open_dataset(mixed)
    train_idx, val_idx, _ = split_indices(len(dataset), config.seed)
    if n > len(train_idx):
        raise CscError(f"--n {n} but the training split of {mixed} holds {len(train_idx)} images", path=mixed,
                       fix="lower --n or add images")
    config = replace(config, arch=start["arch"], pixel_size_um=dataset.pixel_size_um, classes=tuple(start["classes"]),
                     sources={"init": str(checkpoint), "mixed": str(mixed), "n": n})
    sampler = CropSampler([(dataset, train_idx[:n])], config.size, n_classes=len(config.classes))
    init = None if kw.get("resume") else start["model"]
    return train(config, sampler, [dataset.load(i) for i in val_idx], out, init_weights=init, **kw)
