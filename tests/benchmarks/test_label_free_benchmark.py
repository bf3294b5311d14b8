"""The label-free benchmark's own parts: scoring, the reference, the simulated sets, a missing real set, the
documented table (docs/labelling.md)."""
import json
from pathlib import Path

import numpy as np

from benchmarks.real.label_free import (bbbc030, bbbc030_resized, bbbc030_sparse, cropped_pairs,
                                        local_variance_reference, render_markdown, resized_pairs, score, simulated)
from runtime.data.simulator import make_microscope

ROOT = Path(__file__).resolve().parents[2]


def test_score_counts_matches_and_the_set_miou():
    frame = make_microscope("rbc", size=128, seed=4, optics="dic").frame(0)
    truth = frame.instances.astype(np.int32)
    perfect = score([(frame.image, truth)], lambda images, d: [truth], 15.0)
    assert perfect["f1_iou50"] == 1.0 and perfect["count_ratio"] == 1.0 and perfect["miou"] == 1.0
    nothing = score([(frame.image, truth)], lambda images, d: [np.zeros_like(truth)], 15.0)
    assert nothing["f1_iou50"] == 0.0 and nothing["predicted"] == 0 and nothing["fn"] == perfect["annotated"]
    assert 0.4 < nothing["miou"] < 0.5, "background IoU alone, averaged with a cell IoU of 0"


def test_the_reference_finds_label_free_cells_at_the_given_size():
    frame = make_microscope("macrophage", size=256, seed=5, optics="phase").frame(0)
    labels = local_variance_reference(frame.image, 41.0)
    assert labels.dtype == np.int32 and labels.max() >= 1
    found, cells = labels > 0, frame.instances > 0
    assert found[cells].mean() > 5 * found[~cells].mean(), "its objects lie on cells, not on the background"


def test_simulated_sets_score_each_optics_and_method():
    result = simulated(n=1, seed=3, size=128)
    assert set(result["sets"]) == {f"{k} {o}" for k in ("rbc", "macrophage") for o in ("stained", "brightfield",
                                                                                      "phase", "dic")}
    for name, entry in result["sets"].items():
        assert sum(entry["modality_detected"].values()) == 1
        assert len(entry["methods"]) == 2 and all(r["annotated"] >= 0 for r in entry["methods"].values())
        # the copy the first pass measured on, for label-free optics only (stained frames never take that path)
        assert ("first_pass_copy" in entry) == (not name.endswith("stained"))


def test_magnified_sets_keep_the_cells_per_square_micrometre_and_are_rendered():
    """A set at 0.2 µm/px draws cells twice as wide, a quarter as many per frame, and its rows name the scale."""
    plain = simulated(n=2, seed=3, size=256, kinds=("rbc",), optics_names=("dic",))
    zoomed = simulated(n=2, seed=3, size=256, kinds=("rbc",), optics_names=("dic",), pixel_size_um=0.2)
    assert zoomed["pixel_size_um"] == 0.2 and "pixel_size_um" not in plain
    cells = [entry["sets"]["rbc dic"]["methods"]["csc-label auto --split-touching (nothing given)"]["annotated"]
             for entry in (plain, zoomed)]
    assert 2 * cells[1] < cells[0]
    assert plain["sets"]["rbc dic"]["first_pass_copy"] == {"1": 2}  # 15-px cells: measured at full size
    copies = zoomed["sets"]["rbc dic"]["first_pass_copy"]  # 30-px cells: the half-size copy, where frames show it
    assert sum(copies.values()) == 2 and copies.get("2", 0) >= 1
    table = render_markdown({"bbbc030": {}, "simulated": {"sets": {}}, "magnified": {"rbc at 0.2 µm/px": zoomed}})
    assert "| simulated rbc dic, 0.2 µm/px |" in table


def test_frames_of_another_shape_are_drawn_and_rendered():
    """``height`` draws frames that high (the full-frame sets: 4000×3000), records it, and their rows are shown."""
    wide = simulated(n=1, seed=3, size=256, kinds=("rbc",), optics_names=("dic",), height=128)
    square = simulated(n=1, seed=3, size=256, kinds=("rbc",), optics_names=("dic",))
    assert wide["height"] == 128 and "height" not in square
    cells = [entry["sets"]["rbc dic"]["methods"]["csc-label auto --split-touching (nothing given)"]["annotated"]
             for entry in (wide, square)]
    assert cells[0] < cells[1]
    table = render_markdown({"bbbc030": {}, "simulated": {"sets": {}}, "full_frames": {"rbc at 256×128": wide}})
    assert "| simulated rbc dic, 256×128 |" in table


