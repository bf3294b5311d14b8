"""Moved to `runtime.counting.instances` (issue #27 gave `runtime/` rooms); this name is kept, with a DeprecationWarning, for
scripts written against the README that showed `runtime.instances` (find_instances, divide_large, …)."""
import sys
import warnings

import runtime.counting.instances as _moved

warnings.warn("runtime.instances moved to runtime.counting.instances; import it from there", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
