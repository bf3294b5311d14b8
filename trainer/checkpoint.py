"""Checkpoints: written atomically, read with ``weights_only=True``, checked against the expected architecture."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from runtime.errors import CscError
from runtime.io.imageio import atomic_path
from runtime.version import __version__
from trainer.models import build_model
from trainer.tensor_file import load_tensors

__all__ = ["FORMAT", "load_checkpoint", "load_tensors", "model_from_checkpoint", "save_checkpoint"]

FORMAT = "auto-csc-checkpoint/1"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` under a temporary name, then rename: a crash never leaves a truncated checkpoint."""
    payload = {"format": FORMAT, "version": __version__, **payload}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, arch: str | None = None) -> dict[str, Any]:
    """A checkpoint as a dict; only tensors and plain containers are unpickled (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CscError("checkpoint not found", path=path, fix="pass RUN/best.pt or RUN/last.pt of a csc-train run")
    fix = "use RUN/best.pt or RUN/last.pt written by csc-train"
    try:
        data = load_tensors(path)
    except ValueError as err:
        raise CscError(f"not an auto-CSC checkpoint ({err})", path=path, fix=fix) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CscError("not an auto-CSC checkpoint (a torch file without the auto-CSC format tag)", path=path, fix=fix)
    if arch is not None and data["arch"] != arch:
        raise CscError(f"checkpoint is a {data['arch']!r} model, not {arch!r}", path=path,
                       fix=f"pass --arch {data['arch']} or a checkpoint of {arch}")
    return data


def model_from_checkpoint(path: str | Path, arch: str | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model of a checkpoint with its weights loaded, and the checkpoint dict."""
    data = load_checkpoint(path, arch)
    model = build_model(data["arch"], num_classes=len(data["classes"]))
    try:
        model.load_state_dict(data["model"])
    except RuntimeError as err:
        raise CscError(f"weights do not fit the {data['arch']} architecture: {str(err).splitlines()[0]}", path=path) from None
    return model, data
