"""The paper's three training regimes (§3.3) as data set-ups around the one training loop.

- U-Base: labelled mixed images, split 75/12.5/12.5 % (the paper's 450/75/75 of 600).
- U-Single: auto-labelled single-kind sets only; every batch draws from both (RBC and macrophage).
- U-Transfer: U-Single fine-tuned on N labelled mixed images at lr 5e-4.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from runtime.dataset import Labels, open_dataset
from runtime.errors import CscError
from trainer.checkpoint import load_checkpoint
from trainer.data import CropSampler, split_indices
from trainer.train import TrainConfig, resolve_device, train


@dataclass
class Plan:
    """A regime's training, prepared: data opened and split, validation images loaded, device checked. Building
    one finds every bad input before the first step (and before a progress bar) starts."""

    config: TrainConfig
    sampler: CropSampler
    val: list[Labels]
    init_weights: dict | None = None

    def __post_init__(self) -> None:
        resolve_device(self.config.device)

    def run(self, out: Path, *, resume: bool = False, **kw) -> dict:
        """Train into ``out``; resuming restores last.pt, which replaces the initial weights."""
        return train(self.config, self.sampler, self.val, out, init_weights=self.init_weights, resume=resume, **kw)


def check_run_folder(out: Path, resume: bool) -> None:
    """A new run must not overwrite another's checkpoints; a resumed one needs its last.pt."""
    last = Path(out) / "last.pt"
    if not resume and last.exists():
        raise CscError("run folder already holds a checkpoint", path=out, fix="pass --resume to continue, or another --out")
    if resume and not last.is_file():
        raise CscError("nothing to resume: no last.pt", path=out, fix="drop --resume to start a new run")


def plan_base(data: Path, config: TrainConfig) -> Plan:
    dataset = open_dataset(data)
    train_idx, val_idx, test_idx = split_indices(len(dataset), config.seed)
    config = replace(config, pixel_size_um=dataset.pixel_size_um, classes=tuple(dataset.classes),
                     sources={"train": str(data), "split": [len(train_idx), len(val_idx), len(test_idx)]})
    sampler = CropSampler([(dataset, train_idx)], config.size, n_classes=len(config.classes))
    return Plan(config, sampler, [dataset.load(i) for i in val_idx])


def plan_single(rbc: Path, macrophage: Path, config: TrainConfig) -> Plan:
    sets = [open_dataset(rbc), open_dataset(macrophage)]
    sources, val = [], []
    for dataset in sets:
        train_idx, val_idx, test_idx = split_indices(len(dataset), config.seed, (0.9, 0.1, 0.0))
        sources.append((dataset, train_idx + test_idx))
        val += [dataset.load(i) for i in val_idx]
    config = replace(config, pixel_size_um=sets[0].pixel_size_um, classes=tuple(sets[0].classes),
                     sources={"rbc": str(rbc), "macrophage": str(macrophage)})
    sampler = CropSampler(sources, config.size, n_classes=len(config.classes))
    return Plan(config, sampler, val)


def plan_transfer(checkpoint: Path, mixed: Path, n: int, config: TrainConfig) -> Plan:
    start = load_checkpoint(checkpoint)
    dataset = open_dataset(mixed)
    train_idx, val_idx, _ = split_indices(len(dataset), config.seed)
    if n > len(train_idx):
        raise CscError(f"--n {n} but the training split of {mixed} holds {len(train_idx)} images", path=mixed,
                       fix="lower --n or add images")
    config = replace(config, arch=start["arch"], pixel_size_um=dataset.pixel_size_um, classes=tuple(start["classes"]),
                     sources={"init": str(checkpoint), "mixed": str(mixed), "n": n})
    sampler = CropSampler([(dataset, train_idx[:n])], config.size, n_classes=len(config.classes))
    return Plan(config, sampler, [dataset.load(i) for i in val_idx], init_weights=start["model"])


def run_base(data: Path, out: Path, config: TrainConfig, **kw) -> dict:
    return plan_base(data, config).run(out, **kw)


def run_single(rbc: Path, macrophage: Path, out: Path, config: TrainConfig, **kw) -> dict:
    return plan_single(rbc, macrophage, config).run(out, **kw)


def run_transfer(checkpoint: Path, mixed: Path, n: int, out: Path, config: TrainConfig, **kw) -> dict:
    return plan_transfer(checkpoint, mixed, n, config).run(out, **kw)
