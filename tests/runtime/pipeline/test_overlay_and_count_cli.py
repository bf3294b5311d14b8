import json

import numpy as np
import pytest
from typer.testing import CliRunner

from runtime.cli.data import app
from runtime.pipeline.overlay import CLASS_COLOURS, OverlayRenderer


def test_outlines_colour_class_boundaries_only():
    frame = np.full((40, 40, 3), 200, np.uint8)
    m = np.zeros((40, 40), np.uint8)
    m[10:20, 10:20] = 1
    out = OverlayRenderer().outlines(frame, m)
    assert tuple(out[10, 15]) == tuple(CLASS_COLOURS[1])  # on the boundary
    assert tuple(out[15, 15]) == (200, 200, 200) and tuple(out[30, 30]) == (200, 200, 200)
    assert tuple(frame[10, 15]) == (200, 200, 200), "the input frame is not modified"


def test_legend_draws_counts():
    def legend(counts, fps):
        image = np.full((200, 200, 3), 255, np.uint8)
        OverlayRenderer().legend(image, counts, fps=fps)
        return image

    drawn = legend({"rbc": 12, "macrophage": 3}, 30.0)
    assert (drawn[:60, :100] < 255).any() and (drawn[150:, :] == 255).all(), "in the top-left corner only"
    assert not np.array_equal(drawn, legend({"rbc": 13, "macrophage": 3}, 30.0)), "the counts are drawn"
    assert not np.array_equal(drawn, legend({"rbc": 12, "macrophage": 3}, None)), "so is the FPS"


def test_count_cli_contract(mixed_dataset, tmp_path):
    result = CliRunner().invoke(app, ["count", str(mixed_dataset), "--json", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "c.json").read_text())
    meta = json.loads((mixed_dataset / "dataset.json").read_text())
    assert set(data["counts"]) == {"rbc", "macrophage"}
    assert data["true_counts"] == meta["counts"]
    # The dataset's own (true) masks, touching cells split: every RBC is found, and the accuracy says so.
    assert data["counts"]["rbc"] == data["true_counts"]["rbc"] and data["count_accuracy"]["rbc"] == 1.0
    result = CliRunner().invoke(app, ["count", str(mixed_dataset), "--json", str(tmp_path / "n.json"),
                                      "--no-split-touching"])
    unsplit = json.loads((tmp_path / "n.json").read_text())
    assert unsplit["counts"]["rbc"] < data["counts"]["rbc"] and unsplit["count_accuracy"]["rbc"] < 1.0


def test_count_cli_checks_json_before_counting(mixed_dataset, tmp_path, monkeypatch):
    """--json onto the dataset's own dataset.json replaced its metadata (classes, pixel size, provenance) with
    the summary, and onto a folder failed only after the whole count: both are refused before counting, a place
    among the dataset's (or --truth's) own files in the words `csc-train eval --json` and `export --out` use."""
    import runtime.counting.evaluation as evaluation
    from runtime.errors import CscError

    def never(*args, **kwargs):
        raise AssertionError("counted before --json was checked")

    monkeypatch.setattr(evaluation, "count_dataset", never)
    meta = (mixed_dataset / "dataset.json").read_text()
    for target, reason in ((mixed_dataset / "dataset.json", "--json lies among the dataset's own files (dataset.json)"),
                           (mixed_dataset / "masks" / "counts.json", "--json lies among the dataset's own files"),
                           (tmp_path / "truth" / "dataset.json", "--json lies among the dataset's own files"),
                           (tmp_path, "names a folder")):
        result = CliRunner().invoke(app, ["count", str(mixed_dataset), "--truth", str(tmp_path / "truth"), "--json",
                                          str(target)])
        assert isinstance(result.exception, CscError) and reason in str(result.exception), result.output
    assert (mixed_dataset / "dataset.json").read_text() == meta


def test_count_cli_without_instances(mixed_dataset, tmp_path):
    import shutil

    root = shutil.copytree(mixed_dataset, tmp_path / "d")
    shutil.rmtree(root / "instances")
    result = CliRunner().invoke(app, ["count", str(root), "--json", str(tmp_path / "c.json"), "--no-split-touching"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "c.json").read_text())
    assert "true_counts" not in data and data["counts"]["rbc"] > 0


def test_count_cli_border_is_a_choice(mixed_dataset):
    import subprocess
    import sys

    from runtime.counting.counter import BORDER_POLICIES

    text = " ".join(CliRunner().invoke(app, ["count", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "|".join(BORDER_POLICIES) in text
    run = subprocess.run([sys.executable, "-c", "from runtime.cli.data import main; main()", "count", str(mixed_dataset),
                          "--border", "sometimes"], capture_output=True, text=True)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and len(lines) == 1 and "'sometimes' is not one of" in lines[0], run.stderr


def test_count_reads_the_scale_off_an_auto_labelled_set_unless_given(tmp_path):
    """A labelled folder whose scale was estimated: `csc-data count` estimates it per image again and says so;
    --diameter or --pixel-size fix it (not both)."""
    import cv2

    from runtime.data.dataset import DatasetWriter

    with DatasetWriter(tmp_path / "d", source="test", extra={"scale": "estimated"}) as writer:
        mask = np.zeros((200, 200), np.uint8)
        for x in range(20, 200, 40):
            for y in range(20, 200, 40):
                cv2.circle(mask, (x, y), 12, 1, -1)  # 25 cells of 24 px
        writer.add("a", np.full((200, 200, 3), 200, np.uint8), mask)
    result = CliRunner().invoke(app, ["count", str(tmp_path / "d"), "--json", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "c.json").read_text())
    image = summary["per_image"]["a"]
    assert image["counts"]["rbc"] == 25 and image["scale"] == "estimated"
    assert abs(image["pixel_size_um"] - 6.0 / 24) < 0.03 and summary["config"]["pixel_size_um"] is None
    assert "scale: estimated" in " ".join(result.output.split())
    given = CliRunner().invoke(app, ["count", str(tmp_path / "d"), "--diameter", "24", "--json", str(tmp_path / "g.json")])
    assert given.exit_code == 0 and json.loads((tmp_path / "g.json").read_text())["config"]["pixel_size_um"] == 0.25
    both = CliRunner().invoke(app, ["count", str(tmp_path / "d"), "--diameter", "24", "--pixel-size", "0.2"])
    assert both.exit_code != 0 and "not both" in str(both.exception)


def test_count_refuses_a_scale_that_is_no_number_before_counting(mixed_dataset, monkeypatch):
    """--pixel-size 0 was taken for 'not given' (the dataset's scale used instead, silently); NaN or infinity as
    --pixel-size or --diameter ended the count in a traceback."""
    import runtime.counting.evaluation as evaluation
    from runtime.errors import CscError

    monkeypatch.setattr(evaluation, "count_dataset", lambda *args, **kwargs: pytest.fail("counted"))
    for option, value, reason in (("--pixel-size", "0", "pixel size must be positive"),
                                  ("--pixel-size", "nan", "pixel size must be positive"),
                                  ("--pixel-size", "inf", "pixel size must be positive"),
                                  ("--diameter", "nan", "diameter must be at least 2 px"),
                                  ("--diameter", "inf", "diameter must be at least 2 px")):
        result = CliRunner().invoke(app, ["count", str(mixed_dataset), option, value])
        assert isinstance(result.exception, CscError) and reason in str(result.exception), (option, value, result.output)
