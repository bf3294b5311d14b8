"""Count-only datasets on the trainer side: refused for pixel training, scored by `csc-train eval`, and the real
point- and box-annotated smears in ../shared/real scored against the classical path."""
import csv
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from runtime.data.annotations import read_annotations
from runtime.data.annotations.classmap import ClassMap
from runtime.data.annotations.writer import import_annotations
from runtime.data.dataset import open_dataset
from runtime.errors import CscError
from runtime.counting.evaluation import count_dataset
from runtime.data.synthesize import synthesize_dataset
from trainer.autolabel import AutoLabelConfig
from trainer.labelling import label_folder
from trainer.regimes import run_base
from trainer.train import TrainConfig

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "real"


def points_from_instances(dataset_root: Path, out_csv: Path) -> dict[str, int]:
    """A count-only truth from a simulated set: one point per cell, on its innermost pixel."""
    dataset = open_dataset(dataset_root)
    names = dataset.classes
    totals = dict.fromkeys(names[1:], 0)
    with open(out_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "x", "y", "class"])
        for i, sample in enumerate(dataset.samples):
            labels = dataset.load(i)
            for cell in np.unique(labels.instances)[1:]:
                inside = np.pad((labels.instances == cell).astype(np.uint8), 1)
                dist = cv2.distanceTransform(inside, cv2.DIST_L2, 3)[1:-1, 1:-1]
                y, x = np.unravel_index(np.argmax(dist), dist.shape)
                name = names[labels.mask[y, x]]
                writer.writerow([sample.stem, x, y, name])
                totals[name] += 1
    return totals


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("count-only")
    data = synthesize_dataset("mixed", 6, root / "data", seed=9, size=64)
    run_base(data, root / "run", TrainConfig(regime="U-Base", arch="light-unet", steps=4, batch=2, size=64,
                                             val_every=4, device="cpu"))
    return root, data


def test_training_refuses_a_count_only_dataset_with_the_reason(tiny_run, tmp_path):
    root, data = tiny_run
    points_from_instances(data, tmp_path / "p.csv")
    import_annotations(read_annotations("points", tmp_path / "p.csv"), data / "images", tmp_path / "pts", ClassMap(),
                       origin="import:points")
    config = TrainConfig(regime="U-Base", arch="light-unet", steps=1, batch=1, size=64, device="cpu")
    with pytest.raises(CscError, match=r"count-only dataset \(points, no masks\)"):
        run_base(tmp_path / "pts", tmp_path / "run", config)


def test_eval_without_a_class_in_common_says_so_before_any_work(tiny_run, tmp_path, monkeypatch):
    """Annotations of classes the model does not have (here every cell imported as a WBC): it said so only after
    calibrating on the first images, each segmented."""
    import trainer.cli.train as train_cli

    root, data = tiny_run
    points_from_instances(data, tmp_path / "p.csv")
    import_annotations(read_annotations("points", tmp_path / "p.csv"), data / "images", tmp_path / "wbc",
                       ClassMap.parse("*=wbc"), origin="import:points")
    monkeypatch.setattr(train_cli, "_calibrate", lambda *a: pytest.fail("calibrated before the classes were asked"))
    result = CliRunner().invoke(train_cli.app, ["eval", str(root / "run" / "best.pt"), str(tmp_path / "wbc"),
                                                "--device", "cpu"])
    assert "no class in common" in str(result.exception), result.output


