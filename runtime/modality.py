"""Moved to `runtime.data.modality` (issue #27 gave `runtime/` rooms); this name is kept, with a DeprecationWarning, for
scripts written against the README that showed `runtime.modality` (MODALITIES, LABEL_FREE, detect_modality, …)."""
import sys
import warnings

import runtime.data.modality as _moved

warnings.warn("runtime.modality moved to runtime.data.modality; import it from there", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
