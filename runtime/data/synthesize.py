"""Writing simulated-microscope datasets in the project's format."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from runtime.data.dataset import DatasetWriter, check_new_dataset_folder
from runtime.data.simulator import make_microscope


def synthesize_dataset(kind: str, n: int, out: str | Path, seed: int = 0, size: int = 512,
                       on_image: Callable[[], None] | None = None, optics: str = "stained", **overrides) -> Path:
    """``n`` frames of the simulated microscope in one optics (``runtime.data.modality.MODALITIES``) with masks,
    instances and counts; returns the folder. dataset.json records the optics and the pseudopods, which a labeller
    or a model trained on the set needs to know. ``out`` must be new or empty (`check_new_dataset_folder`)."""
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    check_new_dataset_folder(Path(out))
    microscope = make_microscope(kind, size=size, seed=seed, optics=optics, **overrides)
    source = f"simulated microscope (mode={kind}, size={size}, auto-csc runtime.data.simulator)"
    extra = {"kind": kind, "size": [size, size], "optics": optics, "pseudopods": microscope.config.pseudopods}
    with DatasetWriter(Path(out), source=source, seed=seed, pixel_size_um=microscope.config.pixel_size_um,
                       labels="simulator", extra=extra) as writer:
        for i in range(n):
            frame = microscope.frame(i)
            writer.add(f"{kind}_{i:05d}", frame.image, frame.semantic, frame.instances)
            if on_image is not None:
                on_image()
    return Path(out)
