"""The label-free recipe's own rule: which model, if any, is bundled."""
from pathlib import Path

from benchmarks.real.label_free_model import choose

MODELS = {"U-Single": Path("s.onnx"), "U-Transfer": Path("t.onnx")}


def evaluation(single_f1, transfer_f1, transfer_counts=(0.95, 0.9), magnified_counts=None):
    rows = {"auto-labels (csc-label auto --kind macrophage --split-touching)": {"f1_iou50": 0.96},
            "U-Single (csc-run --pixel-size 0.313)": {"f1_iou50": single_f1},
            "U-Transfer (csc-run --pixel-size 0.313)": {"f1_iou50": transfer_f1}}
    counts = {"U-Single": {"count_accuracy": {"rbc": 1.0, "macrophage": 0.6}},
              "U-Transfer": {"count_accuracy": dict(zip(("rbc", "macrophage"), transfer_counts))}}
    out = {"bbbc030_evaluation": {"methods": rows}, "simulated_label_free_mixed": counts}
    if magnified_counts is not None:
        out["simulated_label_free_magnified"] = {
            name: {"count_accuracy": dict(zip(("rbc", "macrophage"), magnified_counts))} for name in MODELS}
    return out


def test_a_model_is_bundled_only_where_it_beats_its_labels_and_counts_within_15_percent():
    assert choose(evaluation(0.95, 0.97), MODELS) == "U-Transfer"
    assert choose(evaluation(0.95, 0.955), MODELS) is None, "below the labels' F1"
    assert choose(evaluation(0.99, 0.95), MODELS) is None, "U-Single's simulated macrophage count is off 40 %"
    assert choose(evaluation(0.95, 0.97, (1.0, 0.8)), MODELS) is None, "20 % off in simulation"
    assert choose(evaluation(0.95, 0.97, magnified_counts=(0.9, 1.1)), MODELS) == "U-Transfer"
    assert choose(evaluation(0.95, 0.97, magnified_counts=(0.5, 1.0)), MODELS) is None, "half the magnified RBCs"


def test_frames_of_another_pixel_size_are_counted_through_the_runtimes_rescale(tmp_path):
    """`demo_counts` brings a simulated set at 0.2 µm/px to the model's 0.4, as `csc-run --pixel-size 0.2` does:
    the bundled label-free model counts its phase-contrast RBCs (30 px across, twice the size it learnt) near the
    truth."""
    from benchmarks.real.label_free_model import magnified
    from benchmarks.real.real_model import demo_counts
    from runtime.cli.run import LABEL_FREE_MODEL
    from runtime.data.synthesize import synthesize_dataset

    folder = synthesize_dataset("rbc", 2, tmp_path / "rbc", seed=4, optics="phase", **magnified("rbc", 0.2))
    found = demo_counts(LABEL_FREE_MODEL, folder)
    assert found["true_counts"]["rbc"] >= 10
    assert abs(found["count_accuracy"]["rbc"] - 1) <= 0.15, found


def test_the_evaluation_scores_the_labels_and_each_model_through_the_runtime(monkeypatch, tmp_path):
    """`evaluate` on one simulated DIC macrophage field standing in for BBBC030's evaluation part: the auto-labels
    (a set labelled as a folder) and the bundled label-free model through `csc-run --pixel-size`'s path (each image
    alone) are both scored, each finding cells."""
    from benchmarks.real import label_free_model
    from runtime.cli.run import LABEL_FREE_MODEL
    from runtime.data.simulator import make_microscope

    frame = make_microscope("macrophage", size=256, seed=5, optics="dic", pseudopods=2.0).frame(0)
    monkeypatch.setattr(label_free_model, "bbbc030_pairs", lambda real, stems: iter([(frame.image, frame.instances)]))
    monkeypatch.setattr(label_free_model, "simulated_counts", lambda model, sets: {"count_accuracy": {}})
    out = label_free_model.evaluate({"U-Transfer": LABEL_FREE_MODEL}, tmp_path, {"bbbc_pixel_um": 0.4, "test": []})
    methods = out["bbbc030_evaluation"]["methods"]
    assert len(methods) == 2 and all(row["predicted"] > 0 and row["annotated"] > 0 for row in methods.values())


def test_a_magnified_transfer_set_too_small_for_the_transfer_is_refused_before_any_training():
    """`--magnified-mixed N` pools 6·N frames of which U-Transfer takes 17 of the training split: a pool too small
    for that is refused when the recipe is made, not after U-Single's 20 minutes."""
    import pytest

    from benchmarks.real.label_free_model import Recipe
    from runtime.errors import CscError

    with pytest.raises(CscError, match="--magnified-mixed 4 or more"):
        Recipe(magnified_mixed_per_optics=3)
    assert Recipe(magnified_mixed_per_optics=4).magnified_mixed_per_optics == 4
    assert Recipe().magnified_mixed_per_optics == 0, "off unless asked"
