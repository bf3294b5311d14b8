"""Does a frame look like the model's training data? Checked on the model's own output, once per frame.

A segmenter shown frames unlike anything it learnt from (another stain, another magnification than the pixel size
it was given, a simulator-trained model on real smears) does not fail: it prints confident counts of nonsense —
the bundled simulator model labelled 82 % of real smears "macrophage". The class fractions of its class map are
a cheap tell: when a class covers far more of a frame than it ever covered of a training image, the counts are
not to be trusted, and the user is told once, with what to check.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import cv2
import numpy as np

from runtime.data.modality import LABEL_FREE
from runtime.io.sources import Frame
from runtime.backends.model_meta import ModelMetadata

# Without training fractions in the model's metadata: a cell class over this share of the frame is implausible.
DEFAULT_LIMIT = 0.6
# With them: a frame may exceed what training saw by this factor (crops of a dense smear vary) plus this margin.
HEADROOM, MARGIN = 1.5, 0.1
# The optics of this many first frames are compared with the model's training optics (a run keeps its microscope;
# detection costs 1–40 ms a frame, so not every frame).
OPTICS_FRAMES = 3
DESCRIBED = {"stained": "stained brightfield", "fluorescence": "fluorescence", "brightfield": "label-free",
             "phase": "label-free", "dic": "label-free"}


@dataclass
class DomainCheck:
    metadata: ModelMetadata | None
    class_names: tuple[str, ...]
    frames: int = 0
    flagged: int = 0
    warning: str | None = None  # the first frame's reason, kept for the summary
    worst: dict[str, float] = field(default_factory=dict)  # per flagged class, its largest fraction seen
    optics: Counter = field(default_factory=Counter)  # the detected optics of the first frames
    optics_warning: str | None = None

    def __post_init__(self) -> None:
        seen = self.metadata.class_fractions if self.metadata else {}
        self.limits = np.ones(len(self.class_names))
        for i, name in enumerate(self.class_names[1:], start=1):
            self.limits[i] = min(0.98, seen[name] * HEADROOM + MARGIN) if name in seen else DEFAULT_LIMIT
        self.trained = bool(seen)

    def check(self, class_map: np.ndarray) -> str | None:
        """The warning text the first time a frame is implausible (None otherwise, and for every later frame).
        ``class_map``: 2-D uint8, as every runner returns it (`cv2.calcHist` takes no wider integers)."""
        self.frames += 1
        n = len(self.class_names)  # calcHist: a third of np.bincount's time, which widens every pixel to int64
        fractions = cv2.calcHist([class_map], [0], None, [n], [0, n]).ravel() / max(1, class_map.size)
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

    def check_optics(self, frame: Frame) -> str | None:
        """For the first OPTICS_FRAMES frames (lit ones: the pipeline skips blank frames, which show no optics): the
        warning, once, when a frame's optics (`Frame.detected_optics`) are none the model was trained on. Label-free
        optics count as one family: a label-free model learns them together, and the detector can take faint
        unstained cells' rings for a relief or a halo. A stain without a stain's colour (`ModalityEvidence.tentative`:
        a sparse DIC field reads like that) is no evidence against a label-free model."""
        trained = self.metadata.modalities if self.metadata else []
        if not trained or sum(self.optics.values()) >= OPTICS_FRAMES:
            return None
        evidence = frame.detected_optics()
        found = evidence.modality
        self.optics[found] += 1
        family = {DESCRIBED[m] for m in trained}
        if (DESCRIBED[found] in family or (evidence.tentative and any(m in LABEL_FREE for m in trained))
                or self.optics_warning is not None):
            return None
        hint = (f"use a model trained on label-free images: `csc-run --modality {found}` runs the bundled one "
                "(runtime/models/label-free.onnx), or pass --model" if found in LABEL_FREE
                else "pass --model with a model trained on such images")
        self.optics_warning = (f"frames look like {DESCRIBED[found]} images ({found}), but the model was trained on "
                               f"{', '.join(trained)} images: counts are unreliable — {hint}")
        return self.optics_warning

    def summary(self) -> dict:
        return {"frames_checked": self.frames, "frames_unlike_training": self.flagged, "warning": self.warning,
                "largest_fraction": {k: round(v, 3) for k, v in self.worst.items()},
                "optics": {"model": list(self.metadata.modalities) if self.metadata else [],
                           "frames": dict(self.optics), "warning": self.optics_warning}}
