"""MkDocs hook: benchmark tables from the committed result files and the CLI reference from the commands.

A page writes `{{ table("counting_speed") }}` or `{{ cli("csc-run") }}` on a line of its own; at build time the
marker becomes a Markdown table built from `benchmarks/results/<name>.json`, or the help of that command read from
its typer app. Nothing is copied by hand, so a rerun of a benchmark (or a changed option) shows up in the next
build. An unknown name fails the build (`mkdocs build --strict` runs in the test suite: tests/test_docs_build.py).
"""
from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MARKER = re.compile(r'\{\{\s*(table|cli)\(\s*"([^"]+)"\s*\)\s*\}\}')

# [project.scripts] in pyproject.toml: the command and its typer app
COMMANDS = {
    "csc-data": "runtime.cli.data",
    "csc-label": "trainer.cli.label",
    "csc-train": "trainer.cli.train",
    "csc-export": "export.cli",
    "csc-run": "runtime.cli.run",
    "csc-serve": "runtime.cli.serve",
    "csc-bench": "benchmarks.cli",
}


def load(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))


def source_line(name: str, command: str) -> str:
    return f"\n\n*Rendered at build time from `benchmarks/results/{name}.json` (`{command}`).*\n"


def _md_table(header: list[str], rows: list[list], align: list[str] | None = None) -> str:
    align = align or ["---"] * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join("—" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f} %"


