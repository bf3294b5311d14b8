"""The training loop behind U-Base, U-Single and U-Transfer (paper §3.1, §3.3).

Adam (β 0.9/0.999), batch 4, loss CE − log J; best-by-validation and last checkpoints written atomically;
exact resume; AMP on CUDA; DistributedDataParallel under ``torchrun`` (gloo on CPU, NCCL on GPUs).
"""
from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
import torch.distributed as dist

from runtime.classes import CLASS_NAMES, DEFAULT_PIXEL_SIZE_UM
from runtime.data.dataset import Labels
from runtime.errors import CscError
from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.data import CropSampler
from trainer.evaluate import evaluate
from trainer.losses import CeLogJaccardLoss
from trainer.models import build_model, get_arch
from trainer.preprocess import Preprocess


DEVICES = ("auto", "cpu", "cuda")  # auto: CUDA when PyTorch sees a GPU


@dataclass
class TrainConfig:
    regime: str
    arch: str = "vgg16-unet"
    steps: int = 2000
    batch: int = 4
    size: int = 256
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    seed: int = 0
    device: str = "auto"
    val_every: int = 200
    encoder_weights: str | None = None
    classes: tuple[str, ...] = CLASS_NAMES
    pixel_size_um: float = DEFAULT_PIXEL_SIZE_UM
    sources: dict = field(default_factory=dict)
    augment: str = "paper"  # a key of trainer.data.AUGMENTS
    touching_gap: int = 0  # px of background carved between touching instances of the training masks
    class_fractions: dict = field(default_factory=dict)  # filled from the training data (runtime/pipeline/domain.py)
    modalities: tuple[str, ...] = ()  # the optics of the training data, where the datasets record it (likewise)
    cell_diameter_px: dict = field(default_factory=dict)  # per class, the training cells' median (calibration)

    def __post_init__(self) -> None:
        from trainer.data import AUGMENTS

        get_arch(self.arch)  # unknown names fail here, listing the registered ones
        if self.augment not in AUGMENTS:
            raise ValueError(f"--augment must be one of {', '.join(AUGMENTS)}, got {self.augment!r}")
        if self.touching_gap < 0:
            raise ValueError(f"--touching-gap must not be negative, got {self.touching_gap}")
        if self.device not in DEVICES:
            raise ValueError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        stride = get_arch(self.arch).stride
        if self.size < stride or self.size % stride:
            raise ValueError(f"--size {self.size} must be a positive multiple of {stride} for {self.arch}")
        if self.steps < 1 or self.batch < 1 or self.val_every < 1:
            raise ValueError("--steps, --batch and --val-every must be at least 1")
        # Checked here, not left to Adam or NumPy: they refuse these only after the data is loaded and the progress
        # bar shown, with a traceback; an infinite rate trains a step and then stops on a NaN loss.
        if not math.isfinite(self.lr) or self.lr < 0:
            raise ValueError(f"--lr must be a finite number of at least 0, got {self.lr}")
        if self.seed < 0:
            raise ValueError(f"--seed must not be negative, got {self.seed}")


class TrainingDiverged(CscError):
    pass


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during `train`: how far the run got and which step its last.pt holds (None: no checkpoint written yet),
    so that the command can say whether ``--resume`` has anything to continue from."""

    def __init__(self, done: int, steps: int, saved: int | None):
        super().__init__(f"{done} of {steps} steps done, last.pt at step {saved}")
        self.done, self.steps, self.saved = done, steps, saved


def resolve_device(name: str) -> torch.device:
    if name not in DEVICES:
        raise CscError(f"unknown device {name!r}", fix=f"use {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CscError("--device cuda but PyTorch sees no CUDA GPU", fix="use --device cpu or auto")
    return torch.device(name)


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    owned: bool = False  # this training created the process group, so it destroys it

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return _Dist(dist.get_rank(), world, owned)


def train(config: TrainConfig, sampler: CropSampler, val: list[Labels], out: Path, *, init_weights: dict | None = None,
          resume: bool = False, progress: Callable[[int, int, float, float], None] | None = None) -> dict:
    """Train; returns the metrics written to ``out/metrics.json``.

    Under torchrun the process group is destroyed before returning, even on an error: a rank that leaves it to the
    interpreter's exit can abort there (SIGABRT, seen in CI on the rank that finishes first), because Gloo's worker
    threads still hold tensors when Python is already torn down (pytorch/pytorch#179291)."""
    device = resolve_device(config.device)
    ddp = _init_distributed(device)
    try:
        return _train(config, sampler, val, Path(out), device, ddp, init_weights, resume, progress)
    finally:
        if ddp.owned:
            dist.destroy_process_group()


def _train(config: TrainConfig, sampler: CropSampler, val: list[Labels], out: Path, device: torch.device, ddp: _Dist,
           init_weights: dict | None, resume: bool, progress: Callable[[int, int, float, float], None] | None) -> dict:
    """The training loop of `train`, inside its process group (if any)."""
    if device.type == "cuda" and ddp.world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.manual_seed(config.seed)
    arch = get_arch(config.arch)
    kwargs = {"encoder_weights": config.encoder_weights} if config.encoder_weights and config.arch == "vgg16-unet" else {}
    model = build_model(config.arch, num_classes=len(config.classes), **kwargs)
    if init_weights is not None:
        model.load_state_dict(init_weights)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)  # paper: constant learning rate
    use_amp = device.type == "cuda"
    # bfloat16 where the GPU has it: fp16 activations of the BN-free VGG16 encoder overflow at lr 1e-3 (seen: NaN
    # loss after ~1000 steps on an H100), bf16 has fp32's range and needs no loss scaling.
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    start, best, history = 0, -1.0, {"loss": [], "val": []}
    if resume:
        state = resumable(out, config)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, best, history = state["step"], state["best_miou"], state["history"]
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
    net = torch.nn.parallel.DistributedDataParallel(model) if ddp.world > 1 else model
    preprocess = Preprocess().to(device)
    criterion = CeLogJaccardLoss()
    net.train()

    def snapshot(step: int) -> dict:
        return {"arch": config.arch, "classes": list(config.classes), "regime": config.regime, "step": step,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "best_miou": best, "history": history, "config": _plain_config(config),
                "rng": {"torch": torch.get_rng_state(), "python": random.getstate()}}

    saved = start if resume else None  # the step out/last.pt holds
    began = time.perf_counter()
    try:
        for step in range(start, config.steps):
            images, masks = sampler.batch(config.seed, step, config.batch, ddp.rank, ddp.world)
            x = preprocess(torch.from_numpy(images).to(device))
            y = torch.from_numpy(masks).to(device)
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
                loss = criterion(net(x), y)
            if not torch.isfinite(loss):
                _diverged(float(loss.item()), step, saved, out)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            history["loss"].append(round(float(loss.item()), 5))
            done = step + 1
            if progress is not None and ddp.main:
                progress(done, config.steps, history["loss"][-1], (done - start) / (time.perf_counter() - began))
            if done % config.val_every == 0 or done == config.steps:
                if ddp.main:
                    metrics = evaluate(model, val, arch.stride, device, config.classes, config.pixel_size_um)
                    history["val"].append({"step": done, "miou": metrics["miou"], "fwiou": metrics["fwiou"]})
                    if metrics["miou"] > best:
                        best = metrics["miou"]
                        save_checkpoint(out / "best.pt", {**snapshot(done), "metrics": metrics})
                    save_checkpoint(out / "last.pt", snapshot(done))
                    saved = done
                if ddp.world > 1:
                    dist.barrier()
    except KeyboardInterrupt:
        raise TrainingInterrupted(len(history["loss"]), config.steps, saved) from None
    result = {"regime": config.regime, "arch": config.arch, "steps": config.steps, "best_val_miou": best,
              "history": history, "config": _plain_config(config), "device": str(device),
              "seconds": round(time.perf_counter() - began, 1)}
    if ddp.world > 1:
        result["ddp"] = {"world_size": ddp.world, "ranks_agree": _ranks_agree(model)}
    if ddp.main:
        best_metrics = load_checkpoint(out / "best.pt")["metrics"]
        result["val_metrics"] = best_metrics
        from runtime.io.writers import write_json

        write_json(out / "metrics.json", result)
        write_curves(out / "curves.png", history, config.regime)
    return result


