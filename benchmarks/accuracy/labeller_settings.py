"""The auto-labeller's added settings on real images, each varied around its default in one run: what backs the
defaults (`runtime/counting/instances.py`: LABELLER_SPLIT; `trainer/autolabel.py`: PEAK_FRACTION, PEAK_REACH).

- splitting RBCs (`split_dynamics`, `overlap`; 0 = no division by area): `csc-label auto --split-touching`, scale
  estimated, on the BCCD **training** half (even positions; the sets they were chosen on), the held-out Chula
  subset and the DSB nuclei crop;
- the per-object level of bright images (`peak_fraction` × `peak_reach`): the DSB nuclei crop, the one
  fluorescence image with outlines here (so its rows show sensitivity, not a held-out result).

Run: python -m benchmarks.accuracy.labeller_settings [--real ../shared/real] [--out benchmarks/results/labeller_settings.json]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.publish import publish
from benchmarks.real.real_counts import (BCCD_PIXEL_UM, ROOT, bccd_half, headline, labeller, nuclei, real_sets, score_marks,
                                    score_nuclei)
from runtime.errors import CscError

SPLITS = {"defaults": {}, "split_dynamics 0.04": {"split_dynamics": 0.04},
          "split_dynamics 0.08 (the counter's)": {"split_dynamics": 0.08}, "overlap 1.6": {"overlap": 1.6},
          "overlap 2.0": {"overlap": 2.0}, "no division by area": {"overlap": 0.0}}
PEAKS = [{"peak_fraction": f, "peak_reach": r} for f in (0.25, 0.3, 0.35) for r in (0.1, 0.2, 0.3)]


def measure(real: Path) -> dict:
    pair = nuclei()
    if pair is None:
        raise CscError("the DSB nuclei crop is not installed", fix="pip install --no-deps stardist==0.9.2")
    with tempfile.TemporaryDirectory() as scratch:
        sets = real_sets(real, Path(scratch))
        train = bccd_half(sets.bccd, "train")
        split_rows = {}
        for name, settings in SPLITS.items():
            method = labeller(**settings)
            bccd = headline(score_marks(sets.bccd, train, method, BCCD_PIXEL_UM, 0.0, sets.wbc).summary)
            chula = headline(sets.score(method)["chula"].summary)
            dsb = score_nuclei(*pair, method).summary
            split_rows[name] = {"settings": settings, "bccd_train": {k: bccd[k] for k in ("ratio", "f1")},
                                "chula": {k: chula[k] for k in ("ratio", "f1")},
                                "dsb": {"miou": dsb["miou"], "count": dsb["counts"]["nuclei"]}}
            print(name, split_rows[name], flush=True)
    peak_rows = []
    for settings in PEAKS:
        dsb = score_nuclei(*pair, labeller(**settings)).summary
        peak_rows.append({**settings, "miou": dsb["miou"], "count": dsb["counts"]["nuclei"]})
        print(peak_rows[-1], flush=True)
    return {"bccd_train_images": len(train), "split": split_rows, "dsb_peak_level": peak_rows}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, default=ROOT.parent / "shared" / "real")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    publish(measure(args.real), args.out)
