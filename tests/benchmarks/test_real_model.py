"""The real-model recipe's label making: BCCD boxes shape the cells of U-Transfer's mixed images."""
import cv2
import numpy as np

from benchmarks.real_model import box_instances, without_wbcs


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


def test_the_counting_rule_settings_are_counter_options():
    from benchmarks.counting_rules import SETTINGS
    from runtime.counting import CountingConfig

    configs = {name: CountingConfig(**settings) for name, settings in SETTINGS.items()}
    assert configs["both off (the counter before)"].one_cell == 0
    assert configs["both off (the counter before)"].cut_cell_fraction == 1
    assert configs["both rules (defaults)"] == CountingConfig()
