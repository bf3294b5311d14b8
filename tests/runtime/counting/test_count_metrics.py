import json
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from runtime.counting.metrics import CountTally, match_instances


def test_instance_matching_on_a_hand_made_case():
    truth = np.zeros((10, 30), np.int32)
    truth[2:8, 2:8] = 1  # matched (IoU 30/36 > 0.5)
    truth[2:8, 12:18] = 2  # half covered: IoU 18/36 = 0.5 is not > 0.5 → missed
    truth[2:8, 22:28] = 3  # not predicted at all
    pred = np.zeros_like(truth)
    pred[2:7, 2:8] = 5
    pred[2:8, 12:15] = 9
    pred[0:2, 0:2] = 4  # a false positive
    tp, fp, fn = match_instances(pred, truth)
    assert (tp, fp, fn) == (1, 2, 2)
    assert match_instances(truth, truth) == (3, 0, 0)
    assert match_instances(np.zeros_like(truth), truth) == (0, 0, 3)
    with pytest.raises(ValueError):
        match_instances(pred, truth, threshold=0.3)


def test_tally_summary_hand_computed():
    tally = CountTally(("rbc", "macrophage"))
    tally.add({"rbc": 9, "macrophage": 2}, {"rbc": 10, "macrophage": 2})
    tally.add({"rbc": 12, "macrophage": 1}, {"rbc": 10, "macrophage": 2})
    tally.add_matches("rbc", 18, 3, 2)
    s = tally.summary()
    assert s["counts"] == {"rbc": 21, "macrophage": 3} and s["true_counts"] == {"rbc": 20, "macrophage": 4}
    assert s["count_accuracy"] == {"rbc": 1.05, "macrophage": 0.75}
    assert s["mean_abs_error"] == {"rbc": 1.5, "macrophage": 0.5}
    assert s["instances"]["rbc"]["precision"] == round(18 / 21, 4)
    assert s["instances"]["rbc"]["recall"] == 0.9
    assert s["instances"]["rbc"]["f1"] == round(36 / 41, 4)


def test_counts_csv_is_complete_after_a_crash_mid_stream(tmp_path):
    """A process killed without any clean-up (SIGKILL) still leaves every written frame in the CSV."""
    path = tmp_path / "counts.csv"
    script = textwrap.dedent(f"""
        import os, signal
        from runtime.io.writers import CountsCsvWriter
        writer = CountsCsvWriter({str(path)!r})
        for i in range(40):
            writer.write(i, "demo", {{"rbc": i, "macrophage": 1}}, 25.0, 0.194)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert run.returncode == -signal.SIGKILL
    lines = path.read_text().splitlines()
    assert lines[0] == "frame,source,rbc,macrophage,fps,pixel_size_um"
    assert len(lines) == 41 and lines[-1] == "39,demo,39,1,25.00,0.194"


def test_cells_csv_and_json(tmp_path):
    from runtime.counting.counter import CellCounter
    from runtime.io.writers import CellsCsvWriter, write_json

    m = np.zeros((40, 40), np.uint8)
    m[5:15, 5:15] = 1
    result = CellCounter().count(m)
    with CellsCsvWriter(tmp_path / "cells.csv") as writer:
        writer.write(0, "x.png", result)
    rows = (tmp_path / "cells.csv").read_text().splitlines()
    assert rows[0].startswith("frame,source,id,class,cx,cy,area_px") and rows[1].startswith("0,x.png,1,rbc,9.5,9.5,100,")
    write_json(tmp_path / "s.json", {"n": np.int64(3), "a": np.arange(2)})
    assert json.loads((tmp_path / "s.json").read_text()) == {"n": 3, "a": [0, 1]}
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_unwritable_csv_is_a_clear_error(tmp_path):
    from runtime.errors import CscError
    from runtime.io.writers import CountsCsvWriter

    (tmp_path / "file").write_text("")
    with pytest.raises(CscError, match="cannot write"):
        CountsCsvWriter(tmp_path / "file" / "counts.csv")


def test_point_matching_on_a_hand_made_case():
    from runtime.counting.metrics import match_points

    labels = np.zeros((20, 40), np.int32)
    labels[2:8, 2:8] = 1  # one point inside: a hit
    labels[2:8, 12:22] = 2  # two points inside (a merged pair): one hit, one miss
    labels[12:18, 2:8] = 3  # no point: a false positive
    labels[12:20, 30:40] = 4  # cut by the frame edge, no point: ignored when asked
    points = np.array([[4, 4], [14, 5], [19, 5], [30, 3]], float)  # the last one lies on background: a miss
    assert match_points(labels, points) == (2, 2, 2)
    assert match_points(labels, points, ignore=np.array([4])) == (2, 1, 2)
    # An ignored instance that a point does fall in is an ordinary hit.
    assert match_points(labels, np.array([[35.0, 15.0]]), ignore=np.array([4])) == (1, 3, 0)
    assert match_points(np.zeros_like(labels), points) == (0, 0, 4)
    assert match_points(labels, np.zeros((0, 2))) == (0, 4, 0)
