"""The paper's Table 1: auto-label mIoU for each combination of pre-processing steps, on labelled datasets.

Columns follow Table 1 (adaptive threshold and contour detection always on; Gaussian filter and morphology
switched), plus two of our own steps. Real images come from PyPI packages, read from where pip installed them:
nothing is downloaded at run time, nothing is copied into the repository.
"""
from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from runtime.classes import CLASS_NAMES
from runtime.data.dataset import open_dataset
from runtime.errors import CscError
from runtime.io.imageio import read_label_map, read_raw, to_bgr8
from trainer.autolabel import PAPER_STEPS, AutoLabelConfig, auto_label
from trainer.metrics import confusion_matrix, miou

# (column title, step switches); the first four are the paper's Table 1 columns, in its order, at the set's pixel
# size; the last two are this project's defaults (`csc-label auto --split-touching`), with the pixel size given
# and with the scale estimated from each image (pixel_size_um None).
COLUMNS: list[tuple[str, dict]] = [
    ("T+C", dict(PAPER_STEPS, gaussian=False, morphology=False)),
    ("G+T+C", dict(PAPER_STEPS, gaussian=True, morphology=False)),
    ("T+C+M", dict(PAPER_STEPS, gaussian=False, morphology=True)),
    ("G+T+C+M", dict(PAPER_STEPS, gaussian=True, morphology=True)),
    ("defaults", dict(split_touching=True)),
    ("defaults, scale estimated", dict(split_touching=True, pixel_size_um=None)),
]
PAPER = {"rbc": [0.7928, 0.8142, 0.8003, 0.8175], "macrophage": [0.6356, 0.6843, 0.6712, 0.6926]}


@dataclass
class AblationSet:
    """A labelled image set: name, the kind whose defaults apply, and (image, binary truth) pairs."""

    name: str
    kind: str
    source: str
    pairs: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]
    overrides: dict = field(default_factory=dict)
    n_images: int = 0


def dataset_set(root: str | Path) -> AblationSet:
    """A project-format dataset of one kind (its masks hold one cell class)."""
    dataset = open_dataset(root)
    kind = dataset.meta.get("kind")
    if kind not in ("rbc", "macrophage"):
        present = set()
        for i in range(min(len(dataset), 5)):
            present |= set(np.unique(dataset.load(i).mask).tolist()) - {0}
        if len(present) != 1:
            raise CscError("the ablation needs single-kind datasets (masks with one cell class)", path=root,
                           fix="make one with `csc-data synth --kind rbc` or `--kind macrophage`")
        kind = CLASS_NAMES[present.pop()]

    def pairs():
        for i in range(len(dataset)):
            labels = dataset.load(i)
            yield labels.image, labels.mask > 0

    return AblationSet(Path(root).name, kind, dataset.meta.get("source", str(root)), pairs,
                       overrides={"pixel_size_um": dataset.pixel_size_um}, n_images=len(dataset))


STARDIST_VERSION = "0.9.2"
NUCLEI_PIXEL_UM = 0.25 * 7.0 / 6.0  # the DSB nuclei (≈24 px) taken as 6 µm cells at 0.25 µm/px


