"""Auto-labelling throughput (issue target: ≥ 200 images/s of 512×512 single-kind images on 2 cores, whole pipeline).

Figures per kind: the labelling step alone on one core (images already in memory), and the whole
`csc-label auto` job over a folder with all cores: process start-up, decoding, labelling, placing the images in
the dataset and writing the masks and dataset.json. The job runs on the same images in three file formats,
because decoding is the largest single cost and differs 7× between them: PNG (the simulator's output, lossless
and deflate-compressed), uncompressed TIFF (what microscope software such as µManager and ImageJ saves) and JPEG
(quality 95, what many camera tools save). Each figure is the median of --repeats runs, all runs listed (this VM
drifts by tens of percent).

Run: python -m benchmarks.speed.autolabel_speed [--n 1000] [--repeats 3] [--out benchmarks/results/autolabel_speed.json]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import cv2

from benchmarks.publish import machine, publish
from runtime.io.heap import keep_freed_memory
from runtime.io.imageio import list_images, read_grey, read_image
from runtime.data.synthesize import synthesize_dataset
from trainer.autolabel import PAPER_STEPS, AutoLabelConfig, auto_label
from trainer.labelling import label_folder


def label_step(images: Path, config: AutoLabelConfig, repeats: int) -> list[float]:
    """images/s of auto_label alone on one core, as a worker runs it."""
    read = read_image if config.channel == "auto" else read_grey  # as the workers read them
    frames = [read(p) for p in list_images(images)[:100]]
    auto_label(frames[0], config)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for frame in frames:
            auto_label(frame, config)
        rates.append(len(frames) / (time.perf_counter() - start))
    return rates


def whole_job(images: Path, out: Path, config: AutoLabelConfig, repeats: int) -> list[float]:
    """images/s of label_folder on all cores, from the call to the finished dataset.json."""
    rates = []
    for _ in range(repeats):
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        run = label_folder(images, out, config)
        rates.append(run.labelled / (time.perf_counter() - start))
    return rates


FORMATS = {"png": (".png", []), "tiff": (".tif", [cv2.IMWRITE_TIFF_COMPRESSION, 1]),
           "jpeg": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95])}


def convert(images: Path, folder: Path, suffix: str, params: list[int]) -> Path:
    folder.mkdir(parents=True)
    for path in list_images(images):
        cv2.imwrite(str(folder / f"{path.stem}{suffix}"), cv2.imread(str(path)), params)
    return folder


def summary(rates: list[float]) -> dict:
    return {"median": round(statistics.median(rates), 1), "runs": [round(r, 1) for r in rates]}


def measure(n: int = 1000, repeats: int = 3) -> dict:
    cv2.setNumThreads(1)
    keep_freed_memory()  # as in the workers
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("rbc", "macrophage"):
            config = AutoLabelConfig(kind=kind)
            png = synthesize_dataset(kind, n, Path(tmp) / kind, seed=5) / "images"
            results[kind] = {"label_step_1_core": summary(label_step(png, config, repeats))}
            for name, (suffix, params) in FORMATS.items():
                folder = png if name == "png" else convert(png, Path(tmp) / f"{kind}_{name}", suffix, params)
                results[kind][f"whole_job_{name}"] = summary(whole_job(folder, Path(tmp) / "out", config, repeats))
            # For comparison in the same run: the paper's steps at a given pixel size (`--paper --pixel-size 0.4`),
            # which estimate no scale and look at no colour.
            paper = AutoLabelConfig(kind=kind, pixel_size_um=0.4, **PAPER_STEPS)
            results[kind]["whole_job_tiff_paper_steps"] = summary(whole_job(Path(tmp) / f"{kind}_tiff", Path(tmp) / "out",
                                                                           paper, repeats))
    return {"machine": machine(), "images": n,
            "image_size": "512x512 colour", "tiff": "uncompressed", "jpeg_quality": 95, "unit": "images/s", "kinds": results}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="images per kind")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    publish(measure(args.n, args.repeats), args.out)
