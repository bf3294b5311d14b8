"""The real-image benchmark's own parts: the reference baseline, scoring on real files, the README table."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.real.real_counts import (CHULA_EDGE_BAND, CHULA_PIXEL_UM, SUBSET, import_real, labeller, measure,
                                    reference_labels, render_markdown, score_marks)
from runtime.errors import CscError

REAL = Path(__file__).resolve().parents[3] / "shared" / "real"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real images not present at {REAL} (see its README)")


def test_reference_splits_touching_dark_discs():
    image = np.full((200, 300, 3), 210, np.uint8)
    for x in (50, 85, 200):  # two touching discs and one apart, 36 px across like Chula RBCs
        cv2.circle(image, (x, 100), 18, (120, 90, 150), -1)
    labels = reference_labels(image, CHULA_PIXEL_UM)
    assert len(np.unique(labels)) - 1 == 3
    assert labels[100, 50] != labels[100, 85] and labels[100, 200] > 0


def test_missing_real_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CscError, match="real images are not here"):
        measure(tmp_path / "nowhere")


def test_subset_file_says_how_it_was_chosen():
    subset = json.loads(SUBSET.read_text())
    assert len(subset["images"]) >= 30 and "visually" in subset["how"]
    assert len({image["stem"] for image in subset["images"]}) == len(subset["images"])


@needs_real
def test_classical_path_on_two_curated_chula_images(tmp_path):
    chula, _ = import_real(REAL, tmp_path)
    stems = [image["stem"] for image in json.loads(SUBSET.read_text())["images"][:2]]
    result = score_marks(chula, stems, labeller(), CHULA_PIXEL_UM, CHULA_EDGE_BAND)
    rbc = result.summary["instances"]["rbc"]
    assert result.summary["images"] == 2 and rbc["f1"] > 0.9
    assert 0.85 < result.summary["count_accuracy"]["rbc"] < 1.15


def test_readme_table_from_a_result():
    method = {"ratio": 1.01, "f1": 0.96, "wbcs_counted_as_rbc": 0, "wbcs": 3}
    result = {"chula": {"methods": {"a": method}}, "bccd": {"methods": {"a": method}},
              "dsb_nuclei": {"methods": {"a": {"miou": 0.83, "counts": {"nuclei": 101}}}}}
    row = render_markdown(result).splitlines()[2]
    assert row == "| a | 1.010 | 0.960 | 1.010 | 0.960 | 0 / 3 | 0.830 | 101 |"
