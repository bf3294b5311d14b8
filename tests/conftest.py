"""Shared fixtures: small simulated datasets, made once per session (128 px frames keep the suite fast)."""
from __future__ import annotations

from pathlib import Path

import pytest

from runtime.data.synthesize import synthesize_dataset


@pytest.fixture(scope="session")
def mixed_dataset(tmp_path_factory) -> Path:
    return synthesize_dataset("mixed", 6, tmp_path_factory.mktemp("mixed"), seed=11, size=128)
