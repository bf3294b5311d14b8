"""The benchmarks' flat names from before issue #27's rooms, as issues name them (`python -m benchmarks.counting_speed`,
`python -m benchmarks.label_free`), still run the moved module, and import as the very same object."""
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("old", "new"), [("benchmarks.counting_speed", "benchmarks.speed.counting_speed"),
                                          ("benchmarks.mutation", "benchmarks.accuracy.mutation")])
def test_an_old_flat_name_imports_the_moved_module_with_a_warning(monkeypatch, old, new):
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert module.__spec__.name == new  # its own spec, not the old name's


def test_a_name_no_room_holds_is_still_missing():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("benchmarks.no_such_benchmark")
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("benchmarks.speed.no_such_benchmark")


@pytest.mark.parametrize(("old", "new"), [("benchmarks.counting_speed", "benchmarks.speed.counting_speed"),
                                          ("benchmarks.label_free", "benchmarks.real.label_free")])
def test_python_m_with_an_old_name_runs_the_moved_script_and_says_where_it_is(old, new):
    run = subprocess.run([sys.executable, "-m", old, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("usage:") and "--out" in run.stdout
    assert f"python -m {new}" in run.stderr
