"""Names the README showed before `runtime/` got its rooms (issue #27) still import, with a DeprecationWarning
that says where the module lives now, and give the very same objects."""
import importlib
import sys

import pytest

MOVED = {"runtime.simulator": "runtime.data.simulator", "runtime.modality": "runtime.data.modality",
         "runtime.calibration": "runtime.counting.calibration", "runtime.instances": "runtime.counting.instances",
         "runtime.evaluate_counts": "runtime.counting.evaluation"}


@pytest.mark.parametrize(("old", "new"), MOVED.items())
def test_an_old_module_path_imports_the_moved_module_with_a_warning(old, new):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)


def test_the_old_one_cell_constant_is_the_counters_preset():
    from runtime import counting
    from runtime.counting.instances import COUNTER_SPLIT

    with pytest.warns(DeprecationWarning, match="COUNTER_SPLIT"):
        assert counting.ONE_CELL == COUNTER_SPLIT.one_cell
    from runtime.counting import CellCounter
    from runtime.counting.counter import CellCounter as direct

    assert CellCounter is direct
