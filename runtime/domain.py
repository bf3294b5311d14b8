"""Does a frame look like the model's training data? Checked on the model's own output, once per frame.

A segmenter shown frames unlike anything it learnt from (another stain, another magnification than the pixel size
it was given, a simulator-trained model on real smears) does not fail: it prints confident counts of nonsense —
the bundled simulator model labelled 82 % of real smears "macrophage". The class fractions of its class map are
a cheap tell: when a class covers far more of a frame than it ever covered of a training image, the counts are
not to be trusted, and the user is told once, with what to check.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from runtime.model_meta import ModelMetadata

# Without training fractions in the model's metadata: a cell class over this share of the frame is implausible.
DEFAULT_LIMIT = 0.6
# With them: a frame may exceed what training saw by this factor (crops of a dense smear vary) plus this margin.
HEADROOM, MARGIN = 1.5, 0.1


@dataclass
class DomainCheck:
    metadata: ModelMetadata | None
    class_names: tuple[str, ...]
    frames: int = 0
    flagged: int = 0
    warning: str | None = None  # the first frame's reason, kept for the summary
    worst: dict[str, float] = field(default_factory=dict)  # per flagged class, its largest fraction seen

    def __post_init__(self) -> None:
        seen = self.metadata.class_fractions if self.metadata else {}
        self.limits = np.ones(len(self.class_names))
        for i, name in enumerate(self.class_names[1:], start=1):
            self.limits[i] = min(0.98, seen[name] * HEADROOM + MARGIN) if name in seen else DEFAULT_LIMIT
        self.trained = bool(seen)

    def check(self, class_map: np.ndarray) -> str | None:
        """The warning text the first time a frame is implausible (None otherwise, and for every later frame)."""
        self.frames += 1
        fractions = np.bincount(class_map.ravel(), minlength=len(self.class_names))[: len(self.class_names)]
        fractions = fractions / max(1, class_map.size)
        over = np.flatnonzero(fractions > self.limits)
        if not len(over):
            return None
        self.flagged += 1
        for i in over:
            self.worst[self.class_names[i]] = max(self.worst.get(self.class_names[i], 0.0), float(fractions[i]))
        if self.warning is not None:
            return None
        name = self.class_names[over[0]]
        basis = (f"training images had at most {100 * self.metadata.class_fractions[name]:.0f} %" if self.trained
                 and name in self.metadata.class_fractions else f"over {100 * DEFAULT_LIMIT:.0f} % is implausible")
        self.warning = (f"frames look unlike the model's training data ({100 * fractions[over[0]]:.0f} % {name}; "
                        f"{basis}): counts are unreliable — check --pixel-size (the camera's µm per pixel) and that "
                        "the model was trained for this stain and microscope")
        return self.warning

    def summary(self) -> dict:
        return {"frames_checked": self.frames, "frames_unlike_training": self.flagged, "warning": self.warning,
                "largest_fraction": {k: round(v, 3) for k, v in self.worst.items()}}
