"""Shared fixtures: small simulated datasets, made once per session (128 px frames keep the suite fast)."""
from __future__ import annotations

import signal
from pathlib import Path

import pytest

from runtime.data.synthesize import synthesize_dataset

# A suite started in the background by a shell without job control (`bash .ci/run &`, some CI runners) inherits
# SIGINT ignored, and so does every child it starts: the tests that stop `csc-run` and `csc-serve` with Ctrl-C
# then wait out their timeouts (seen here: 3 serve tests failing in a backgrounded clean-clone run). Children
# get the default action back when this process does not ignore the signal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def mixed_dataset(tmp_path_factory) -> Path:
    return synthesize_dataset("mixed", 6, tmp_path_factory.mktemp("mixed"), seed=11, size=128)
