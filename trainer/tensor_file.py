"""Reading a torch file safely (``weights_only=True``): checkpoints (`checkpoint`) and foreign state dicts such as
torchvision's VGG16 weights (`models.vgg16_unet`) both come through here, so neither imports the other for it."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch


def load_tensors(path: Path) -> Any:
    """A torch file's tensors and plain containers; nothing stored in it can run (``weights_only=True``).

    A ValueError says why a file cannot be read so. torch's own message is not passed on: for any file it cannot
    read safely it advises retrying with ``weights_only=False``, which runs whatever the file holds.
    """
    if path.stat().st_size == 0:
        raise ValueError("the file is empty")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's warnings about such files carry the same advice
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # corrupt, truncated or foreign files raise many different types
            raise ValueError("PyTorch cannot read it as tensors alone: corrupt, or it holds pickled Python "
                             "objects") from None
