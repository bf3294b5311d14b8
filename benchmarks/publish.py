"""How the scripts behind the README's numbers hand their results over."""
from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

from runtime.io.imageio import write_text


def publish(result: dict, out: Path | None) -> None:
    """Print the result as JSON and, given ``out``, write the same text there atomically (benchmarks/results/ holds
    the files the README quotes)."""
    text = json.dumps(result, indent=2) + "\n"
    print(text, end="")
    if out is not None:
        write_text(out, text)


def machine() -> str:
    """What a speed figure was measured on, as the result files record it."""
    return f"{cpu_name()}, {os.cpu_count()} cores"


def cpu_name() -> str:
    """The CPU's model where Linux names it, with the architecture: the same backends rank differently on different
    CPUs (OpenVINO against ONNX Runtime was 1.31× on the VM of `bench_cpu_backends.json`, whose CPU went
    unrecorded, and 0.67× on an AMD EPYC one)."""
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)
    arch = platform.processor() or platform.machine()
    return f"{model} ({arch})" if model else arch


def git(repo: Path, *args: str) -> str:
    """What ``git args`` prints in ``repo`` (a copy and a result name files and commits as git sees them)."""
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def tree_state(repo: Path) -> dict:
    """Which tree a result came from: its HEAD commit, and whether files differed from it."""
    return {"commit": git(repo, "rev-parse", "HEAD").strip(),
            "uncommitted_changes": bool(git(repo, "status", "--porcelain"))}
