"""Stained smears photographed in grey (a monochrome camera, or colour dropped on export): a weak spot of the
auto-labeller's modality detection, measured on real images.

Without colour, `runtime.data.modality.detect_modality` judges a frame by its textured objects. A stained RBC is
smooth inside; where it is as wide as BCCD's (about 100 px), the objects it finds are specks and edges, not the
cells, and their evidence read as unstained brightfield: the label-free path then measured and labelled the
specks. Such a field is now taken for a stain where it is darkened by more than its texture covers (`ABSORBING`,
`TEXTURED_COVER` there, which say how they were set); a relief or a halo found among the specks still sends
some images to DIC or phase contrast. Given ``--modality stained``, the same grey images are labelled about as
well as in colour.

Sets (read from ``../shared/real``, converted to grey as they are read; skipped with the reason when absent): the
Chula part of ``--part`` (benchmarks/real/real_counts.py) and the BCCD evaluation half, scored as that benchmark
scores them. Rows: ``csc-label auto --split-touching`` with nothing given (scale estimated, modality detected),
the same with ``--modality stained``, the colour images with nothing given (for comparison), and the reference
(Otsu on grey + watershed at the pixel size); with ``--model``, the runtime (`csc-run --images DIR --pixel-size P`)
on the grey frames; with how each set's grey images were classified.

Run: python -m benchmarks.real.grey_smears [--real ../shared/real] [--part development|blind]
                                         [--model runtime/models/default.onnx] [--out benchmarks/results/grey_smears.json]
     python -m benchmarks.real.grey_smears --table benchmarks/results/grey_smears.json   (the docs' table)
"""
from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks.publish import publish, tree_state
from benchmarks.real.real_counts import (CHULA_PARTS, Labeller, headline, labeller, real_sets, reference_labels,
                                         runtime_labeller)
from runtime.data.modality import as_grey, detect_modality
from runtime.errors import CscError
from runtime.io.imageio import read_image

ROOT = Path(__file__).resolve().parents[2]


def in_grey(method: Labeller) -> Labeller:
    """``method`` on the image converted to grey (one channel, as a monochrome camera gives it)."""
    return lambda image, pixel_size_um: method(as_grey(image), pixel_size_um)


def measure(real: Path, part: str = "development", model: Path | None = None) -> dict:
    methods: dict[str, Labeller] = {
        "grey: csc-label auto --split-touching (nothing given)": in_grey(labeller()),
        "grey: csc-label auto --split-touching --modality stained": in_grey(labeller(modality="stained")),
        "colour: csc-label auto --split-touching (nothing given)": labeller(),
        "grey: reference: Otsu + fill + watershed (pixel size P)": in_grey(reference_labels),
    }
    if model is not None:  # the runtime on the same grey frames: the smear model, trained on colour
        methods[f"grey: csc-run --pixel-size P ({model.name})"] = in_grey(runtime_labeller(model))
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


def render_markdown(result: dict) -> str:
    """The docs' table: one row per set and path (count ratio, point F1), with how the grey images were classified."""
    lines = ["| set | path | count ratio | point F1 | grey images detected as |", "|---|---|---:|---:|---|"]
    for key, name in (("chula", "Chula"), ("bccd", "BCCD")):
        entry = result[key]
        detected = ", ".join(f"{m} {n}" for m, n in entry["modality_detected"].items())
        for method, r in entry["methods"].items():
            lines.append(f"| {name} ({entry['images']}) | {method} | {r['ratio']:.3f} | {r['f1']:.3f} | "
                         f"{detected if method.startswith('grey: csc-label auto --split-touching (nothing') else '—'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, default=ROOT.parent / "shared" / "real")
    parser.add_argument("--part", choices=tuple(CHULA_PARTS), default="development",
                        help="the Chula part scored (benchmarks/real/real_counts.py)")
    parser.add_argument("--model", type=Path, default=None, help="also score the runtime with this ONNX model")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--table", type=Path, default=None, help="print the docs' table of a result file and exit")
    args = parser.parse_args()
    if args.table is not None:
        print(render_markdown(json.loads(args.table.read_text(encoding="utf-8"))))
    else:
        publish(measure(args.real, args.part, args.model), args.out)
