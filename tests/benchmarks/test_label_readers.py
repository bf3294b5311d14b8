"""Exports opened by the labelling tools' own readers (issue #26): LabelMe 6.3 (`LabelFile` + `shapes_to_label`),
Datumaro 1.13 (`cvat`, `coco_instances`) and pycocotools, in the environment `.ci/run` makes for them (they pull in
Qt and pandas, none of them the project's dependencies). Every cell must come back as exactly its pixels."""
import os

import pytest

from benchmarks.accuracy.label_readers import INSTALL, JUDGE, make_datasets, read_back


@pytest.fixture(scope="module")
def judge():
    if not JUDGE.exists():
        if os.environ.get("CI"):
            pytest.fail(f"no judge environment at {JUDGE} under CI: .ci/run makes it ({INSTALL})")
        pytest.skip(f"the tools' readers are not installed: {INSTALL} (or set CSC_JUDGE_PYTHON)")
    return JUDGE


def test_every_export_reads_back_exactly_in_labelme_datumaro_and_pycocotools(judge, tmp_path):
    datasets = make_datasets(tmp_path / "datasets", real=False)  # simulated, and the tools' own files where present
    checks = read_back(judge, datasets, tmp_path)
    readers = {c["reader"] for c in checks}
    assert len(readers) >= 4, readers  # LabelMe, pycocotools and Datumaro's two importers at least
    for check in checks:
        assert "error" not in check, check
        assert check["exact"] and check["cells_read"] == check["cells_written"], check
