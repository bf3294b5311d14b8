"""The paper's three training regimes (§3.3) as data set-ups around the one training loop.

- U-Base: labelled mixed images, split 75/12.5/12.5 % (the paper's 450/75/75 of 600).
- U-Single: auto-labelled single-kind sets only; every batch draws from both (RBC and macrophage).
- U-Transfer: U-Single fine-tuned on N labelled mixed images at lr 5e-4.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from runtime.cli.common import check_outputs, check_writable
from runtime.data.dataset import Labels, open_dataset
from runtime.errors import CscError
from trainer.checkpoint import load_checkpoint
from trainer.data import AUGMENTS, CropSampler, split_indices
from trainer.train import TrainConfig, resolve_device, train


@dataclass
class Plan:
    """A regime's training, prepared: data opened and split, validation images loaded, device checked. Building
    one finds every bad input before the first step (and before a progress bar) starts."""

    config: TrainConfig
    sampler: CropSampler
    val: list[Labels]
    init_weights: dict | None = None
    seen_fractions: dict | None = None  # class fractions of the data the initial weights were trained on
    seen_modalities: tuple[str, ...] = ()  # likewise, the optics

    def __post_init__(self) -> None:
        resolve_device(self.config.device)
        names = self.config.classes
        seen = self.seen_fractions or {}
        # What the model has seen, over every stage of its training: the runtime's domain check reads it.
        self.config = replace(self.config, class_fractions={
            n: round(max(float(f), seen.get(n, 0.0)), 4) for n, f in zip(names[1:], self.sampler.class_fractions[1:])},
            modalities=tuple(sorted({*self.seen_modalities, *self.sampler.modalities})),
            # The latest stage's cells (U-Transfer's, its own data): what it was last tuned to see.
            cell_diameter_px={n: round(d, 1) for n, d in zip(names[1:], self.sampler.cell_diameters[1:]) if d})

    def run(self, out: Path, *, resume: bool = False, **kw) -> dict:
        """Train into ``out``; resuming restores last.pt, which replaces the initial weights."""
        return train(self.config, self.sampler, self.val, out, init_weights=self.init_weights, resume=resume, **kw)


def check_run_folder(out: Path, resume: bool, datasets: Iterable[Path] = (), checkpoint: Path | None = None) -> None:
    """A new run must not overwrite another's checkpoints; a resumed one needs its last.pt; and the checkpoints must
    be writable there, which the first of them, after the steps before it, found out too late. The folder is not
    made here: a run refused for its data or device leaves none behind.

    Nor may it lie in a training dataset (curves.png in its images/ is an image without a mask, which breaks the
    dataset) or write over the checkpoint it starts from (``checkpoint``, U-Transfer's U-Single model)."""
    out = Path(out)
    for data in datasets:
        if Path(data).resolve() in (out.resolve(), *out.resolve().parents):
            raise CscError("--out lies inside a training dataset", path=data, fix="write the run to a folder of its own")
    if out.exists() and not out.is_dir():
        raise CscError("--out is a file, not a folder", path=out, fix="name a folder for the run")
    check_writable(out, "--out")
    check_outputs({"--out's best.pt": out / "best.pt", "--out's last.pt": out / "last.pt"},
                  [("CHECKPOINT", checkpoint)] if checkpoint is not None else [])
    last = out / "last.pt"
    # best.pt alone counts too: a finished run kept without its larger last.pt (the optimizer's state) is a model.
    if not resume and (last.exists() or (out / "best.pt").exists()):
        raise CscError("run folder already holds a checkpoint", path=out, fix="pass --resume to continue, or another --out")
    if resume and not last.is_file():
        raise CscError("nothing to resume: no last.pt", path=out, fix="drop --resume to start a new run")


def plan_base(data: Path, config: TrainConfig) -> Plan:
    dataset = open_dataset(data)
    train_idx, val_idx, test_idx = split_indices(len(dataset), config.seed)
    config = replace(config, pixel_size_um=dataset.pixel_size_um, classes=tuple(dataset.classes),
                     sources={"train": str(data), "split": [len(train_idx), len(val_idx), len(test_idx)]})
    sampler = _sampler([(dataset, train_idx)], config)
    return Plan(config, sampler, [dataset.load(i) for i in val_idx])


def plan_single(rbc: Path, macrophage: Path, config: TrainConfig, more: list[Path] = ()) -> Plan:
    """Every batch draws from each single-kind set in turn: an RBC set, a macrophage set, and any more (say, RBCs
    from a second microscope); all must share classes and, where given rather than estimated, pixel size."""
    paths = [rbc, macrophage, *more]
    sets = [open_dataset(p) for p in paths]
    for path, dataset in zip(paths[1:], sets[1:]):
        if dataset.classes != sets[0].classes:
            raise CscError(f"classes {dataset.classes} differ from {sets[0].classes} of {paths[0]}", path=path,
                           fix="auto-label every set with the same class list")
        if dataset.scale_known and sets[0].scale_known and _differ(dataset.pixel_size_um, sets[0].pixel_size_um):
            raise CscError(f"pixel size {dataset.pixel_size_um} µm differs from {sets[0].pixel_size_um} µm of "
                           f"{paths[0]}", path=path,
                           fix=f"bring it to one scale: csc-data rescale {path} --pixel-size {sets[0].pixel_size_um} --out DIR")
    sources, val = [], []
    for dataset in sets:
        train_idx, val_idx, test_idx = split_indices(len(dataset), config.seed, (0.9, 0.1, 0.0))
        sources.append((dataset, train_idx + test_idx))
        val += [dataset.load(i) for i in val_idx]
    config = replace(config, pixel_size_um=sets[0].pixel_size_um, classes=tuple(sets[0].classes),
                     sources={"rbc": str(rbc), "macrophage": str(macrophage), **({"more": [str(p) for p in more]}
                                                                               if more else {})})
    return Plan(config, _sampler(sources, config), val)


def plan_transfer(checkpoint: Path, mixed: Path, n: int, config: TrainConfig, more: list[Path] = ()) -> Plan:
    """U-Transfer on ``n`` labelled mixed images of each of ``mixed`` and ``more`` (say, simulated frames and a
    lab's own smears): every batch draws from each set."""
    start = load_checkpoint(checkpoint)
    sources, val = [], []
    for path in [mixed, *more]:
        dataset = open_dataset(path)
        train_idx, val_idx, _ = split_indices(len(dataset), config.seed)
        if n > len(train_idx):
            raise CscError(f"--n {n} but the training split of {path} holds {len(train_idx)} images", path=path,
                           fix="lower --n or add images")
        model_pixel = float(start["config"].get("pixel_size_um", dataset.pixel_size_um))
        if dataset.scale_known and _differ(dataset.pixel_size_um, model_pixel):
            raise CscError(f"pixel size {dataset.pixel_size_um} µm differs from the model's "
                           f"{start['config']['pixel_size_um']} µm", path=path,
                           fix=f"csc-data rescale {path} --pixel-size {start['config']['pixel_size_um']} --out DIR")
        sources.append((dataset, train_idx[:n]))
        val += [dataset.load(i) for i in val_idx]
    config = replace(config, arch=start["arch"], pixel_size_um=sources[0][0].pixel_size_um,
                     classes=tuple(start["classes"]),
                     sources={"init": str(checkpoint), "mixed": [str(p) for p in (mixed, *more)], "n": n})
    return Plan(config, _sampler(sources, config), val, init_weights=start["model"],
                seen_fractions=start["config"].get("class_fractions"),
                seen_modalities=tuple(start["config"].get("modalities", ())))


def _differ(a: float, b: float) -> bool:
    """Pixel sizes too far apart for one model: beyond 15 %, the spread of a size estimated from the cells
    (`csc-label auto` without --pixel-size records one), so that only a real change of magnification is refused."""
    return abs(a / b - 1) > 0.15


def _sampler(sources, config: TrainConfig) -> CropSampler:
    return CropSampler(sources, config.size, AUGMENTS[config.augment], len(config.classes), config.touching_gap)


def run_base(data: Path, out: Path, config: TrainConfig, **kw) -> dict:
    return plan_base(data, config).run(out, **kw)


def run_single(rbc: Path, macrophage: Path, out: Path, config: TrainConfig, **kw) -> dict:
    return plan_single(rbc, macrophage, config).run(out, **kw)


def run_transfer(checkpoint: Path, mixed: Path, n: int, out: Path, config: TrainConfig, **kw) -> dict:
    return plan_transfer(checkpoint, mixed, n, config).run(out, **kw)
