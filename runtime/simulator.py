"""Moved to `runtime.data.simulator` (issue #27 gave `runtime/` rooms); this name is kept, with a DeprecationWarning, for
scripts written against the README that showed `runtime.simulator` (SimulatedMicroscope, make_microscope, SimConfig, …)."""
import sys
import warnings

import runtime.data.simulator as _moved

warnings.warn("runtime.simulator moved to runtime.data.simulator; import it from there", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
