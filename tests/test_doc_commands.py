"""Every command in the README's and the documentation's ```bash blocks runs as written, on the small sets the
pages themselves make, or is listed below with the reason it cannot run here.

The commands run in one scratch folder, page after page in the site's order (README first), so a page may use what
an earlier one made (Getting started makes `data/…`, `runs/…` and `model.onnx`); `runtime/models` is linked into
the folder so that the bundled model's path works as written. A command given twice is run once. A `pip install …`
part of a line is not run (the environment the suite runs in was made by that very line), the rest of the line is.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

REAL = "needs the real-image folder ../shared/real (not in CI; its own tests skip where it is absent)"
CAMERA = "needs a camera"
JETSON = "on a Jetson only (JetPack's TensorRT and GStreamer camera)"

# command (its trailing comment left out) -> why it cannot run here. Every entry must still be in the docs.
CANNOT_RUN = {
    # README / getting started
    "python -m pytest -q": "the test suite itself (CI runs this line: .ci/run)",
    "csc-run --camera 0 --model model.onnx --save-csv counts.csv": CAMERA,
    "csc-run --images smears/ --no-show --save-cells cells.csv": "smears/ stands for your own folder of real smear "
                                                                 "images (calibration on real smears: "
                                                                 "tests/runtime/test_calibration*.py)",
    # labelling
    "csc-label auto ../shared/real/chula-rbc12/images --kind rbc --out labels/chula --split-touching": REAL,
    "csc-label auto ../shared/real/bbbc030-dic/images --kind macrophage --split-touching --out labels/bbbc030": REAL,
    "csc-data synth --kind rbc --n 40 --seed 21 --out /tmp/ablation/rbc/simulated":
        "the recipe of the committed ablation: writes /tmp/ablation, outside the test's folder; the committed "
        "result is checked against today's code by tests/trainer/test_ablation.py",
    "csc-data synth --kind macrophage --n 40 --seed 21 --out /tmp/ablation/macrophage/simulated":
        "the recipe of the committed ablation (as above)",
    "csc-label ablation /tmp/ablation/rbc/simulated /tmp/ablation/macrophage/simulated --out "
    "benchmarks/results/ablation.md": "rewrites the committed result file (run from the repository root); the same "
                                      "command on small sets runs above (csc-label ablation data/rbc-raw …)",
    # bring your own labels
    "csc-data import cvat corrected.xml --images auto/images --out fixed":
        "needs corrected.xml, which a person exports from CVAT after correcting (step 3); export → import round "
        "trips without the person: tests/runtime/test_annotations*.py",
    "csc-data import points ../shared/real/chula-rbc12/points --images ../shared/real/chula-rbc12/images --out "
    "data/chula --classes '*=rbc' --pixel-size 0.194": REAL,
    "csc-data import boxes ../shared/real/bccd-txlpbc/boxes.csv --images ../shared/real/bccd-txlpbc/images --out "
    "data/bccd --classes RBC=rbc,WBC=wbc": REAL,
    "csc-label auto data/chula/images --kind rbc --pixel-size 0.194 --split-touching --out data/chula-auto":
        "needs data/chula, imported from the real-image folder above (these lines run in tests/runtime/"
        "test_real_import*.py where ../shared/real exists)",
    "csc-data count data/chula-auto --truth data/chula": "needs data/chula and data/chula-auto (real images, above)",
    "csc-data count data/chula-auto --truth data/chula --json c.json": "needs data/chula and data/chula-auto "
                                                                      "(real images, Bring your own labels)",
    "csc-train eval runs/transfer/best.pt data/bccd": "needs data/bccd, imported from the real-image folder",
    # training
    "python -m benchmarks.real.real_model --work runs/real-model --out benchmarks/results/real_model.json --bundle":
        "rebuilds the bundled model: the real-image folder and about 20 minutes of training on 2 cores; rewrites "
        "the committed result and runtime/models/default.onnx",
    # export
    "python3 -m venv --system-site-packages ~/csc": JETSON,
    ". ~/csc/bin/activate": JETSON,
    "csc-export build-engine model.onnx --out model.engine --flavour tensorrt":
        "full TensorRT (`tensorrt-cu12` or JetPack's) builds only on a GPU; CI has TensorRT-RTX and no GPU",
    'csc-run --camera "nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1920,height=1080 ! nvvidconv ! '
    'video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink" --model model.engine '
    '--save-csv counts.csv': JETSON + "; and a TensorRT engine needs a GPU",
    "csc-export check model.engine": "runs the engine: needs an NVIDIA GPU that the engine's flavour serves",
    # running
    "csc-run --camera 0 --serve 8080": CAMERA + " (the web view on --source demo: tests/runtime/test_serve*.py)",
    "csc-run --camera 0 --serve 0.0.0.0:8080 --token T": CAMERA + " (tokens: tests/runtime/test_serve*.py)",
    "csc-serve --port 8081": "serves until stopped (the API through its app: tests/runtime/test_serve*.py)",
    "curl -F image=@slide.png http://127.0.0.1:8081/api/count": "needs the csc-serve of the line above running and "
                                                                "an image of yours",
}
PIP = "pip install "  # a part of a line that installs: the suite's environment was made by it

# the site's pages in its nav order (mkdocs.yml: `  - Title: page.md` under `nav:`)
PAGES = ["README.md"] + [f"docs/{page}" for page in re.findall(
    r"^\s+- [^:\n]+:\s*(\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(encoding="utf-8").split("\nnav:\n", 1)[1],
    flags=re.M)]


def _strip_comment(line: str) -> str:
    """The command without its trailing `# comment` (a # outside quotes that follows a space)."""
    quote, out = None, []
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            break
        out.append(ch)
    return " ".join("".join(out).split())


def commands(path: Path) -> list[str]:
    """The commands of a page's ```bash blocks: continuation lines joined, comment lines and comments dropped."""
    found = []
    for block in re.findall(r"^```bash\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.S | re.M):
        current = ""
        for line in block.splitlines():
            if line.rstrip().endswith("\\"):
                current += line.rstrip()[:-1] + " "
                continue
            current += line
            command = _strip_comment(current)
            current = ""
            if command:
                found.append(command)
    return found


def parts(command: str) -> list[str]:
    return [part.strip() for part in command.split(" && ")]


def plan() -> list[tuple[str, str, str | None]]:
    """(page, command, reason it cannot run or None), each distinct command once, in the order of the pages."""
    seen, out = set(), []
    for page in PAGES:
        for command in commands(ROOT / page):
            for part in parts(command):
                if part in seen:
                    continue
                seen.add(part)
                if part.startswith(PIP):
                    reason = "installs packages: the environment the suite runs in was made by this line"
                else:
                    reason = CANNOT_RUN.get(part)
                out.append((page, part, reason))
    return out


def test_pages_are_the_sites():
    assert PAGES[0] == "README.md" and "docs/getting-started.md" in PAGES and len(PAGES) > 10
    assert all((ROOT / page).is_file() for page in PAGES)
    listed = {str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")}
    assert listed <= set(PAGES), f"pages missing from mkdocs.yml's nav: {listed - set(PAGES)}"


def test_every_listed_command_is_still_in_the_docs():
    documented = {part for _, part, _ in plan()}
    stale = [command for command in CANNOT_RUN if command not in documented]
    assert not stale, f"CANNOT_RUN lists commands no page has any more: {stale}"


def test_the_readme_commands_are_there():
    readme = commands(ROOT / "README.md")
    assert readme[0].startswith("pip install -e . && csc-run --source demo")
    marker = (ROOT / "README.md").read_text(encoding="utf-8").split("ci: test-command", 1)[1]
    assert marker.splitlines()[2] == readme[1]  # the line .ci/run reads is the README's second command
    assert commands(ROOT / "docs" / "getting-started.md")[:2] == readme[:2]  # and Getting started shows the same two


def test_every_documented_command_runs(tmp_path):
    work = tmp_path / "work"
    (work / "runtime").mkdir(parents=True)
    (work / "runtime" / "models").symlink_to(ROOT / "runtime" / "models")
    # the commands are the environment's console scripts, found beside its python even where it is not activated
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "COLUMNS": "120", "NO_COLOR": "1", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    env.pop("DISPLAY", None)
    ran, failures, log = 0, [], []
    for page, command, reason in plan():
        if reason is not None:
            log.append(f"skipped ({page}): {command}\n    {reason}")
            continue
        start = time.monotonic()
        result = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True,
                                timeout=240)
        ran += 1
        log.append(f"ran ({page}, {time.monotonic() - start:.1f} s, exit {result.returncode}): {command}")
        if result.returncode != 0:
            failures.append(f"{page}: {command}\n  exit {result.returncode}\n{result.stdout[-2000:]}"
                            f"{result.stderr[-2000:]}")
    print("\n".join(log))
    assert ran >= 20, log
    assert not failures, "\n\n".join(failures)