def test_a_missing_real_set_is_skipped_with_the_reason(tmp_path):
    assert "absent" in bbbc030(tmp_path)["skipped"]
    assert "absent" in bbbc030_resized(tmp_path)["skipped"]
    assert "absent" in bbbc030_sparse(tmp_path)["skipped"]


def test_sparse_crops_cut_image_and_truth_alike_and_drop_the_remainder():
    image = np.arange(250 * 330, dtype=np.int64).reshape(250, 330) % 251
    truth = np.arange(250 * 330, dtype=np.int32).reshape(250, 330)
    crops = list(cropped_pairs([(image.astype(np.uint8), truth)], 100))
    assert len(crops) == 6, "a 3 × 2 grid: the last 30 and 50 px dropped"
    assert all(i.shape == t.shape == (100, 100) for i, t in crops)
    assert crops[4][1][0, 0] == truth[100, 100] and np.array_equal(crops[4][0], image[100:200, 100:200] % 256)


def test_resized_pairs_keep_every_instance_and_its_ids():
    frame = make_microscope("macrophage", size=128, seed=4, optics="dic").frame(0)
    truth = frame.instances.astype(np.uint16)
    for factor, side in ((0.5, 64), (2.0, 256)):
        image, labels = next(resized_pairs([(frame.image, truth)], factor))
        assert image.shape[:2] == labels.shape == (side, side) and labels.dtype == np.uint16
        assert set(np.unique(labels)) == set(np.unique(truth))


def test_docs_table_is_the_committed_result_rendered():
    """docs/labelling.md shows, between its markers, the table docs/hooks.py renders at build time: render_markdown
    of the committed benchmarks/results/label_free.json (then the line naming that file)."""
    import importlib.util

    page = (ROOT / "docs" / "labelling.md").read_text(encoding="utf-8")
    begin, end = "<!-- label-free: python -m benchmarks.real.label_free --table", "<!-- label-free: end -->"
    assert page.count(begin) == 1 and page.count(end) == 1
    block = page.split(begin)[1].split("-->", 1)[1].split(end)[0]
    assert block.strip() == '{{ table("label_free") }}'
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    result = json.loads((ROOT / "benchmarks" / "results" / "label_free.json").read_text(encoding="utf-8"))
    rendered = hooks.render_markers(block).strip()
    assert rendered.startswith(render_markdown(result).strip())
    assert rendered[len(render_markdown(result).strip()):].strip().startswith(
        "*Rendered at build time from `benchmarks/results/label_free.json`")


def test_sparse_sets_hold_fewer_cells_and_score_each_image_alone_beside_the_folder():
    """``crowding`` draws that share of the cells per µm² and records it; the sparse sets add the labeller on each
    image alone to the methods, and their rows are rendered."""
    from benchmarks.real.label_free import alone, labeller

    plain = simulated(n=2, seed=3, size=256, kinds=("rbc",), optics_names=("dic",))
    methods = {"folder": labeller, "alone": alone}
    sparse = simulated(n=2, seed=3, size=256, kinds=("rbc",), optics_names=("dic",), crowding=0.3, methods=methods)
    assert sparse["crowding"] == 0.3 and "crowding" not in plain
    rows = sparse["sets"]["rbc dic"]["methods"]
    assert set(rows) == {"folder", "alone"} and rows["folder"]["annotated"] == rows["alone"]["annotated"]
    cells = plain["sets"]["rbc dic"]["methods"]["csc-label auto --split-touching (nothing given)"]["annotated"]
    assert 2 * rows["folder"]["annotated"] < cells
    table = render_markdown({"bbbc030": {}, "simulated": {"sets": {}}, "sparse": {"rbc at 0.4 µm/px": sparse}})
    assert "| simulated rbc dic, 0.4 µm/px | folder |" in table
