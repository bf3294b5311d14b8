"""Soak run: does `csc-run --source demo --no-show` hold its frame rate and its memory for as long as it runs?

Runs the real command line in a child process, as a user would, with its per-frame counts CSV (flushed every
frame); every --interval seconds it reads how many frames the CSV holds and the child's resident memory
(VmRSS, /proc: Linux). Targets: the FPS of the first minute and of the last minute within 10 % of each other,
RSS growth under 20 MB from the end of the warm-up (the first --warmup seconds after the first frame: model
loading, first allocations, OpenCV's and ONNX Runtime's pools) to the end, and — what a run of weeks needs — an
RSS slope under 1 MB per hour and no FPS trend, both least-squares fits over the samples after the warm-up. 150
bytes kept per frame at 53 FPS would be a slope of 29 MB per hour: thirty minutes show it plainly. The memory of
the last TEARDOWN_S seconds is left out (the child may be exiting), and the resident memory's anonymous and
file-backed parts are sampled beside it (PARTS), so that growth says whether it was the heap or library pages;
every REGION_EVERY_S the anonymous part is split further by where it lies (glibc's main heap, its per-thread arenas,
the rest), so that a step says whose pages it was.

Run it on a quiet machine (other load changes the frame rate):
    python -m benchmarks.speed.soak --minutes 30 --out benchmarks/results/soak.json
    python -m benchmarks.speed.soak --judge benchmarks/results/soak.json   (the saved samples judged again)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.publish import machine, publish
from runtime.io.heap import Mapping, allocator_region, arena_windows, mapping_of_line

FPS_TOLERANCE = 0.10  # first vs last window
RSS_GROWTH_LIMIT_MB = 20.0
RSS_SLOPE_LIMIT_MB_PER_HOUR = 1.0
# Memory is judged up to this many seconds before the last sample: the child's last seconds can be its exit, its
# model and buffers freed (one run's last sample read 188.6 MB after 29 minutes at 350.9–352.4 MB).
TEARDOWN_S = 2.0


# What a process's resident memory is made of (/proc/PID/status, Linux ≥ 4.5): VmRSS is RssAnon + RssFile +
# RssShmem. Anonymous pages are what a leak grows (heap, arrays, native allocations); file-backed ones are the
# pages of mapped files — shared libraries' code and data — read in the first time a code path runs, and
# reclaimable by the kernel. Both are sampled so that a slope of the total says which one moved.
PARTS = ("RssAnon", "RssFile")


def memory_mb(pid: int) -> dict[str, float] | None:
    """VmRSS and its anonymous and file-backed parts (PARTS) of a live process in MB, or None once it has gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return None
    pairs = (line.split(":", 1) for line in lines)
    fields = {name: int(value.split()[0]) / 1024 for name, value in pairs if name in ("VmRSS", *PARTS)}
    return fields if "VmRSS" in fields else None


# Where in the address space the anonymous memory lies, sampled every REGION_EVERY_S (reading /proc/PID/smaps of
# hundreds of mappings costs the sampler a few ms): glibc's main heap, its per-thread arenas, and the rest (Python's
# object arenas, thread stacks, libraries' own pools, buffers mapped whole, copy-on-write pages of libraries), as
# `runtime.io.heap.allocator_region` tells them apart. A step of RssAnon then says whose pages were first touched.
REGION_EVERY_S = 10.0
REGIONS = ("main_heap", "thread_arenas", "other_anon")


def anon_regions_mb(pid: int) -> dict[str, float] | None:
    """Resident anonymous memory (each mapping's ``Anonymous:`` pages) of a live process by region (REGIONS) in
    MB, or None once it has gone."""
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return regions_of_smaps(text)


def smaps_entries(text: str) -> list[tuple[Mapping, dict[str, int]]]:
    """Each mapping of a /proc/PID/smaps text with its per-mapping fields in kB (``Rss``, ``Anonymous``, …)."""
    entries: list[tuple[Mapping, dict[str, int]]] = []
    for line in text.splitlines():
        mapping = mapping_of_line(line)
        if mapping is not None:
            entries.append((mapping, {}))
        elif entries and line.endswith(" kB"):
            name, value = line.split(":", 1)
            entries[-1][1][name] = int(value.split()[0])
    return entries


def regions_of_smaps(text: str) -> dict[str, float] | None:
    """`anon_regions_mb` of a /proc/PID/smaps text; None where it lists no mapping (a process not yet reaped).
    Regions are told apart by `runtime.io.heap`'s layout rule (without `commit_heap`'s check of each arena's
    header, which reads the process's own memory)."""
    entries = smaps_entries(text)
    if not entries:
        return None  # exited, not yet reaped: nothing mapped
    arenas = arena_windows([m for m, _ in entries])
    totals = dict.fromkeys(REGIONS, 0.0)
    for mapping, fields in entries:
        totals[allocator_region(mapping, arenas)] += fields.get("Anonymous", 0) / 1024
    return {region: round(mb, 2) for region, mb in totals.items()}