def stardist_nuclei() -> tuple[np.ndarray, np.ndarray]:
    """The 2018 Data Science Bowl fluorescence-nuclei crop (512×512, BGR) and its 125 hand-drawn instances
    (int32 labels) that ship inside the ``stardist`` wheel (BSD-3-Clause package; the DSB 2018 images, BBBC038,
    are CC0). Install it with ``pip install --no-deps stardist==0.9.2``: only the data files are read, the package
    is never imported."""
    spec = importlib.util.find_spec("stardist")
    if spec is None or not spec.submodule_search_locations:
        raise CscError("the real-image set needs the stardist package's data files",
                       fix=f"pip install --no-deps stardist=={STARDIST_VERSION}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "images"
    image_path, mask_path = folder / "img2d.tif", folder / "mask2d.tif"
    return to_bgr8(read_raw(image_path), image_path), read_label_map(mask_path).astype(np.int32)


def stardist_nuclei_set() -> AblationSet:
    """The DSB 2018 nuclei crop (`stardist_nuclei`) as an ablation set.

    Nuclei are neither RBCs nor macrophages; the auto-labeller runs with RBC step defaults, the pixel size set
    so that the size-derived parameters match the nuclei (median diameter ≈ 24 px, like a 6 µm cell at 0.25 µm/px).
    """
    image, instances = stardist_nuclei()

    def pairs():
        yield image, instances > 0

    version = _installed_version("stardist")
    return AblationSet("dsb2018-nuclei (real)", "rbc",
                       f"PyPI stardist {version}: stardist/data/images/img2d.tif + mask2d.tif "
                       "(package BSD-3-Clause; images DSB 2018 / BBBC038, CC0)", pairs,
                       overrides={"pixel_size_um": NUCLEI_PIXEL_UM}, n_images=1)


def _installed_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def run_ablation(sets: list[AblationSet], polarity: str = "auto") -> dict:
    """mIoU (paper eq. 5, background + the cell class, pooled over each set) for every column and set."""
    rows = []
    for ablation_set in sets:
        base = AutoLabelConfig(kind=ablation_set.kind, polarity=polarity, **ablation_set.overrides)
        matrices = {title: np.zeros((2, 2), np.int64) for title, _ in COLUMNS}
        for image, truth in ablation_set.pairs():
            for title, switches in COLUMNS:
                pred = auto_label(image, replace(base, **switches)).mask > 0
                matrices[title] += confusion_matrix(pred, truth, 2)
        rows.append({
            "name": ablation_set.name,
            "kind": ablation_set.kind,
            "source": ablation_set.source,
            "n_images": ablation_set.n_images,
            "miou": {title: round(miou(cm), 4) for title, cm in matrices.items()},
        })
    return {"columns": [title for title, _ in COLUMNS], "steps": {t: s for t, s in COLUMNS}, "paper": PAPER,
            "datasets": rows}


def render_markdown(report: dict) -> str:
    columns = report["columns"]
    lines = [
        "| dataset | kind | images | " + " | ".join(columns) + " |",
        "|---|---|---:|" + "---:|" * len(columns),
    ]
    for kind, values in report["paper"].items():
        cells = [f"{v:.4f}" for v in values] + ["—"] * (len(columns) - len(values))
        lines.append(f"| paper (Table 1) | {kind} | — | " + " | ".join(cells) + " |")
    for row in report["datasets"]:
        cells = [f"{row['miou'][c]:.4f}" for c in columns]
        lines.append(f"| {row['name']} | {row['kind']} | {row['n_images']} | " + " | ".join(cells) + " |")
    legend = ("G Gaussian filter (3×3, σ 0.8) · T adaptive Gaussian threshold · C Suzuki outer contours, small "
              "areas removed, filled · M erosion then dilation (3×3) · defaults: `csc-label auto --split-touching` "
              "(colour channel, auto threshold, rims closed, cell-sized holes filled, touching cells split, thin/"
              "unstained/nucleated objects left out) at the set's pixel size, and with the scale estimated per image. "
              "mIoU over background and the cell class (paper eq. 5).")
    sources = "\n".join(f"- {row['name']}: {row['source']}" for row in report["datasets"])
    return "\n".join(lines) + f"\n\n{legend}\n\nSources:\n{sources}\n"


def check_report_target(markdown_path: Path, datasets: list[Path]) -> None:
    """An error, before the ablation, where `write_report` could not write or would write into a dataset it reads:
    onto its dataset.json (its classes, pixel size and provenance replaced by the report) or among its images and
    labels; where ``markdown_path`` ends in .json (the JSON beside it would replace the Markdown); or onto a folder."""
    from runtime.cli.common import check_outputs
    from runtime.data.dataset import check_outside_dataset

    if markdown_path.suffix.lower() == ".json":
        raise CscError("--out ends in .json: it names the Markdown report, and the JSON is written beside it",
                       path=markdown_path, fix="end --out in .md")
    outputs = {"--out": markdown_path, "the report's JSON": _json_beside(markdown_path)}
    check_outputs(outputs)
    for dataset in datasets:
        for flag, path in outputs.items():
            check_outside_dataset(path, dataset, flag)


def _json_beside(markdown_path: Path) -> Path:
    return markdown_path.with_suffix(".json")


def write_report(report: dict, markdown_path: Path) -> Path:
    """Markdown at ``markdown_path`` and the same numbers as JSON beside it; both written atomically."""
    from runtime.io.imageio import write_text

    write_text(markdown_path, "# Auto-label ablation (paper Table 1)\n\n" + render_markdown(report))
    json_path = _json_beside(markdown_path)
    write_text(json_path, json.dumps(report, indent=2) + "\n")
    return json_path
