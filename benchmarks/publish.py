"""How the scripts behind the README's numbers hand their results over."""
from __future__ import annotations

import json
import os
import platform
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
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
