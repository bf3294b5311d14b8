"""Auto-labelling throughput (issue target: ≥ 200 images/s of 512×512 single-kind images on 2 cores).

Two figures: the labelling step alone on one core (images already in memory), and the whole
`csc-label auto` pipeline (read, label, copy, write masks) over a folder with all cores.
Run: python -m benchmarks.autolabel_speed [--n 400]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2

from runtime.imageio import list_images, read_image
from runtime.synthesize import synthesize_dataset
from trainer.autolabel import AutoLabelConfig, auto_label
from trainer.labelling import label_folder


def measure(n: int = 400, kind: str = "rbc") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        data = synthesize_dataset(kind, n, Path(tmp) / "data", seed=5)
        config = AutoLabelConfig(kind=kind)
        images = [read_image(p) for p in list_images(data / "images")[:100]]
        cv2.setNumThreads(1)
        auto_label(images[0], config)
        start = time.perf_counter()
        for image in images:
            auto_label(image, config)
        step = len(images) / (time.perf_counter() - start)
        cv2.setNumThreads(-1)
        start = time.perf_counter()
        run = label_folder(data / "images", Path(tmp) / "out", config)
        whole = run.labelled / (time.perf_counter() - start)
        shutil.rmtree(Path(tmp) / "out")
    return {"kind": kind, "images": n, "cores": os.cpu_count(), "label_step_1core_img_s": round(step, 1),
            "whole_pipeline_all_cores_img_s": round(whole, 1)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=400)
    args = parser.parse_args()
    for kind in ("rbc", "macrophage"):
        print(measure(args.n, kind))
