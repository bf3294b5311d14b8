"""Scoring counts against references: points and boxes (count-only), instances, and honest names for the
auto-labeller's own split."""
import json
import shutil

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from runtime.data.annotations.classmap import ClassMap
from runtime.data.annotations.marks import read_points
from runtime.data.annotations.writer import import_annotations
from runtime.classes import UNKNOWN_CELL_SIZE, cell_size
from runtime.cli.data import app
from runtime.counting.metrics import score_points
from runtime.counting.counter import CellCounter
from runtime.data.dataset import DatasetWriter, is_ground_truth, label_origin
from runtime.errors import CscError
from runtime.counting.evaluation import count_dataset


def disc(mask, cx, cy, r, value):
    cv2.circle(mask, (cx, cy), r, value, -1)


def test_points_score_one_to_one_and_edge_cells_without_a_point_are_not_false_positives():
    class_map = np.zeros((60, 80), np.uint8)
    disc(class_map, 15, 15, 8, 1)
    disc(class_map, 45, 15, 8, 1)
    disc(class_map, 3, 45, 8, 1)  # cut by the left edge, no point in it
    disc(class_map, 60, 40, 12, 2)
    result = CellCounter().count(class_map, return_labels=True)
    points = {"rbc": np.array([[15, 15], [44, 14], [46, 16], [30, 50]]), "macrophage": np.zeros((0, 2))}
    scores = score_points(result.labels, result.cells, points, ("background", "rbc", "macrophage"))
    # rbc: two cells hit; the second point in one cell and the point on background are misses; the edge cell is
    # not scored. macrophage: a counted cell and no point, a false positive.
    assert scores == {"rbc": (2, 0, 2), "macrophage": (0, 1, 0)}


def write_masks(root, class_maps: dict, labels: str | None = None, **extra):
    with DatasetWriter(root, source="test", labels=labels, extra=extra) as writer:
        for stem, class_map in class_maps.items():
            instances = np.zeros(class_map.shape, np.uint16)
            for class_id in (1, 2):
                n, comp = cv2.connectedComponents((class_map == class_id).astype(np.uint8))
                instances[comp > 0] = comp[comp > 0] + instances.max()
            writer.add(stem, np.full((*class_map.shape, 3), 200, np.uint8), class_map, instances)
    return root