def region_growth(rows: list[list[float]], warmup: float, end: float) -> dict[str, float]:
    """Per region, MB from the region sample nearest the end of the ``warmup`` to the last one taken after it and
    TEARDOWN_S or more before ``end``, the last memory sample (`judge`'s span; rows: seconds since the first
    frame, then one value per REGIONS)."""
    warm = min(rows, key=lambda r: abs(r[0] - warmup))
    running = [r for r in rows if warmup <= r[0] <= end - TEARDOWN_S] or [warm]
    last = running[-1]
    return {region: round(last[1 + i] - warm[1 + i], 2) for i, region in enumerate(REGIONS)}


def rss_mb(pid: int) -> float | None:
    """Resident memory of a live process in MB, or None once it has gone."""
    memory = memory_mb(pid)
    return None if memory is None else memory["VmRSS"]


class FrameCounter:
    """Frames written so far to a growing counts CSV (one header line, then one line per frame)."""

    def __init__(self, path: Path):
        self.path, self.offset, self.lines = path, 0, 0

    def frames(self) -> int:
        if self.path.exists():
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
            complete = chunk.rfind(b"\n") + 1  # a row still being written counts once it ends
            self.lines += chunk[:complete].count(b"\n")
            self.offset += complete
        return max(0, self.lines - 1)


def window_fps(samples: list[tuple[float, int, float]], start: float, end: float) -> float:
    """Frames per second between the samples nearest to ``start`` and ``end`` (seconds since the first frame)."""
    first = min(samples, key=lambda s: abs(s[0] - start))
    last = min(samples, key=lambda s: abs(s[0] - end))
    return (last[1] - first[1]) / max(last[0] - first[0], 1e-9)


