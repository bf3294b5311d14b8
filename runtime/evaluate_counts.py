"""Moved to `runtime.counting.evaluation` (issue #27 gave `runtime/` rooms); this name is kept, with a DeprecationWarning, for
scripts written against the README that showed `runtime.evaluate_counts` (PointScorer, …)."""
import sys
import warnings

import runtime.counting.evaluation as _moved

warnings.warn("runtime.evaluate_counts moved to runtime.counting.evaluation; import it from there", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
