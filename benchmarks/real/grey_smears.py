"""Stained smears photographed in grey (a monochrome camera, or colour dropped on export): a weak spot of the
auto-labeller's modality detection, measured on real images.

Without colour, `runtime.data.modality.detect_modality` judges a frame by its textured objects. A stained RBC is
smooth inside; where it is as wide as BCCD's (about 100 px), the objects it finds are specks and edges, not the
cells, and their evidence reads as unstained brightfield: the label-free path then measures and labels the specks.
Given ``--modality stained``, the same grey images are labelled about as well as in colour. A rule that told the
two apart by the field's absorption (a large share of it darker than its brightest tenth) was tried on the tuning
parts (BCCD's training half, the Chula development subset, simulator seeds 55–56) and dropped: dense
phase-contrast macrophages (the paper's own images) fell on the stained side of it too.

Sets (read from ``../shared/real``, converted to grey as they are read; skipped with the reason when absent): the
Chula part of ``--part`` (benchmarks/real/real_counts.py) and the BCCD evaluation half, scored as that benchmark
scores them. Rows: ``csc-label auto --split-touching`` with nothing given (scale estimated, modality detected),
the same with ``--modality stained``, the colour images with nothing given (for comparison), and the reference
(Otsu on grey + watershed at the pixel size); with how each set's grey images were classified.

Run: python -m benchmarks.real.grey_smears [--real ../shared/real] [--part development|blind]
                                         [--out benchmarks/results/grey_smears.json]
"""
from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks.publish import publish, tree_state
from benchmarks.real.real_counts import CHULA_PARTS, Labeller, headline, labeller, real_sets, reference_labels
from runtime.data.modality import as_grey, detect_modality
from runtime.errors import CscError
from runtime.io.imageio import read_image

ROOT = Path(__file__).resolve().parents[2]


def in_grey(method: Labeller) -> Labeller:
    """``method`` on the image converted to grey (one channel, as a monochrome camera gives it)."""
    return lambda image, pixel_size_um: method(as_grey(image), pixel_size_um)


def measure(real: Path, part: str = "development") -> dict:
    methods: dict[str, Labeller] = {
        "grey: csc-label auto --split-touching (nothing given)": in_grey(labeller()),
        "grey: csc-label auto --split-touching --modality stained": in_grey(labeller(modality="stained")),
        "colour: csc-label auto --split-touching (nothing given)": labeller(),
        "grey: reference: Otsu + fill + watershed (pixel size P)": in_grey(reference_labels),
    }
    out: dict = {"what": "stained smears converted to grey: the auto-labeller with nothing given, with --modality "
                         "stained, and on the colour images", **tree_state(ROOT), "chula_part": part}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sets = real_sets(real, Path(tmp), part)
            for key, dataset, stems in (("chula", sets.chula, sets.chula_stems), ("bccd", sets.bccd, sets.bccd_stems)):
                out[key] = {"images": len(stems), "methods": {}, "modality_detected": dict(Counter(
                    detect_modality(as_grey(read_image(s.image))).modality for s in dataset.samples if s.stem in stems))}
            for name, method in methods.items():
                for key, result in sets.score(method).items():
                    out[key]["methods"][name] = {**headline(result.summary), **result.extra}
    except CscError as err:
        return {**out, "skipped": str(err)}
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, default=ROOT.parent / "shared" / "real")
    parser.add_argument("--part", choices=tuple(CHULA_PARTS), default="development",
                        help="the Chula part scored (benchmarks/real/real_counts.py)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    publish(measure(args.real, args.part), args.out)
