"""The documentation site builds with warnings as errors (`mkdocs build --strict`), with every benchmark table
rendered from its result file and the CLI reference read from the commands (docs/hooks.py)."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or
                                importlib.util.find_spec("material") is None,
                                reason="mkdocs and mkdocs-material come with the dev extra")


def test_the_site_builds_strict(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"})
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    assert "WARNING" not in log, log
    site = tmp_path / "site"
    # the markers became tables, and no marker was left unrendered
    for page in site.rglob("*.html"):
        assert "{{ table(" not in page.read_text(encoding="utf-8"), page
        assert "{{ cli(" not in page.read_text(encoding="utf-8"), page
    cli = (site / "cli" / "index.html").read_text(encoding="utf-8")
    for command in ("csc-data synth", "csc-label auto", "csc-train transfer", "csc-export build-engine", "csc-run",
                    "csc-serve", "csc-bench"):
        assert command in cli, command
    assert "--max-frames" in cli and "--flavour" in cli
    bench = (site / "benchmarks" / "index.html").read_text(encoding="utf-8")
    assert "benchmarks/results/bench_cpu_backends.json" in bench


def test_the_tables_come_from_the_result_files():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import hooks
    finally:
        sys.path.remove(str(ROOT / "docs"))
    import json
    speed = json.loads((ROOT / "benchmarks" / "results" / "counting_speed.json").read_text())
    assert f"{speed['4000x3000']['1_thread']['wall_ms']:.0f} ms" in hooks.table("counting_speed")
    with pytest.raises(KeyError):
        hooks.table("no-such-result")
    used = set()
    for page in (ROOT / "docs").glob("*.md"):
        used |= {name for kind, name in hooks.MARKER.findall(page.read_text(encoding="utf-8")) if kind == "table"}
    assert used == set(hooks.TABLES), "every renderer is used by a page, and every page's table has a renderer"


def test_the_readme_links_into_the_docs_resolve():
    """The README links into docs/ (GitHub renders them as files); each target page exists, and each #anchor is a
    heading of that page (MkDocs' slugs: lower case, punctuation dropped, spaces to hyphens)."""
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\((docs/[^)#\s]+)(?:#([^)\s]+))?\)", readme)
    assert len(links) >= 10
    for target, anchor in links:
        path = ROOT / target
        assert path.is_file(), target
        if anchor and path.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), flags=re.M)
            slugs = {re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", h.lower()).strip()) for h in headings}
            assert anchor in slugs, f"{target}#{anchor} is no heading there ({sorted(slugs)})"


def test_every_result_file_is_shown_or_cited_in_the_docs():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import hooks
    finally:
        sys.path.remove(str(ROOT / "docs"))
    index = hooks.table("results_index")
    rows = [line for line in index.splitlines()[2:]]
    assert len(rows) == len(list((ROOT / "benchmarks" / "results").glob("*.json")))
    assert not [row for row in rows if row.endswith("| — |")], "result files no page shows or cites"


# named in the docs, and not in the repository on purpose
NOT_FILES: dict[str, str] = {}


def test_every_file_the_docs_name_exists():
    """A path in backticks (`runtime/…`, `trainer/…`, `export/…`, `benchmarks/…`, `tests/…`, `docs/…`) names a file
    or folder of the repository, so that moving a module cannot leave the documentation pointing at nothing."""
    import re

    missing = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        for name in set(re.findall(r"`((?:runtime|trainer|export|benchmarks|tests|docs)/[\w/.*-]+)", text)):
            path = name.rstrip(".")
            if path in NOT_FILES:
                continue
            found = list(ROOT.glob(path)) if "*" in path else [ROOT / path] if (ROOT / path).exists() else []
            if not found:
                missing.append(f"{page.name}: {path}")
    assert not missing, missing


def test_every_import_path_the_docs_name_resolves():
    """`runtime.counting.gpu.make_counter` and the like: the longest importable module, then attributes."""
    import importlib
    import re

    names = set()
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        names |= set(re.findall(r"`((?:runtime|trainer|export|benchmarks)\.[A-Za-z_][\w.]*)",
                                page.read_text(encoding="utf-8")))
    assert names
    for name in sorted(names):
        parts = name.rstrip(".").split(".")
        for cut in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            for attribute in parts[cut:]:
                assert hasattr(obj, attribute), f"{name}: no {attribute}"
                obj = getattr(obj, attribute)
            break
        else:
            raise AssertionError(f"{name}: no such module")


def test_the_terminal_help_says_what_the_cli_reference_says():
    """`--help` reads every help text as rich markup, where an unescaped `[word]` is a style and vanishes: csc-run's
    --serve printed `pip install 'auto-csc'`, its extra gone, while the CLI reference (docs/hooks.py) showed
    `auto-csc[serve]`. A literal bracket in a help text is written `\\[` (Markdown shows it as `[` too)."""
    import importlib

    from rich.text import Text
    from typer.main import get_command

    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import hooks
    finally:
        sys.path.remove(str(ROOT / "docs"))

    def texts(cmd, path):
        yield path, cmd.help or ""
        for param in cmd.params:
            yield f"{path} {param.name}", getattr(param, "help", None) or ""
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from texts(sub, f"{path} {name}")

    lost = []
    for name, module in hooks.COMMANDS.items():
        for where, text in texts(get_command(importlib.import_module(module).app), name):
            shown = Text.from_markup(text).plain.strip()
            if shown != hooks._plain(text).replace("\\[", "["):
                lost.append(f"{where}: {text!r} prints as {shown!r}")
    assert not lost, lost