def test_count_against_count_only_points(tmp_path):
    a = np.zeros((60, 80), np.uint8)
    for x in (15, 40, 65):
        disc(a, x, 30, 8, 1)
    labels = write_masks(tmp_path / "labels", {"a": a, "b": a.copy()}, labels="labeller", autolabel={})
    images = tmp_path / "img"
    images.mkdir()
    for stem in ("a", "c"):
        cv2.imwrite(str(images / f"{stem}.png"), np.zeros((60, 80, 3), np.uint8))
    (tmp_path / "p.csv").write_text("image,x,y\na,15,30\na,40,31\na,5,5\nc,3,3\n")
    import_annotations(read_points(tmp_path / "p.csv"), images, tmp_path / "truth", ClassMap.parse("*=rbc"),
                       origin="import:points")
    summary = count_dataset(labels, truth=tmp_path / "truth")
    assert summary["images"] == 1
    assert summary["counts"]["rbc"] == 3 and summary["true_counts"]["rbc"] == 3
    assert summary["count_accuracy"]["rbc"] == 1.0
    assert summary["instances"]["rbc"] == {"precision": round(2 / 3, 4), "recall": round(2 / 3, 4),
                                           "f1": round(2 / 3, 4), "tp": 2, "fp": 1, "fn": 1}
    assert summary["reference"]["ground_truth"] and summary["reference"]["annotations"] == "points"
    assert summary["unmatched"] == {"annotated_without_class_map": ["c"], "class_maps_without_annotation": ["b"]}
    result = CliRunner().invoke(app, ["count", str(labels), "--truth", str(tmp_path / "truth"), "--json",
                                      str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    assert "point F1" in result.output and "annotated" in result.output and "labeller split" not in result.output
    assert json.loads((tmp_path / "s.json").read_text())["instances"]["rbc"]["tp"] == 2


def test_labeller_split_is_reported_as_agreement_not_accuracy(mixed_dataset, tmp_path, monkeypatch):
    from runtime.cli.common import console

    monkeypatch.setattr(console, "width", 200)  # one line per table row, whatever the terminal
    root = shutil.copytree(mixed_dataset, tmp_path / "auto")
    meta = json.loads((root / "dataset.json").read_text())
    del meta["labels"]
    meta.update(autolabel={"kind": "rbc"}, source="auto-labels of /somewhere (kind=rbc)", seed=None)
    (root / "dataset.json").write_text(json.dumps(meta))
    summary = count_dataset(root)
    assert "true_counts" not in summary and "count_accuracy" not in summary
    versus = summary["versus_labeller"]
    assert versus["labeller_counts"] == meta["counts"] and set(versus) >= {"agreement", "mean_abs_difference"}
    assert summary["reference"] == {**summary["reference"], "labels": "labeller", "ground_truth": False}
    result = CliRunner().invoke(app, ["count", str(root)])
    assert result.exit_code == 0, result.output
    assert "labeller split" in result.output and "agreement" in result.output
    assert "accuracy" not in result.output.replace("not accuracy", "") and "true" not in result.output
    truth = CliRunner().invoke(app, ["count", str(mixed_dataset)])
    assert "true" in truth.output and "accuracy" in truth.output and "labeller" not in truth.output


def test_a_separate_truth_dataset_scores_like_its_own_instances(mixed_dataset):
    own, other = count_dataset(mixed_dataset), count_dataset(mixed_dataset, truth=mixed_dataset)
    for key in ("counts", "true_counts", "count_accuracy", "mean_abs_error", "instances"):
        assert own[key] == other[key]


@pytest.mark.parametrize("meta, origin", [
    ({"labels": "import:coco", "autolabel": {}}, "import:coco"),
    ({"autolabel": {"kind": "rbc"}, "seed": None}, "labeller"),
    ({"seed": 3, "source": "simulated microscope (mode=mixed)"}, "simulator"),
    ({}, "human"),
])
def test_label_origin_of_new_and_old_datasets(meta, origin):
    assert label_origin(meta) == origin
    assert is_ground_truth(origin) == (origin != "labeller")


def test_count_of_a_count_only_dataset_says_what_to_do(tmp_path):
    (tmp_path / "img").mkdir()
    cv2.imwrite(str(tmp_path / "img" / "a.png"), np.zeros((10, 10, 3), np.uint8))
    (tmp_path / "p.csv").write_text("image,x,y,class\na,3,3,rbc\n")
    import_annotations(read_points(tmp_path / "p.csv"), tmp_path / "img", tmp_path / "d", ClassMap(),
                       origin="import:points")
    result = CliRunner().invoke(app, ["count", str(tmp_path / "d")])
    assert isinstance(result.exception, CscError) and "count-only" in str(result.exception)
    assert "--truth" in result.exception.fix


def test_cell_sizes_by_name_with_a_default_for_unknown_names():
    assert cell_size("RBC").min_um == 5.0 and cell_size("wbc").max_um == 20.0
    assert cell_size("nucleus") is UNKNOWN_CELL_SIZE


def test_point_scorer_tallies_ratio_mae_and_f1_over_images():
    from pathlib import Path

    from runtime.data.count_dataset import CountSample
    from runtime.counting.counter import CountingConfig
    from runtime.counting.evaluation import PointScorer

    class_map = np.zeros((60, 80), np.uint8)
    disc(class_map, 15, 30, 8, 1)
    disc(class_map, 40, 30, 8, 1)
    scorer = PointScorer(CountingConfig(), ["background", "rbc", "wbc"])
    one = scorer.add(class_map, CountSample("a", Path("a.png"), {"rbc": np.array([[15, 30]]),
                                                                 "wbc": np.array([[5, 5]])}))
    scorer.add(class_map, CountSample("b", Path("b.png"), {"rbc": np.array([[15, 30], [40, 30], [70, 50]])}))
    assert one == {"counts": {"rbc": 2, "macrophage": 0}, "scored_counts": {"rbc": 2}, "true_counts": {"rbc": 1}}
    s = scorer.summary()
    # The totals agree (4 counted, 4 annotated) while one cell per image is wrong: ratio 1, MAE 1, F1 0.75.
    assert s["counts"] == {"rbc": 4} and s["true_counts"] == {"rbc": 4} and s["count_accuracy"] == {"rbc": 1.0}
    assert s["mean_abs_error"] == {"rbc": 1.0} and s["instances"]["rbc"]["f1"] == 0.75
    assert s["not_predicted"] == {"wbc": 1}, "annotated classes the class maps lack are listed, never scored"


def test_a_labelled_dataset_is_scored_on_its_own_cells_not_the_counters_resplit(tmp_path):
    """Two overlapping cells with no neck between them: the labeller's instances hold two, the counter's split of
    the class map one. `csc-data count LABELS --truth POINTS` scores what the labeller wrote (on 27 held-out BCCD
    smears: 610 cells, where the re-split gave 502) and says so; --resplit asks for the counter's."""
    mask = np.zeros((80, 120), np.uint8)
    disc(mask, 55, 40, 18, 1)
    disc(mask, 65, 40, 18, 1)
    instances = np.zeros(mask.shape, np.uint16)
    instances[mask > 0] = 1
    instances[:, 60:][mask[:, 60:] > 0] = 2  # the labeller's area division: two cells
    with DatasetWriter(tmp_path / "labels", source="test", labels="labeller", extra={"autolabel": {}}) as writer:
        writer.add("a", np.full((80, 120, 3), 200, np.uint8), mask, instances)
    images = tmp_path / "img"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((80, 120, 3), np.uint8))
    (tmp_path / "p.csv").write_text("image,x,y,class\na.png,55,40,RBC\na.png,65,40,RBC\n")
    import_annotations(read_points(tmp_path / "p.csv"), images, tmp_path / "truth", ClassMap.parse("RBC=rbc"),
                       origin="import:points")
    own = count_dataset(tmp_path / "labels", truth=tmp_path / "truth")
    assert own["counts"]["rbc"] == 2 and own["instances"]["rbc"]["f1"] == 1.0
    assert own["cells_from"].startswith("the dataset's own instances/")
    resplit = count_dataset(tmp_path / "labels", truth=tmp_path / "truth", resplit=True)
    assert resplit["counts"]["rbc"] == 1 and resplit["cells_from"] == "the class maps, split by the counter"
    result = CliRunner().invoke(app, ["count", str(tmp_path / "labels"), "--truth", str(tmp_path / "truth")])
    assert result.exit_code == 0 and "cells scored: the dataset's own instances/" in " ".join(result.output.split())


def edge_band_case() -> tuple[np.ndarray, dict]:
    """A cell inside with its point, a cell centred 11 px from the left edge (not cut by it) with no point, and a
    point on background 5 px from the bottom edge: what an edge band of 12 px leaves out of the scoring."""
    class_map = np.zeros((60, 80), np.uint8)
    disc(class_map, 40, 25, 8, 1)
    disc(class_map, 11, 25, 8, 1)
    return class_map, {"rbc": np.array([[40.0, 25.0], [60.0, 54.0]])}


def test_an_edge_band_leaves_out_points_and_unhit_cells_near_the_frame_edge():
    """Annotators mark cells near the frame edge inconsistently (Chula RBC-12): within the band a point is not a
    miss and a cell no point hits is not a false positive; without the band both count."""
    class_map, points = edge_band_case()
    result = CellCounter().count(class_map, return_labels=True)
    assert not result.cells["touches_border"].any(), "the band, not the frame edge, is what spares the left cell"
    names = ("background", "rbc", "macrophage")
    assert score_points(result.labels, result.cells, points, names) == {"rbc": (1, 1, 1)}
    assert score_points(result.labels, result.cells, points, names, edge_band=12) == {"rbc": (1, 0, 0)}
    # A point inside the band does not rescue its cell either: the band's points are not scored at all.
    in_band = {"rbc": np.vstack([points["rbc"], [[11.0, 25.0]]])}
    assert score_points(result.labels, result.cells, in_band, names, edge_band=12) == {"rbc": (1, 0, 0)}


def test_point_scorer_applies_its_edge_band():
    from pathlib import Path

    from runtime.data.count_dataset import CountSample
    from runtime.counting.counter import CountingConfig
    from runtime.counting.evaluation import PointScorer

    class_map, points = edge_band_case()
    sample = CountSample("a", Path("a.png"), points)
    plain = PointScorer(CountingConfig(), ["background", "rbc"]).add(class_map, sample)
    banded = PointScorer(CountingConfig(), ["background", "rbc"], edge_band=12).add(class_map, sample)
    assert plain["scored_counts"] == {"rbc": 2} and plain["true_counts"] == {"rbc": 2}
    assert banded["scored_counts"] == {"rbc": 1} and banded["true_counts"] == {"rbc": 1}
    assert banded["counts"] == {"rbc": 2, "macrophage": 0}, "the band changes the scoring, never the count"
