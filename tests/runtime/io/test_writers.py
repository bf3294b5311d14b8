"""Result CSVs: a capped CSV keeps its header and its newest rows, and a reader never sees it cut."""
import csv

import pytest

from runtime.io.writers import CountsCsvWriter


def test_a_capped_counts_csv_keeps_its_header_and_newest_rows(tmp_path):
    path = tmp_path / "counts.csv"
    writer = CountsCsvWriter(path, ("background", "rbc", "macrophage"), max_bytes=4096)
    held = None
    for frame in range(2000):
        writer.write(frame, "demo", {"rbc": frame % 50, "macrophage": 1}, 30.0, 0.5)
        if frame == 100:
            held = open(path, encoding="utf-8")  # a download in progress while the file is trimmed
    writer.close()
    rows = list(csv.reader(path.open(encoding="utf-8")))
    assert path.stat().st_size <= 4096 + 64
    assert rows[0] == ["frame", "source", "rbc", "macrophage", "fps", "pixel_size_um"]
    frames = [int(r[0]) for r in rows[1:]]
    assert frames[-1] == 1999 and frames == list(range(frames[0], 2000)), "the newest rows, whole and in order"
    assert len(frames) > 20
    old = list(csv.reader(held))
    held.close()
    assert old[0][0] == "frame" and [int(r[0]) for r in old[1:]] == list(range(len(old) - 1)), "the old file intact"
    assert not (tmp_path / "counts.csv.part").exists()


def test_an_uncapped_csv_keeps_every_row(tmp_path):
    path = tmp_path / "counts.csv"
    with CountsCsvWriter(path) as writer:
        for frame in range(3000):
            writer.write(frame, "demo", {"rbc": 3}, 30.0)
    assert len(path.read_text().splitlines()) == 3001


def test_the_web_views_own_csvs_are_capped_and_the_users_are_not(tmp_path):
    """A run of weeks with --serve and no --save-cells must not fill the disk; a file the user asked for is whole."""
    from types import SimpleNamespace

    from runtime.pipeline.stream import RunOptions
    from runtime.serve.live import TEMPORARY_CSV_BYTES, WebView

    view = WebView.__new__(WebView)  # only its choice of CSV paths: no port, no model
    view._tmp = None
    options = RunOptions(save_csv=tmp_path / "mine.csv")
    counts, cells = view._csv_paths(SimpleNamespace(options=options))
    try:
        assert counts == tmp_path / "mine.csv" and options.counts_csv_max_bytes is None
        assert cells.parent != tmp_path and options.cells_csv_max_bytes == TEMPORARY_CSV_BYTES
    finally:
        view._tmp.cleanup()


def test_an_output_onto_a_folder_is_a_clear_error(tmp_path):
    """A file written where a folder of that name exists: `atomic_path` says so, and the folder is left as it was
    (os.replace had raised IsADirectoryError from a temporary name the user never gave)."""
    from runtime.errors import CscError
    from runtime.io.writers import write_json

    (tmp_path / "out").mkdir()
    with pytest.raises(CscError, match="out: cannot write here \\(a folder of that name exists\\)"):
        write_json(tmp_path / "out", {"frames": 1})
    assert (tmp_path / "out").is_dir() and not list((tmp_path / "out").iterdir()) and len(list(tmp_path.iterdir())) == 1


def test_a_csv_is_replaced_only_by_its_first_row(tmp_path):
    """A run that ends before its first frame must leave an earlier run's CSV of the same name as it was (it held
    the header alone); the first row replaces it whole."""
    path = tmp_path / "counts.csv"
    path.write_text("frame,source,rbc\n1,old,5\n")
    CountsCsvWriter(path).close()
    assert path.read_text() == "frame,source,rbc\n1,old,5\n"
    with CountsCsvWriter(path, ("background", "rbc")) as writer:
        writer.write(0, "new", {"rbc": 2}, None)
    assert path.read_text().splitlines() == ["frame,source,rbc,fps,pixel_size_um", "0,new,2,,"]


def test_a_csv_onto_a_folder_is_refused_at_once(tmp_path):
    """Made by its first row, a CSV named like a folder passed its writer's check and failed only at the first
    counted frame ("Is a directory"); it is refused where the writer is made, in the words of every result file."""
    from runtime.errors import CscError

    (tmp_path / "counts.csv").mkdir()
    with pytest.raises(CscError, match="counts.csv: cannot write here \\(a folder of that name exists\\)"):
        CountsCsvWriter(tmp_path / "counts.csv")
