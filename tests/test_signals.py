"""The suite's children can be stopped with Ctrl-C, however the suite itself was started (tests/conftest.py)."""
import signal
import subprocess
import sys
from pathlib import Path

ASK = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"


def test_children_of_the_suite_take_ctrl_c():
    assert subprocess.run([sys.executable, "-c", ASK], capture_output=True, text=True).stdout.strip() == "True"


def test_a_suite_started_with_ctrl_c_ignored_still_gives_it_to_its_children():
    """What a shell without job control does to a background job (`bash .ci/run &`): SIGINT ignored, inherited by
    every child, so that `csc-run` and `csc-serve` under test would never stop on Ctrl-C."""
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          f"{__file__}::test_children_of_the_suite_take_ctrl_c"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=120,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert run.returncode == 0, run.stdout[-2000:]
