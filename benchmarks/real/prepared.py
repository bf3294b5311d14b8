"""The datasets a benchmark prepares in its work folder (synthesised, auto-labelled, rescaled) and reuses on a rerun."""
from __future__ import annotations

import shutil
from pathlib import Path

from runtime.data.dataset import META_FILE, read_meta
from runtime.errors import CscError


def to_make(folder: Path) -> bool:
    """Whether ``folder`` must be made (again): it holds no complete dataset. What a stopped run left there —
    images without a dataset.json (killed), or one that says ``complete: false`` (interrupted) — is cleared first:
    the writers take only a new or empty folder, and a partial set reused as it was would measure fewer images."""
    try:
        if (folder / META_FILE).is_file() and read_meta(folder).get("complete") is not False:
            return False
    except CscError:  # an unreadable dataset.json: made again, as a missing one
        pass
    shutil.rmtree(folder, ignore_errors=True)
    return True