# What a resumed run shares with the run it continues: the batches are a function of these (and of the step), and
# the weights were trained for these classes at this rate; --steps may grow, --val-every and --device may change.
RESUMED_AS_BEFORE = ("regime", "classes", "seed", "batch", "size", "augment", "touching_gap", "lr")


def resumable(out: Path, config: TrainConfig) -> dict:
    """The state in ``out/last.pt`` that a run of ``config`` continues, or an error where it cannot: ``--resume``
    "continues exactly", and a command that differs from the run's (a default --size 256 for its 64, a U-Single
    command on a U-Base folder) went on silently with other batches; other classes ended in a traceback from the
    model's head. `csc-train` asks it before its progress bar too (the file is read twice on a resume)."""
    path = Path(out) / "last.pt"
    state = load_checkpoint(path, config.arch)
    before, now = state["config"], _plain_config(config)
    changed = [f"{key} {before[key]!r} → {now[key]!r}" for key in RESUMED_AS_BEFORE
               if key in before and before[key] != now[key]]
    if changed:
        raise CscError(f"--resume with other settings than the run it continues: {', '.join(changed)}", path=path,
                       fix="resume with the run's own settings (the first of each pair above), or start a new --out")
    if state["step"] > config.steps:
        raise CscError(f"last.pt is at step {state['step']}, beyond --steps {config.steps}", path=path,
                       fix=f"pass --steps above {state['step']} to train on")
    return state


def _diverged(loss: float, step: int, saved: int | None, out: Path) -> NoReturn:
    """A non-finite loss stops the run; the message points to last.pt only where one was written (before the first
    checkpoint it sent the user to resume from a file that did not exist)."""
    if saved is None:
        raise TrainingDiverged(f"loss became {loss} at step {step}, before the first checkpoint",
                               fix="lower --lr or check the labels")
    raise TrainingDiverged(f"loss became {loss} at step {step}; {out / 'last.pt'} keeps the last good state (step "
                           f"{saved})", fix="lower --lr, check the labels, or resume from last.pt")


def _ranks_agree(model: torch.nn.Module) -> bool:
    """All ranks hold identical weights: the check that data parallelism kept them in step."""
    flat = torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    return all(torch.equal(gathered[0], g) for g in gathered[1:])


def _plain_config(config: TrainConfig) -> dict:
    data = asdict(config)
    data["betas"], data["classes"] = list(config.betas), list(config.classes)
    return data


def write_curves(path: Path, history: dict, title: str) -> None:
    """Training loss (smoothed) and validation mIoU against step, as a PNG beside the checkpoint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from runtime.io.imageio import atomic_path

    loss = np.asarray(history["loss"], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4))
    if loss.size:
        k = max(1, loss.size // 50)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(np.arange(k, loss.size + 1), smooth, label="training loss (CE − log J)", color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    if history["val"]:
        ax2.plot([v["step"] for v in history["val"]], [v["miou"] for v in history["val"]], "o-", color="tab:red",
                 label="validation mIoU")
    ax2.set_ylabel("mIoU")
    ax2.set_ylim(0, 1)
    ax.set_title(title)
    fig.legend(loc="lower left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)

