"""From class map to counted cells: the counter (`counter`), the one splitter of touching cells (`instances`), the
cells' size in pixels (`scale`, `calibration`), blank frames, counting metrics and dataset scoring, and the torch
counter for GPUs (`gpu`).

`CellCounter`, `CountingConfig` and `FrameCounts` can be imported from here (`from runtime.counting import
CellCounter`); they load on first use, so that the package's lower modules (`instances`, used by `runtime.data`)
import without the counter.
"""
__all__ = ["CellCounter", "CountingConfig", "FrameCounts"]


def __getattr__(name: str):
    if name in __all__:
        from runtime.counting import counter

        return getattr(counter, name)
    if name == "ONE_CELL":  # the old README showed runtime.counting.ONE_CELL: now the counter's preset holds it
        import warnings

        from runtime.counting.instances import COUNTER_SPLIT

        warnings.warn("runtime.counting.ONE_CELL is COUNTER_SPLIT.one_cell (runtime.counting.instances) now",
                      DeprecationWarning, stacklevel=2)
        return COUNTER_SPLIT.one_cell
    raise AttributeError(f"module 'runtime.counting' has no attribute {name!r}")