def slope_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) samples, per hour."""
    t = np.array([s[0] for s in samples], float)
    v = np.array([s[1] for s in samples], float)
    if len(t) < 2 or np.ptp(t) == 0:
        return 0.0
    return float(np.polyfit(t, v, 1)[0] * 3600)


def fps_series(samples: list[tuple[float, int, float]], window: float) -> list[tuple[float, float]]:
    """(middle time, FPS) of consecutive ``window``-second stretches of the samples."""
    series, start = [], samples[0]
    for sample in samples[1:]:
        if sample[0] - start[0] >= window:
            series.append(((sample[0] + start[0]) / 2, (sample[1] - start[1]) / (sample[0] - start[0])))
            start = sample
    return series


def judge(samples: list, window: float, warmup: float) -> dict:
    """The targets judged on (seconds, frames, RSS[, RssAnon, RssFile]) samples: FPS of the first and last
    ``window``, the FPS trend, and memory from the end of the ``warmup`` to TEARDOWN_S before the last sample."""
    end = samples[-1][0]
    fps_first, fps_last = window_fps(samples, 0, window), window_fps(samples, end - window, end)
    warm = min(samples, key=lambda s: abs(s[0] - warmup))
    settled = [s for s in samples if s[0] >= warmup]
    running = [s for s in settled if s[0] <= end - TEARDOWN_S] or settled[:1]
    last = running[-1]
    growth = last[2] - warm[2]
    rss_slope = slope_per_hour([(s[0], s[2]) for s in running])
    parts = {part: {"after_warmup_mb": warm[3 + i], "end_mb": last[3 + i], "growth_mb": round(last[3 + i] - warm[3 + i], 1),
                    "slope_mb_per_hour": round(slope_per_hour([(s[0], s[3 + i]) for s in running]), 2)}
             for i, part in enumerate(PARTS) if len(warm) > 3 + i}
    fps_windows = fps_series(settled, window)
    fps_trend = slope_per_hour(fps_windows) / max(float(np.mean([f for _, f in fps_windows])), 1e-9) \
        if len(fps_windows) >= 2 else 0.0
    return {
        "fps_first_window": round(fps_first, 2), "fps_last_window": round(fps_last, 2),
        "fps_change": round(fps_last / fps_first - 1, 4),
        "fps_holds": abs(fps_last / fps_first - 1) <= FPS_TOLERANCE and abs(fps_trend) <= FPS_TOLERANCE,
        "rss_after_warmup_mb": warm[2], "rss_end_mb": last[2], "rss_max_mb": max(s[2] for s in running),
        "rss_growth_mb": round(growth, 1), "rss_slope_mb_per_hour": round(rss_slope, 2),
        "memory_flat": growth < RSS_GROWTH_LIMIT_MB and abs(rss_slope) < RSS_SLOPE_LIMIT_MB_PER_HOUR,
        "rss_parts": parts, "teardown_s": TEARDOWN_S,
        "fps_trend_per_hour": round(fps_trend, 4), "fps_windows": [[round(t, 1), round(f, 2)] for t, f in fps_windows],
        "targets": {"fps_change_within": FPS_TOLERANCE, "rss_growth_below_mb": RSS_GROWTH_LIMIT_MB,
                    "rss_slope_below_mb_per_hour": RSS_SLOPE_LIMIT_MB_PER_HOUR,
                    "fps_trend_per_hour_within": FPS_TOLERANCE},
    }


def soak(duration: float = 600, window: float = 60, warmup: float = 60, interval: float = 1.0,
         backend: str = "auto") -> dict:
    """Run csc-run on the demo source for ``duration`` seconds and judge its FPS and memory over time."""
    if duration < 2 * window or warmup >= duration:
        raise ValueError("--duration must hold two --window lengths and more than the --warmup")
    with tempfile.TemporaryDirectory() as tmp:
        csv, summary, log = Path(tmp) / "counts.csv", Path(tmp) / "summary.json", Path(tmp) / "stderr.txt"
        command = [sys.executable, "-c", "from runtime.cli.run import main; main()", "--source", "demo", "--no-show",
                   "--backend", backend,
                   "--duration", str(duration), "--save-csv", str(csv), "--summary", str(summary)]
        counter, samples, regions, first_frame = FrameCounter(csv), [], [], None
        with log.open("w") as stderr:
            child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
            try:
                while child.poll() is None:
                    time.sleep(interval)
                    now, frames, memory = time.perf_counter(), counter.frames(), memory_mb(child.pid)
                    if memory is None or not frames:
                        continue  # still starting (or already gone): no frame rate to judge yet
                    first_frame = first_frame if first_frame is not None else now
                    samples.append((round(now - first_frame, 2), frames, round(memory["VmRSS"], 1),
                                    *(round(memory.get(part, float("nan")), 1) for part in PARTS)))
                    if not regions or now - first_frame - regions[-1][0] >= REGION_EVERY_S:
                        by_region = anon_regions_mb(child.pid)
                        if by_region is not None:
                            regions.append([round(now - first_frame, 2), *by_region.values()])
            finally:
                if child.poll() is None:
                    child.kill()
                child.wait()
        if child.returncode != 0 or len(samples) < 3:
            raise RuntimeError(f"csc-run failed (exit {child.returncode}, {len(samples)} samples): "
                               f"{log.read_text()[-2000:]}")
        run_summary = json.loads(summary.read_text())
    return {
        "command": f"csc-run --source demo --no-show --backend {backend} --duration {duration:g} --save-csv CSV "
                   "--summary JSON",
        "machine": machine(), "backend": run_summary["backend"], "duration_s": duration, "window_s": window,
        "warmup_s": warmup, "interval_s": interval, "frames": run_summary["frames"], "fps_overall": run_summary["fps"],
        **judge(samples, window, warmup),
        "samples": {"columns": ["seconds_since_first_frame", "frames", "rss_mb", "rss_anon_mb", "rss_file_mb"],
                    "rows": [list(s) for s in samples]},
        "anon_region_growth_mb": region_growth(regions, warmup, samples[-1][0]) if regions else {},
        "anon_regions": {"columns": ["seconds_since_first_frame", *(f"{r}_mb" for r in REGIONS)], "rows": regions},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--duration", type=float, default=600, help="seconds csc-run runs")
    length.add_argument("--minutes", type=float, default=None, help="minutes csc-run runs (instead of --duration)")
    parser.add_argument("--window", type=float, default=60, help="seconds of the first and the last window compared")
    parser.add_argument("--warmup", type=float, default=60, help="seconds after the first frame before RSS is baselined")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--backend", default="auto", help="csc-run's --backend (auto, ort, openvino, trt)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--judge", type=Path, default=None, metavar="RESULT",
                        help="run nothing: judge the samples of a saved result again (with its window and warm-up)")
    args = parser.parse_args()
    if args.judge:
        saved = json.loads(args.judge.read_text(encoding="utf-8"))
        publish({**saved, **judge(saved["samples"]["rows"], saved["window_s"], saved["warmup_s"])}, args.out)
    else:
        duration = args.minutes * 60 if args.minutes is not None else args.duration
        publish(soak(duration, args.window, args.warmup, args.interval, args.backend), args.out)
