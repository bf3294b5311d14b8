"""A benchmark's prepared datasets are reused only whole: a stopped run's leftovers are cleared and made again."""
import json

from benchmarks.real.prepared import to_make
from runtime.data.dataset import check_dataset
from runtime.data.synthesize import synthesize_dataset


def test_only_a_complete_dataset_is_reused_and_a_stopped_runs_leftovers_are_cleared(tmp_path):
    """Killed mid-synth, a stage left images without a dataset.json: the rerun made it again before `synth` took
    only new folders, and stopped at "--out exists and is not an empty folder" after; interrupted, it left one that
    says complete: false, which the rerun reused as it was, a set of fewer images."""
    folder = tmp_path / "sim-rbc-raw"
    assert to_make(folder)
    synthesize_dataset("rbc", 2, folder, size=48)
    assert not to_make(folder) and check_dataset(folder).ok, "a complete dataset is kept"
    meta = json.loads((folder / "dataset.json").read_text())
    (folder / "dataset.json").write_text(json.dumps({**meta, "complete": False}))
    assert to_make(folder) and not folder.exists(), "an interrupted one is cleared"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "rbc_00000.png").write_bytes(b"left by a killed run")
    assert to_make(folder) and not folder.exists(), "a killed one too"
    synthesize_dataset("rbc", 2, folder, size=48)
    assert check_dataset(folder).ok
