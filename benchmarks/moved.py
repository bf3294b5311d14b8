"""The benchmarks' flat module names from before they got rooms (issue #27 moved `benchmarks/counting_speed.py` to
`benchmarks/speed/counting_speed.py`, and so on): issues and scripts outside the project still run them as
`python -m benchmarks.counting_speed`, `python -m benchmarks.label_free`, …

One import hook answers for all of them rather than a shim file each (over twenty more modules in `benchmarks/`
than the house rule's fifteen): a flat name resolves to the module of that name in one of the ROOMS. Run with `-m`, the
moved module runs as the script, with a FutureWarning that names its new path (shown to whoever runs it); imported,
the name gives the very same module object, with a DeprecationWarning (shown to developers), as `runtime`'s moved
modules do. Run with `-m` the script's package is `benchmarks` rather than its room (none of them imports
relatively), and a script that starts worker processes by spawning shows the warning once in each.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import CodeType, ModuleType

ROOMS = ("speed", "accuracy", "real")


def new_name(fullname: str) -> str | None:
    """The moved module's name for an old flat one (``benchmarks.X`` → ``benchmarks.ROOM.X``), or None."""
    package, _, leaf = fullname.rpartition(".")
    if package != "benchmarks" or not leaf or leaf in ROOMS:
        return None
    for room in ROOMS:
        name = f"benchmarks.{room}.{leaf}"
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin and spec.origin.endswith(".py"):  # a module, not a folder
            return name
    return None


class _MovedLoader(importlib.abc.Loader):
    """Loads an old name as the moved module: the same object when imported, its code when run with ``-m``."""

    def __init__(self, old: str, new: str):
        self.old, self.new = old, new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(f"{self.old} moved to {self.new}; import it from there", DeprecationWarning, stacklevel=2)
        module = importlib.import_module(self.new)
        self._own_spec = module.__spec__  # the import system sets the old name's spec on it next
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run (it ran under its new name): its own spec is given back."""
        module.__spec__ = self._own_spec

    def get_code(self, fullname: str) -> CodeType | None:
        """What `python -m OLD` runs (runpy asks the loader for the code): the moved module's."""
        warnings.warn(f"python -m {self.old} is now python -m {self.new}", FutureWarning, stacklevel=2)
        spec = importlib.util.find_spec(self.new)
        return spec.loader.get_code(self.new)


class MovedFinder(importlib.abc.MetaPathFinder):
    """Finds the old flat names of benchmark modules (`new_name`); every other name is left to the usual finders."""

    def find_spec(self, fullname: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        new = new_name(fullname)
        if new is None:
            return None
        origin = importlib.util.find_spec(new).origin
        return importlib.machinery.ModuleSpec(fullname, _MovedLoader(fullname, new), origin=origin)


def install() -> None:
    """Put the finder after the usual ones (a module that exists under the flat name is found first), once."""
    if not any(isinstance(finder, MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedFinder())
