"""The real-model recipe's label making: BCCD boxes shape the cells of U-Transfer's mixed images."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.real.real_model import Recipe, bccd_mixed, box_instances, keep_recipe, without_wbcs
from runtime.errors import CscError

REAL = Path(__file__).resolve().parents[3] / "shared" / "real"


def test_two_overlapping_boxes_over_one_blob_become_two_cells():
    fg = np.zeros((60, 100), bool)
    blob = np.zeros((60, 100), np.uint8)
    cv2.circle(blob, (35, 30), 15, 1, -1)
    cv2.circle(blob, (58, 30), 15, 1, -1)  # two overlapping cells the labeller saw as one
    fg[blob > 0] = True
    auto = blob.astype(np.int32)
    boxes = np.array([[20, 15, 50, 45], [43, 15, 73, 45]], np.float32)
    cells = box_instances(fg, boxes, auto)
    assert sorted(np.unique(cells).tolist()) == [0, 1, 2]
    assert cells[30, 30] == 1 and cells[30, 63] == 2
    assert not (cells[~fg] > 0).any()  # cut to the foreground
    assert abs((cells == 1).sum() - (cells == 2).sum()) < 0.1 * (cells > 0).sum()


def test_a_box_without_foreground_is_its_ellipse_and_unboxed_cells_are_kept():
    fg = np.zeros((60, 120), bool)
    auto = np.zeros((60, 120), np.int32)
    cv2.circle(auto, (95, 30), 10, 7, -1)  # a cell the annotators did not box
    fg[auto > 0] = True
    cells = box_instances(fg, np.array([[10, 10, 40, 50]], np.float32), auto)
    assert cells[30, 25] == 1  # a pale cell the labeller missed: the box's ellipse
    assert (cells == 1).sum() > 0.8 * np.pi * 15 * 20 * 0.95**2
    assert cells[30, 95] == 2 and (cells == 2).sum() == (auto == 7).sum()


def test_cells_under_a_wbc_box_centre_are_dropped():
    auto = np.zeros((40, 80), np.int32)
    auto[5:20, 5:20], auto[5:20, 40:60] = 1, 2
    kept = without_wbcs(auto, np.array([[50.0, 12.0]]))
    assert set(np.unique(kept).tolist()) == {0, 1}
    assert without_wbcs(auto, None) is auto


def test_degenerate_and_outside_boxes_make_no_cell_and_leave_no_id_gap():
    fg = np.ones((40, 40), bool)
    boxes = np.array([[5, 5, 5.5, 30], [100, 100, 130, 130], [10, 10, 30, 30]], np.float32)
    cells = box_instances(fg, boxes, np.zeros((40, 40), np.int32))
    assert sorted(np.unique(cells).tolist()) == [0, 1]
    assert cells[20, 20] == 1 and cells[20, 5] == 0


def test_a_work_folder_of_another_recipe_is_refused(tmp_path):
    keep_recipe(tmp_path, Recipe())
    keep_recipe(tmp_path, Recipe())  # the same recipe: its stages are reused
    with pytest.raises(CscError, match="another recipe"):
        keep_recipe(tmp_path, Recipe(transfer_steps=10))


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real images not present at {REAL} (see its README)")
def test_bccd_training_half_with_box_or_labeller_cells(tmp_path):
    from runtime.data.dataset import open_dataset

    counts = {}
    for labels in ("auto", "boxes"):
        bccd_mixed(REAL, tmp_path / "data", tmp_path / f"out-{labels}", labels)
        dataset = open_dataset(tmp_path / f"out-{labels}")
        assert len(dataset) == 97 and dataset.pixel_size_um == 0.4
        counts[labels] = sum(n["rbc"] for n in dataset.meta["images"].values())
    from runtime.data.count_dataset import open_count_dataset

    marks = open_count_dataset(tmp_path / "data" / "bccd-import" / "bccd").by_stem()
    boxes = sum(len(marks[stem].boxes["rbc"]) for stem in open_dataset(tmp_path / "out-boxes").meta["images"])
    assert boxes <= counts["boxes"] <= 1.1 * boxes, "one cell per RBC box, plus the few cells no box covers"
    assert counts["boxes"] > counts["auto"], "boxes part overlapping cells the labeller leaves merged"
    assert (tmp_path / "data" / "bccd-auto" / "dataset.json").exists(), "the labeller's own output stays as it was"
