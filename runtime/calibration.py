"""Moved to `runtime.counting.calibration` (issue #27 gave `runtime/` rooms); this name is kept, with a DeprecationWarning, for
scripts written against the README that showed `runtime.calibration` (class_map_scale, calibrate, …)."""
import sys
import warnings

import runtime.counting.calibration as _moved

warnings.warn("runtime.calibration moved to runtime.counting.calibration; import it from there", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
