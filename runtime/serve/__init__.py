"""The live web view and HTTP API (`csc-run --serve`, `csc-serve`): a page for headless boxes beside a microscope,
and image counting for a lab's own software.

FastAPI, uvicorn, python-multipart and Pillow are the `serve` extra: `import runtime` needs none of them, and the
modules that do are imported only once `require_serve` has said what is missing.
"""
from __future__ import annotations

import importlib.util

from runtime.errors import CscError

# import name → the distribution that provides it
SERVE_MODULES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "python_multipart": "python-multipart", "PIL": "pillow"}


def require_serve() -> None:
    """A CscError naming what is missing, where the `serve` extra is not installed."""
    missing = [dist for module, dist in SERVE_MODULES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise CscError(f"the web view and HTTP API need {', '.join(missing)}, not installed",
                       fix="pip install 'auto-csc[serve]'")
