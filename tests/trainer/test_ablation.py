import importlib.util
import json
from pathlib import Path

import pytest

from runtime.data.synthesize import synthesize_dataset
from runtime.errors import CscError
from trainer.ablation import COLUMNS, PAPER, dataset_set, run_ablation, stardist_nuclei_set, write_report


def test_table_shape_and_report_files(tmp_path):
    sets = [dataset_set(synthesize_dataset(k, 2, tmp_path / k, seed=1, size=128)) for k in ("rbc", "macrophage")]
    report = run_ablation(sets)
    assert report["columns"] == [c for c, _ in COLUMNS] and len(report["columns"]) == 6
    assert [r["kind"] for r in report["datasets"]] == ["rbc", "macrophage"]
    for row in report["datasets"]:
        assert set(row["miou"]) == set(report["columns"])
    json_path = write_report(report, tmp_path / "r.md")
    text = (tmp_path / "r.md").read_text()
    assert sum(line.startswith("|") for line in text.splitlines()) == 2 + len(PAPER) + 2  # header, rule, paper, ours
    assert json.loads(json_path.read_text())["datasets"][0]["n_images"] == 2


@pytest.mark.parametrize(("out", "message"), [
    ("ds/dataset.md", "the report's JSON lies among the dataset's own files"),
    ("ds/dataset.json", "--out ends in .json"),
    ("ds/masks/report.md", "--out lies among the dataset's own files"),
    ("folder", "--out names a folder"),
])
def test_a_report_onto_a_dataset_or_a_folder_is_refused_before_any_work(tmp_path, out, message, monkeypatch):
    """`csc-label ablation DS --out DS/dataset.md` wrote its JSON over DS's dataset.json (DS/dataset.json wrote the
    Markdown there, then the JSON over it, and said "wrote DS/dataset.json and DS/dataset.json"): the dataset's
    classes, pixel size and provenance were gone. A folder failed only once the ablation was done."""
    from typer.testing import CliRunner

    import trainer.ablation
    from trainer.cli.label import app

    dataset = synthesize_dataset("rbc", 1, tmp_path / "ds", seed=1, size=64)
    (tmp_path / "folder").mkdir()
    before = (dataset / "dataset.json").read_text()
    monkeypatch.setattr(trainer.ablation, "run_ablation", lambda *a, **k: pytest.fail("the ablation ran"))
    result = CliRunner().invoke(app, ["ablation", str(dataset), "--no-real", "--out", str(tmp_path / out)])
    assert isinstance(result.exception, CscError) and message in str(result.exception), result.output
    assert (dataset / "dataset.json").read_text() == before


@pytest.mark.parametrize("column", [c for c, _ in COLUMNS])
def test_each_column_runs_its_own_steps(column):
    """Truth made by one column's own steps: that column scores exactly 1, and the steps of the others differ."""
    from dataclasses import replace

    from runtime.data.simulator import make_microscope
    from trainer.ablation import AblationSet
    from trainer.autolabel import AutoLabelConfig, auto_label

    image = make_microscope("rbc", size=128, seed=4).frame(0).image
    truth = auto_label(image, replace(AutoLabelConfig(kind="rbc"), **dict(COLUMNS)[column])).mask > 0
    miou = run_ablation([AblationSet("own", "rbc", "test", lambda: iter([(image, truth)]), n_images=1)])["datasets"][0]["miou"]
    assert miou[column] == 1.0
    assert min(miou.values()) < 0.99, "the steps of the other columns change the labels"


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
    committed = json.loads((Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "ablation.json").read_text())
    # The documented real row is this image: today's code must reproduce the committed numbers (rerun the ablation,
    # docs/labelling.md "Ablation", after changing the auto-labeller).
    assert report["datasets"][0] == next(r for r in committed["datasets"] if r["name"] == real.name)


def test_docs_ablation_is_the_committed_result_rendered(tmp_path):
    """The documented ablation (docs/labelling.md, between its markers) is the table that docs/hooks.py renders
    at build time, and that table is render_markdown of benchmarks/results/ablation.json, so the two cannot drift
    (after a rerun: commit ablation.md and ablation.json from that run)."""
    import importlib.util

    from trainer.ablation import render_markdown

    root = Path(__file__).resolve().parents[2]
    page = (root / "docs" / "labelling.md").read_text(encoding="utf-8")
    begin, end = "<!-- ablation: begin", "<!-- ablation: end -->"
    assert page.count(begin) == 1 and page.count(end) == 1
    block = page.split(begin)[1].split("-->", 1)[1].split(end)[0]
    assert block.strip() == '{{ table("ablation") }}'
    spec = importlib.util.spec_from_file_location("docs_hooks", root / "docs" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    report = json.loads((root / "benchmarks" / "results" / "ablation.json").read_text(encoding="utf-8"))
    assert hooks.render_markers(block).strip() == render_markdown(report).strip()
    write_report(report, tmp_path / "ablation.md")
    assert (root / "benchmarks" / "results" / "ablation.md").read_text(encoding="utf-8") == \
        (tmp_path / "ablation.md").read_text(encoding="utf-8"), "ablation.md and ablation.json come from one run"