def test_eval_scores_a_model_against_points(tiny_run, tmp_path):
    from trainer.cli.train import app

    root, data = tiny_run
    totals = points_from_instances(data, tmp_path / "p.csv")
    import_annotations(read_annotations("points", tmp_path / "p.csv"), data / "images", tmp_path / "pts", ClassMap(),
                       origin="import:points")
    result = CliRunner().invoke(app, ["eval", str(root / "run" / "best.pt"), str(tmp_path / "pts"), "--device", "cpu",
                                      "--json", str(tmp_path / "e.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "e.json").read_text())
    counts = report["counts"]
    with open(tmp_path / "p.csv", newline="") as f:
        annotated = {row["image"] for row in csv.DictReader(f)}  # a CSV cannot say "no cells": those are left out
    assert counts["true_counts"] == totals and counts["images"] == len(annotated)
    for name, m in counts["instances"].items():
        assert m["tp"] + m["fn"] == totals[name] and m["tp"] + m["fp"] == counts["counts"][name]
    assert report["reference"]["annotations"] == "points" and report["reference"]["ground_truth"]
    assert "miou" not in report, "a count-only dataset has no pixels to score"
    # Imported without a pixel size: calibrated from the first images as csc-run does (found, or why not).
    calibration = report["calibration"]
    assert calibration["frames"] >= 1 and calibration["note"] and report["pixel_size_um"] > 0
    assert report["pixel_size_um"] == pytest.approx(calibration["pixel_size_um"] or 0.4, rel=1e-3)
    import_annotations(read_annotations("points", tmp_path / "p.csv"), data / "images", tmp_path / "pts2", ClassMap(),
                       origin="import:points", pixel_size_um=0.2)
    told = CliRunner().invoke(app, ["eval", str(root / "run" / "best.pt"), str(tmp_path / "pts2"), "--device", "cpu",
                                    "--json", str(tmp_path / "e2.json")])
    assert told.exit_code == 0, told.output
    report = json.loads((tmp_path / "e2.json").read_text())
    assert report["calibration"] is None and report["pixel_size_um"] == 0.2, "a recorded pixel size is used as is"


def _real(*parts) -> Path:
    path = REAL.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real sample not here: {path} (the shared folder beside the repository holds it)")
    return path


def _label(images: Path, out: Path, stems: list[str], tmp_path: Path, pixel_size: float):
    """The classical path on a few of the imported images (linked into a folder of their own)."""
    subset = tmp_path / f"{out.name}-images"
    subset.mkdir()
    for path in sorted(images.iterdir()):
        if path.stem in stems:
            os.link(path, subset / path.name)
    label_folder(subset, out, AutoLabelConfig(kind="rbc", pixel_size_um=pixel_size, split_touching=True), workers=2)


def test_real_chula_points_import_and_score_the_classical_path(tmp_path):
    points = _real("chula-rbc12", "points")
    summary = import_annotations(read_annotations("points", points), _real("chula-rbc12", "images"),
                                 tmp_path / "chula", ClassMap.parse("*=rbc"), origin="import:points",
                                 pixel_size_um=0.194)
    files = sorted(points.glob("*.txt"))
    lines = {p.stem: sum(1 for line in p.read_text().splitlines() if line.strip()) for p in files}
    assert summary.images == len(files) and summary.cells["rbc"] == sum(lines.values())
    assert len(summary.unannotated) == len(list(_real("chula-rbc12", "images").iterdir())) - len(files)
    stems = sorted(lines, key=int)[:8]
    _label(tmp_path / "chula" / "images", tmp_path / "auto", stems, tmp_path, 0.194)
    scored = count_dataset(tmp_path / "auto", truth=tmp_path / "chula")
    assert scored["images"] == len(stems) and scored["true_counts"]["rbc"] == sum(lines[s] for s in stems)
    m = scored["instances"]["rbc"]
    assert m["tp"] + m["fn"] == scored["true_counts"]["rbc"] and m["tp"] > 0
    assert scored["reference"]["labels"] == "import:points" and scored["reference"]["ground_truth"]


def test_real_bccd_boxes_import_and_score_the_classical_path(tmp_path):
    boxes = _real("bccd-txlpbc", "boxes.csv")
    summary = import_annotations(read_annotations("boxes", boxes), _real("bccd-txlpbc", "images"), tmp_path / "bccd",
                                 ClassMap.parse("RBC=rbc,WBC=wbc"), origin="import:boxes")
    with open(boxes, newline="") as f:
        rows = list(csv.DictReader(f))
    by_class = {c: sum(r["class"] == c for r in rows) for c in ("RBC", "WBC", "Platelets")}
    assert summary.classes == ["background", "rbc", "wbc"]
    assert summary.cells == {"rbc": by_class["RBC"], "wbc": by_class["WBC"]}
    assert summary.dropped == {"Platelets": by_class["Platelets"]} and not summary.missing_images
    stems = sorted({r["image"] for r in rows})[:6]
    _label(tmp_path / "bccd" / "images", tmp_path / "auto", stems, tmp_path, 0.2)
    scored = count_dataset(tmp_path / "auto", truth=tmp_path / "bccd")
    assert scored["images"] == len(stems)
    assert scored["true_counts"]["rbc"] == sum(r["class"] == "RBC" and r["image"] in stems for r in rows)
    assert scored["not_predicted"] == {"wbc": sum(r["class"] == "WBC" and r["image"] in stems for r in rows)}
