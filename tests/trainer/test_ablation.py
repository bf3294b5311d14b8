import importlib.util
import json

import pytest

from runtime.synthesize import synthesize_dataset
from trainer.ablation import COLUMNS, PAPER, dataset_set, run_ablation, stardist_nuclei_set, write_report


def test_table_shape_and_values(tmp_path):
    sets = [dataset_set(synthesize_dataset(k, 2, tmp_path / k, seed=1, size=128)) for k in ("rbc", "macrophage")]
    report = run_ablation(sets)
    assert report["columns"] == [c for c, _ in COLUMNS] and len(report["columns"]) == 6
    assert [r["kind"] for r in report["datasets"]] == ["rbc", "macrophage"]
    for row in report["datasets"]:
        assert set(row["miou"]) == set(report["columns"])
        assert all(0.5 < v <= 1.0 for v in row["miou"].values())
    json_path = write_report(report, tmp_path / "r.md")
    text = (tmp_path / "r.md").read_text()
    assert sum(line.startswith("|") for line in text.splitlines()) == 2 + len(PAPER) + 2  # header, rule, paper, ours
    assert json.loads(json_path.read_text())["datasets"][0]["n_images"] == 2


def test_mixed_dataset_is_refused(mixed_dataset):
    from runtime.errors import CscError

    with pytest.raises(CscError, match="single-kind"):
        dataset_set(mixed_dataset)


@pytest.mark.skipif(importlib.util.find_spec("stardist") is None,
                    reason="real images need `pip install --no-deps stardist==0.9.2` (the README's test command does it)")
def test_real_nuclei_image_from_the_stardist_wheel():
    real = stardist_nuclei_set()
    (image, truth), = list(real.pairs())
    assert image.shape == (512, 512, 3) and truth.shape == (512, 512) and 0.05 < truth.mean() < 0.6
    report = run_ablation([real])
    assert 0.5 < report["datasets"][0]["miou"]["T+C"] <= 1.0