def _f(x, digits=3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


# ---- one renderer per result file -------------------------------------------------------------------------------

def t_ablation() -> str:
    from trainer.ablation import render_markdown
    return render_markdown(load("ablation")).strip()


def t_label_free() -> str:
    from benchmarks.real.label_free import render_markdown
    return render_markdown(load("label_free")).strip() + source_line(
        "label_free", "python -m benchmarks.real.label_free --out benchmarks/results/label_free.json")


def t_grey_smears() -> str:
    from benchmarks.real.grey_smears import render_markdown
    return render_markdown(load("grey_smears")).strip() + source_line(
        "grey_smears", "python -m benchmarks.real.grey_smears --model runtime/models/default.onnx "
                       "--out benchmarks/results/grey_smears.json")


def t_real_counts() -> str:
    from benchmarks.real.real_counts import render_markdown
    return render_markdown(load("real_counts")).strip() + source_line(
        "real_counts", "python -m benchmarks.real.real_counts --model runtime/models/default.onnx "
                       "--out benchmarks/results/real_counts.json")


def t_real_counts_chula_blind() -> str:
    dev, blind = load("real_counts")["chula"], load("real_counts_chula_blind")["chula"]
    rows = []
    for method, r in blind["methods"].items():
        if "--paper" in method:
            continue  # in the file; they under-count on the blind image
        d = dev["methods"].get(method)
        rows.append([method, "—" if d is None else f"{d['ratio']:.3f} / {d['f1']:.3f}",
                     f"{r['ratio']:.3f} / {r['f1']:.3f}"])
    table = _md_table(["path (Chula)", f"development subset ({dev['images']} images): ratio / F1",
                       f"blind part ({blind['images']} image{'s' if blind['images'] != 1 else ''}): ratio / F1"],
                      rows, ["---", "---:", "---:"])
    return table + source_line("real_counts_chula_blind", "python -m benchmarks.real.real_counts --model "
                               "runtime/models/default.onnx --part blind --out "
                               "benchmarks/results/real_counts_chula_blind.json")


def t_real_model() -> str:
    d = load("real_model")
    rows = []
    for method, r in d["evaluation"].items():
        c, b, demo = r["chula"], r["bccd"], r.get("demo")
        name = method
        if d.get("bundled") and method.startswith(str(d.get("chosen"))):
            name = f"**{method}, bundled**"
        rows.append([name, f"{c['ratio']:.3f}", f"{c['f1']:.3f}", f"{b['ratio']:.3f}", f"{b['f1']:.3f}",
                     f"{b['wbcs_counted_as_rbc']} / {b['wbcs']}",
                     "—" if demo is None else f"{100 * demo['count_accuracy']['rbc']:.1f} % / "
                                              f"{100 * demo['count_accuracy']['macrophage']:.1f} %"])
    return _md_table(["labels / model", "Chula ratio", "Chula point F1", "BCCD ratio", "BCCD F1",
                      "BCCD WBCs counted as RBC", "demo RBC / macrophage count"], rows,
                     ["---", "---:", "---:", "---:", "---:", "---:", "---:"]) + source_line(
        "real_model", "python -m benchmarks.real.real_model --work runs/real-model --out "
                      "benchmarks/results/real_model.json --bundle")


def t_label_free_model() -> str:
    return _label_free_model_table("label_free_model", "python -m benchmarks.real.label_free_model --work "
                                                       "runs/label-free-model --out benchmarks/results/label_free_model.json --bundle")


def t_label_free_model_magnified() -> str:
    return _label_free_model_table(
        "label_free_model_magnified", "python -m benchmarks.real.label_free_model --work runs/label-free-model-magnified "
                                      "--magnified-singles 10 --magnified-mixed 10 --single-steps 6000 --bundle "
                                      "--out benchmarks/results/label_free_model_magnified.json")


def _label_free_model_table(stem: str, command: str) -> str:
    """A label-free recipe's run: BBBC030's evaluation part and the simulated counts, per path."""
    d = load(stem)
    ev = d["evaluation"]
    columns = {"simulated_label_free_mixed": "simulated label-free mixed, 0.4 µm/px: RBC / macrophage counts",
               "simulated_label_free_magnified": "the same at 0.2 and 0.1 µm/px"}
    groups = [ev[group] for group in columns if group in ev]  # runs before abc080b measured no magnified frames

    def counts(group: dict, regime: str) -> str:
        acc = group.get(regime, {}).get("count_accuracy")
        return "—" if acc is None else f"{acc['rbc']:.3f} / {acc['macrophage']:.3f}"

    rows = [[method, f"{r['f1_iou50']:.3f}", f"{r['count_ratio']:.3f}", f"{r['miou']:.3f}",
             *(counts(group, method.split(" (")[0]) for group in groups)]
            for method, r in ev["bbbc030_evaluation"]["methods"].items()]
    table = _md_table(["path", "instance F1", "count ratio", "mIoU", *(columns[g] for g in columns if g in ev)], rows,
                      ["---", "---:", "---:", "---:", *("---:" for _ in groups)])
    bundled = f"{d['chosen']} bundled" if d.get("bundled") else "nothing bundled by this run"
    return table + f"\n\nBBBC030 evaluation part {ev['bbbc030_evaluation']['images']} at " \
                   f"{ev['bbbc030_evaluation']['pixel_size_um']:.3f} µm/px; {bundled}." + source_line(stem, command)


def _parts(parts: dict | None) -> str:
    """A soak's growth by part of the resident memory, where the run sampled them."""
    if not parts:
        return "not sampled"
    return " / ".join(f"{p['growth_mb']:+.1f} MB" for p in (parts["RssAnon"], parts["RssFile"]))


def t_soak() -> str:
    rows = []
    soaks = ("soak_committed", "soak_committed_second", "soak_committed_first", "soak_regions", "soak",
             "soak_ort")
    for name in soaks:
        d = load(name)
        rows.append([f"`{name}.json`", d["backend"].split(" (")[0], f"{d['duration_s'] / 60:.0f} min",
                     f"{d['frames']:,}".replace(",", " "), f"{d['fps_overall']:.1f}",
                     f"{d['fps_first_window']:.1f} → {d['fps_last_window']:.1f} ({100 * d['fps_change']:+.1f} %)",
                     f"{100 * d['fps_trend_per_hour']:+.1f} %", "yes" if d["fps_holds"] else "**no**",
                     f"{d['rss_after_warmup_mb']:.1f} → {d['rss_end_mb']:.1f} MB (+{d['rss_growth_mb']:.1f})",
                     f"{d['rss_slope_mb_per_hour']:.2f}", _parts(d.get("rss_parts")),
                     "yes" if d["memory_flat"] else "**no**"])
    table = _md_table(["file", "backend", "run", "frames", "FPS", "first → last minute", "FPS trend / h",
                       "FPS holds", "RSS after the first minute → end", "RSS slope MB/h", "anonymous / file-backed",
                       "memory flat"], rows,
                      ["---", "---", "---:", "---:", "---:", "---", "---:", "---", "---", "---:", "---", "---"])
    return table + "\n\n*Rendered at build time from `benchmarks/results/` " + ", ".join(f"`{n}.json`" for n in soaks) + \
        " (`python -m benchmarks.speed.soak --minutes 30 --out benchmarks/results/NAME.json`, `--backend ort` for " \
        "`soak_ort`), newest code first.*\n"


def _bench(name: str, command: str) -> str:
    from benchmarks.bench import render_markdown
    return render_markdown(load(name)).strip() + source_line(name, command)


def t_bench_cpu_backends() -> str:
    return _bench("bench_cpu_backends", "csc-bench --model runtime/models/default.onnx --json "
                  "benchmarks/results/bench_cpu_backends.json --md benchmarks/results/bench_cpu_backends.md")


def t_bench_cpu_bundled() -> str:
    return _bench("bench_cpu_bundled", "csc-bench --model runtime/models/default.onnx --json "
                  "benchmarks/results/bench_cpu_bundled.json")


def t_bench_cpu() -> str:
    # an older report format (before the 4000×3000 and post-processing columns): its committed Markdown rendering
    parts = [(RESULTS / f"{n}.md").read_text(encoding="utf-8").strip() for n in ("bench_cpu", "bench_cpu_vgg16")]
    return "\n\n".join(parts) + "\n\n*Included at build time from `benchmarks/results/bench_cpu.md` and " \
        "`bench_cpu_vgg16.md` (with their `.json`), written by `csc-bench --md`.*\n"


def t_engine_build() -> str:
    from benchmarks.speed.engine_build import render_markdown
    return render_markdown(load("engine_build")).strip() + source_line(
        "engine_build", "python -m benchmarks.speed.engine_build")


def t_experiment() -> str:
    from benchmarks.real.experiment import render
    text = render(load("experiment")).strip()
    # the page has its own heading; drop the renderer's title line if any
    lines = [ln for ln in text.splitlines() if not ln.startswith("# ")]
    return "\n".join(lines).strip() + source_line("experiment", "python -m benchmarks.real.experiment --out runs/experiment")


# issue #24's targets and the figures before that work (the issue's, and this VM's before the change: git history
# of benchmarks/results/counting_speed.json); the "now" column is read from the result file.
_SPEED_BEFORE = {"512_off": "1.2 ms", "512_on": "6.0 ms", "4k_1": "480 ms (issue), 323 ms (this VM, before)",
                 "4k_2": "—", "4k_mem": "698 MB RSS (issue)", "sheet": "—"}
_SPEED_TARGET = {"512_on": (2.0, "≤ 2 ms with splitting"), "4k_1": (100.0, "≤ 100 ms"),
                 "4k_2": (60.0, "≤ 60 ms"), "4k_mem": (300.0, "≤ 300 MB")}


def _verdict(key: str, value: float) -> str:
    limit, text = _SPEED_TARGET[key]
    return f"{text}: " + ("met" if value <= limit else "**missed**")


def _thousands(n: int) -> str:
    return f"{n:,}".replace(",", " ")


def _speed_rows(d: dict) -> dict[str, str]:
    """One counting_speed result's figures, formatted, by row."""
    ms = d["512"]["ms_per_frame"]
    one, two, sheet = d["4000x3000"]["1_thread"], d["4000x3000"]["2_threads"], d["confluent_4000x3000"]
    alone, dense = d["4000x3000_one_class"], d["dense_4000x3000"]
    return {"512_off": f"{ms['split_off']['count']:.1f} ms", "512_on": f"{ms['split_on']['count']:.1f} ms",
            "4k_1": f"{one['wall_ms']:.0f} ms", "4k_2": f"{two['wall_ms']:.0f} ms",
            "one_class": f"{alone['1_thread']['wall_ms']:.0f} / {alone['2_threads']['wall_ms']:.0f} ms",
            "4k_mem": f"{one['peak_rss_above_frame_mb']:.0f} MB (one thread), {two['peak_rss_above_frame_mb']:.0f} MB "
                      "(two)",
            "dense": f"{dense['wall_ms']:.0f} ms, {dense['peak_rss_above_frame_mb']:.0f} MB",
            "sheet": f"{sheet['wall_ms'] / 1000:.1f} s, {sheet['peak_rss_above_frame_mb']:.0f} MB"}


def t_counting_speed() -> str:
    d = load("counting_speed")
    now, previous = _speed_rows(d), _speed_rows(load("counting_speed_before"))
    ms = d["512"]["ms_per_frame"]
    one, two = d["4000x3000"]["1_thread"], d["4000x3000"]["2_threads"]
    verdicts = {"512_on": _verdict("512_on", ms["split_on"]["count"]), "4k_1": _verdict("4k_1", one["wall_ms"]),
                "4k_2": _verdict("4k_2", two["wall_ms"]),
                "4k_mem": _verdict("4k_mem", max(one["peak_rss_above_frame_mb"], two["peak_rss_above_frame_mb"])),
                "sheet": "bounded: linear in its pixels"}
    frames = {"512_off": "512×512 mixed, splitting off (one core)", "512_on": "512×512 mixed, splitting on (one core)",
              "4k_1": f"4000×3000, {_thousands(one['cells'])} cells, one core",
              "4k_2": "the same, two cores (`CellCounter(workers=2)`)",
              "one_class": f"the same frame, RBCs only ({_thousands(d['4000x3000_one_class']['1_thread']['cells'])} "
                           "cells), one core / two",
              "4k_mem": "the mixed frame, peak memory above the frame",
              "dense": f"dense 4000×3000: half the frame large separate cells ({d['dense_4000x3000']['cells']} discs "
                       "of 50 px radius), one core",
              "sheet": f"confluent 4000×3000 sheet, {_thousands(d['confluent_4000x3000']['cells'])} touching cells"}
    rows = [[frames[k], _SPEED_BEFORE.get(k, "—"), previous[k], now[k], verdicts.get(k, "—")] for k in frames]
    table = _md_table(["frame", "before issue #24", "the counter of c43a198", "now", "issue #24 target"], rows)
    return table + f"\n\nWith the overlay drawn too: {ms['split_off']['count+overlay']:.1f} / " \
                   f"{ms['split_on']['count+overlay']:.1f} ms at 512×512 (splitting off / on). " \
                   f"Machine: {d['machine']}, load average {d['load_average_at_start']:.1f} at the start." + \
        source_line("counting_speed", "python -m benchmarks.speed.counting_speed --out benchmarks/results/counting_speed.json")


def t_counting_accuracy() -> str:
    d = load("counting_accuracy")
    s = d["settings"]
    rows = []
    for key, label in (("split_on", f"{s['n']} mixed {s['size']}² frames (seed {s['seed']}), splitting on"),
                       ("split_off", f"the same, splitting off"),
                       ("macrophage_singles", f"{d['macrophage_singles'].get('n', s['n'])} dense macrophage "
                                              f"singles with pseudopods (seed {d['macrophage_singles']['seed']})")):
        r = d[key]
        for cls in ("rbc", "macrophage"):
            if not r["true_counts"].get(cls):
                continue
            inst = r["instances"][cls]
            rows.append([label, cls, r["counts"][cls], r["true_counts"][cls], _pct(r["count_accuracy"][cls]),
                         _f(r["mean_abs_error"][cls], 2), _f(inst["f1"])])
    return _md_table(["frames", "class", "counted", "true", "accuracy", "MAE/image", "F1@0.5"], rows,
                     ["---", "---", "---:", "---:", "---:", "---:", "---:"]) + source_line(
        "counting_accuracy", "python -m benchmarks.accuracy.counting_accuracy --out benchmarks/results/counting_accuracy.json")


def t_serve_load() -> str:
    d = load("serve_load")
    rows = []
    for key, label in (("idle_before", "idle, before"), ("under_load", "under load"), ("idle_after", "idle, after"),
                       ("without_serve", "the same command without `--serve`")):
        w = d[key]
        rows.append([label, w["frames"], f"{w['seconds']:.1f}", f"{w['fps']:.1f}", f"{w['cpu']['run_cores']:.2f}",
                     f"{w['cpu']['other_processes_cores']:.2f}"])
    table = _md_table(["window", "frames", "s", "counting FPS", "cores used by the run", "cores used by others"],
                      rows, ["---", "---:", "---:", "---:", "---:", "---:"])
    u, v, rss, st = d["uploads"], d["viewers"], d["rss_mb"], d["settings"]
    ok = u["status_counts"].get("200", 0)
    busy = u["status_counts"].get("503", 0)
    lat = u["latency_ms_ok"]
    return table + (
        f"\n\nLoad: {v['count']} viewers on `/stream.mjpg`, {st['uploads_per_second']:g} uploads a second of a "
        f"{st['upload_image']} ({u['sent']} sent). FPS drop under load against the idle mean "
        f"({d['fps_idle_mean']:.1f}): {100 * d['fps_drop_under_load']:.1f} % (target ≤ "
        f"{100 * d['target']['fps_drop_at_most']:.0f} %). Uploads answered: {ok} (p50 {lat['p50'] / 1000:.1f} s, "
        f"p99 {lat['p99'] / 1000:.1f} s), 503 with `Retry-After`: {busy}. Each viewer got "
        f"{v['fps_per_viewer_mean']:.1f} frames a second. Resident memory over the loaded minute: "
        f"{rss['load_start']:.1f} → {rss['load_end']:.1f} MB (+{rss['change']:.1f}).") + source_line(
        "serve_load", "python -m benchmarks.speed.serve_load")


def t_mutation() -> str:
    d = load("mutation")
    rows = [[m["name"], m["rule"].replace("|", "\\|"), f"`{m['file']}`", m["outcome"]] for m in d["mutations"]]
    table = _md_table(["mutation", "the rule it breaks", "file", "outcome"], rows)
    return table + f"\n\nScore: **{d['killed']} of {d['total']} killed** (survived {d['survived']}, errors " \
                   f"{d['errors']}), at commit `{d['commit'][:12]}`." + source_line(
        "mutation", "python -m benchmarks.accuracy.mutation --out benchmarks/results/mutation.json")


def t_autolabel_speed() -> str:
    d = load("autolabel_speed")
    k = d["kinds"]
    labels = [("whole_job_tiff", "uncompressed TIFF (µManager, ImageJ)"), ("whole_job_jpeg", f"JPEG, quality {d['jpeg_quality']}"),
              ("whole_job_png", "PNG (the simulator's output)"), ("label_step_1_core", "labelling step alone, **one** core"),
              ("whole_job_tiff_paper_steps", "uncompressed TIFF, `--paper --pixel-size 0.4`")]
    rows = [[label, f"{k['rbc'][key]['median']:.0f}", f"{k['macrophage'][key]['median']:.0f}"] for key, label in labels]
    return _md_table(["input files", "RBC images/s", "macrophage images/s"], rows, ["---", "---:", "---:"]) + \
        source_line("autolabel_speed", "python -m benchmarks.speed.autolabel_speed --out benchmarks/results/autolabel_speed.json")


def t_simulator_speed() -> str:
    d = load("simulator_speed")
    rows = [[k, f"{v:.0f}"] for k, v in d["frames_per_second"].items()]
    return _md_table([f"what ({d['size']}, {d['threads']} thread)", "frames/s"], rows, ["---", "---:"]) + source_line(
        "simulator_speed", "python -m benchmarks.speed.simulator_speed --out benchmarks/results/simulator_speed.json")


def t_results_index() -> str:
    """Every committed result file and the pages that show or cite it (a page cites a file by its name, or renders
    it with a table marker)."""
    pages = {p: p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md"))}
    titles = {p: next((ln[2:].strip() for ln in text.splitlines() if ln.startswith("# ")), p.stem)
              for p, text in pages.items()}
    rows = []
    for result in sorted(RESULTS.glob("*.json")):
        stem = result.stem
        shown = [p for p, text in pages.items() if result.name in text or f'table("{stem}")' in text]
        where = ", ".join(f"[{titles[p].replace('|', '/')}]({p.name})" for p in shown) or "—"
        rows.append([f"`{result.name}`", where])
    return _md_table(["result file (`benchmarks/results/`)", "shown or cited on"], rows)


TABLES = {name[2:]: fn for name, fn in dict(globals()).items() if name.startswith("t_") and callable(fn)}


# ---- CLI reference ---------------------------------------------------------------------------------------------

_RICH = re.compile(r"\[(/?)(bold|italic|dim|green|red|yellow|cyan|magenta|blue|b|i|/)?\]")


def _plain(text: str | None) -> str:
    return _RICH.sub("", text or "").strip()


def _command_md(cmd, ctx, level: int) -> list[str]:
    out = [f"```text\n{cmd.get_usage(ctx)}\n```", ""]
    if cmd.help:
        out += [_plain(cmd.help).replace("\b\n", ""), ""]
    rows = []
    for param in cmd.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        rows.append(f"| `{names}` | {_plain(help_text).replace('|', chr(92) + '|').replace(chr(10), ' ')} |")
    if rows:
        out += ["| argument / option | what |", "|---|---|", *rows, ""]
    if hasattr(cmd, "list_commands"):  # a group (typer may bring its own copy of click: no isinstance)
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is None or getattr(sub, "hidden", False):
                continue
            sctx = sub.context_class(sub, info_name=name, parent=ctx)
            out += [f"{'#' * level} `{ctx.command_path} {name}`", ""]
            out += _command_md(sub, sctx, level + 1)
    return out


def cli(name: str) -> str:
    from typer.main import get_command

    module = importlib.import_module(COMMANDS[name])
    cmd = get_command(module.app)
    ctx = cmd.context_class(cmd, info_name=name, terminal_width=100, max_content_width=100)
    return "\n".join(_command_md(cmd, ctx, 3)).strip()


def table(name: str) -> str:
    if name not in TABLES:
        raise KeyError(f"docs/hooks.py: no table named {name!r} (known: {', '.join(sorted(TABLES))})")
    return TABLES[name]()


def render_markers(markdown: str) -> str:
    def one(match: re.Match) -> str:
        kind, name = match.groups()
        return table(name) if kind == "table" else cli(name)
    return MARKER.sub(one, markdown)


def on_page_markdown(markdown, page, config, files):  # noqa: ARG001 (MkDocs' signature)
    return render_markers(markdown)
