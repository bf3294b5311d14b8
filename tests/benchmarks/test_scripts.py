"""The scripts behind the README's numbers, on tiny inputs: what they measure and what they write, never how fast
this machine is (speed figures come from the scripts themselves, run on a quiet machine)."""
import json
import time

import pytest

from runtime.data.simulator import make_microscope


def test_counting_accuracy_judges_the_simulators_exact_counts(tmp_path):
    from benchmarks.accuracy.counting_accuracy import measure
    from benchmarks.publish import publish

    result = measure(n=2, seed=3, size=256)
    frames = [make_microscope("mixed", size=256, seed=3).frame(i) for i in range(2)]
    truth = {k: sum(f.counts[k] for f in frames) for k in ("rbc", "macrophage")}
    assert result["settings"] == {"kind": "mixed", "n": 2, "seed": 3, "size": 256}
    for mode in ("split_on", "split_off"):
        assert result[mode]["true_counts"] == truth
    # These two frames hold one pair of touching RBCs: only splitting counts both.
    assert result["split_on"]["counts"]["rbc"] == truth["rbc"] > result["split_off"]["counts"]["rbc"]
    assert result["split_on"]["instances"]["rbc"]["f1"] > result["split_off"]["instances"]["rbc"]["f1"]
    singles = [make_microscope("macrophage", size=256, seed=4, pseudopods=2.0).frame(i) for i in range(2)]
    assert result["macrophage_singles"]["true_counts"] == {"rbc": 0,
                                                           "macrophage": sum(f.counts["macrophage"] for f in singles)}
    publish(result, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == result


def test_counting_speed_reports_each_mode():
    from benchmarks.speed.counting_speed import small_frames

    result = small_frames(frames=2, repeats=1, size=64)
    assert set(result["ms_per_frame"]) == {"split_off", "split_on"} and result["frame"] == "64x64 mixed"
    for times in result["ms_per_frame"].values():
        assert 0 < times["count"] <= times["count+overlay"], "count+overlay includes the counting"
        assert 0 < times["count_cpu"]


def test_the_confluent_sheet_is_one_clump_of_touching_cells():
    import cv2

    from benchmarks.speed.counting_speed import FULL, confluent_sheet

    sheet = confluent_sheet()
    assert sheet.shape == FULL and cv2.connectedComponents(sheet)[0] - 1 == 1
    assert 0.5 < sheet.mean() < 0.95, "cells with gaps between them, not a solid field"


def test_calibration_speed_times_both_blurs_and_the_calibration():
    from benchmarks.speed.calibration_speed import measure_size
    from runtime.backends.onnxruntime import OnnxRuntimeRunner
    from runtime.cli.run import DEFAULT_MODEL

    with OnnxRuntimeRunner(DEFAULT_MODEL, threads=1) as runner:
        result = measure_size(runner, (256, 320), repeats=1)
    blur = result["flattening_blur_ms"]
    assert blur["opencv_full_size"] > 0 and blur["wide_gaussian"] > 0 and blur["largest_difference_grey"] < 0.1
    assert result["segmentations"] in (1, 2) and result["calibrate_ms"] > 0 and "µm/px" in result["calibration"]


def test_simulator_speed_reports_each_kind_and_the_stream():
    from benchmarks.speed.simulator_speed import measure

    rates = measure(frames=2, size=64)["frames_per_second"]
    assert set(rates) == {"rbc frame()", "macrophage frame()", "mixed frame()", "mixed stream()"}
    assert all(r > 0 for r in rates.values())


def test_soak_window_fps_and_growing_csv(tmp_path):
    from benchmarks.speed.soak import FrameCounter, window_fps

    samples = [(0.0, 0, 100.0), (1.0, 30, 100.0), (2.0, 50, 101.0), (3.0, 60, 101.0)]
    assert window_fps(samples, 0, 1) == 30 and window_fps(samples, 2, 3) == 10
    assert window_fps(samples, 0.1, 2.9) == 20, "the nearest samples bound the window: 60 frames in 3 s"
    csv = tmp_path / "c.csv"
    counter = FrameCounter(csv)
    assert counter.frames() == 0, "no file yet"
    csv.write_text("frame,source,rbc,macrophage,fps\n0,demo,1,0,9.0\n1,demo,2")
    assert counter.frames() == 1, "a row still being written is not a frame yet"
    with csv.open("a") as f:
        f.write(",0,9.5\n2,demo,3,0,9.9\n")
    assert counter.frames() == 3


def test_soak_fits_the_memory_slope_and_the_fps_trend():
    from benchmarks.speed.soak import fps_series, slope_per_hour

    # 150 bytes a frame at 53 FPS: 28.6 MB an hour, found in ten minutes of samples with 0.3 MB of jitter.
    leak = [(t, 300 + 150 * 53 * t / 1e6 + 0.3 * (t % 7 == 0)) for t in range(0, 600, 5)]
    assert slope_per_hour(leak) == pytest.approx(28.6, abs=0.5)
    assert abs(slope_per_hour([(t, 300.0) for t in range(0, 600, 5)])) < 1e-6
    samples = [(float(t), 50 * t if t < 120 else 6000 + 40 * (t - 120), 300.0) for t in range(0, 241)]
    assert [round(f) for _, f in fps_series(samples, 60)] == [50, 50, 40, 40]


def test_soak_judges_memory_before_the_childs_exit_and_by_part():
    from benchmarks.speed.soak import TEARDOWN_S, judge

    # 10 minutes at 80 FPS; anonymous memory steps up 3 MB at minute 5; the last sample is the child exiting.
    samples = [(float(t), 80 * t, 300.0 + 3.0 * (t >= 300), 200.0 + 3.0 * (t >= 300), 100.0) for t in range(600)]
    samples.append((600.0, 48_000, 120.0, 20.0, 100.0))
    result = judge(samples, window=60, warmup=60)
    assert result["rss_end_mb"] == 303.0 and result["rss_growth_mb"] == 3.0, "the exit sample was judged"
    assert result["rss_parts"]["RssAnon"]["growth_mb"] == 3.0 and result["rss_parts"]["RssFile"]["growth_mb"] == 0.0
    assert result["rss_slope_mb_per_hour"] > 10 and not result["memory_flat"]
    assert result["fps_holds"] and result["teardown_s"] == TEARDOWN_S
    flat = judge([(t, f, 300.0, 200.0, 100.0) for t, f, *_ in samples[:-1]], window=60, warmup=60)
    assert flat["memory_flat"] and flat["rss_slope_mb_per_hour"] == 0.0


def test_soak_runs_csc_run_and_samples_frames_and_memory():
    from benchmarks.speed.soak import soak

    result = soak(duration=6, window=1, warmup=1, interval=0.25)
    rows = result["samples"]["rows"]
    assert len(rows) >= 3 and rows[0][0] == 0
    assert all(a[0] < b[0] and a[1] <= b[1] for a, b in zip(rows, rows[1:]))
    assert rows[-1][1] <= result["frames"], "the CSV never holds more frames than csc-run reports"
    assert result["fps_first_window"] > 0 and result["fps_last_window"] > 0
    assert all(r[2] > 50 for r in rows), "the child's resident memory (ONNX Runtime, OpenCV, numpy) was read"
    running = [r for r in rows if r[0] <= rows[-1][0] - result["teardown_s"]]
    assert result["rss_growth_mb"] == round(running[-1][2] - result["rss_after_warmup_mb"], 1)
    assert "rss_slope_mb_per_hour" in result and "fps_trend_per_hour" in result
    # The total's two parts are sampled with it: anonymous (what a leak grows) and file-backed (libraries' pages).
    assert all(abs(r[3] + r[4] - r[2]) < 2 and r[3] > 10 and r[4] > 10 for r in rows), rows[:3]
    parts = result["rss_parts"]
    assert parts["RssAnon"]["growth_mb"] == round(running[-1][3] - parts["RssAnon"]["after_warmup_mb"], 1)
    regions = result["anon_regions"]["rows"]
    assert regions and regions[0][0] == 0, "the first region sample is taken with the first memory sample"
    # Two reads of /proc a few ms apart while the child is still starting: its heap can grow between them (2.4 MB
    # of 257 once in CI), so 2 % of the total is allowed; a region the parser lost would be tens of MB.
    assert abs(sum(regions[0][1:]) - rows[0][3]) < max(2.0, 0.02 * rows[0][3]), \
        "the regions are the parts of the anonymous memory"
    assert set(result["anon_region_growth_mb"]) == {"main_heap", "thread_arenas", "other_anon"}
    with pytest.raises(ValueError, match="two --window"):
        soak(duration=1, window=1)


_REGION_PROBE = """
import json, os, threading
import numpy as np
from benchmarks.speed.soak import anon_regions_mb
before = anon_regions_mb(os.getpid())
kept = []
worker = threading.Thread(target=lambda: kept.extend(np.ones(1250) for _ in range(3000)))  # 10 kB each
worker.start()
worker.join()
large = np.ones(40_000_000 // 8)  # 40 MB: above glibc's largest mmap threshold (32 MB), mapped on its own
print(json.dumps([before, anon_regions_mb(os.getpid())]))
"""


def test_anonymous_memory_is_told_apart_by_region():
    """In a fresh process (this one's allocator has run pipelines): small buffers a new thread allocates land in its
    own glibc arena, a buffer larger than the mmap threshold is mapped alone (other_anon), the main heap holds
    neither; the regions add up to the process's anonymous memory."""
    import subprocess
    import sys

    from benchmarks.speed.soak import anon_regions_mb, memory_mb, region_growth, regions_of_smaps

    out = subprocess.run([sys.executable, "-c", _REGION_PROBE], capture_output=True, text=True, check=True)
    before, after = json.loads(out.stdout)
    assert after["thread_arenas"] - before["thread_arenas"] > 20, (before, after)
    assert after["other_anon"] - before["other_anon"] > 35, (before, after)
    assert after["main_heap"] - before["main_heap"] < 10, (before, after)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.5)
        regions, memory = anon_regions_mb(child.pid), memory_mb(child.pid)
        assert abs(sum(regions.values()) - memory["RssAnon"]) < 1.0, (regions, memory)
    finally:
        child.kill()
        child.wait()
    assert anon_regions_mb(child.pid) is None
    assert regions_of_smaps("") is None
    arena = 64 << 20
    smaps = "\n".join([  # an arena (its writable part and the reserve, 64 MiB in all), an aligned mapping that is
        # not one (a 2 MiB-aligned buffer that happens to start on a 64 MiB boundary), the heap, a library's page
        f"{4 * arena:x}-{4 * arena + (1 << 20):x} rw-p 00000000 00:00 0", "Anonymous:      1024 kB",
        f"{4 * arena + (1 << 20):x}-{5 * arena:x} ---p 00000000 00:00 0", "Anonymous:         0 kB",
        f"{6 * arena:x}-{6 * arena + (8 << 20):x} rw-p 00000000 00:00 0", "Anonymous:      2048 kB",
        "5000-6000 rw-p 00000000 00:00 0 [heap]", "Anonymous:       512 kB",
        "7000-8000 rw-p 00001000 fe:00 42 /usr/lib/libx.so", "Anonymous:         4 kB", ""])
    assert regions_of_smaps(smaps) == {"main_heap": 0.5, "thread_arenas": 1.0, "other_anon": 2.0}
    rows = [[0.0, 1, 2, 3], [30.0, 1, 2.5, 3], [58.0, 1, 4, 3], [59.5, 9, 9, 9]]  # the last within TEARDOWN_S
    assert region_growth(rows, warmup=30, end=60.0) == {"main_heap": 0, "thread_arenas": 1.5, "other_anon": 0}
    assert region_growth(rows, warmup=30, end=62.0) == {"main_heap": 8, "thread_arenas": 6.5, "other_anon": 6}


def test_core_interference_measures_every_condition_against_inference_alone(monkeypatch):
    """Each condition gets one measurement per round with its worker running beside it (a process, or a thread of
    this process for the pipeline's case) and stopped after, in an order rotated from round to round; ratios are
    taken within each round."""
    import threading

    from benchmarks.speed import core_interference as bench

    running: list[tuple[int, int]] = []  # (threads, child processes) during each measurement
    speeds = iter([60.0, 30.0, 45.0, 40.0, 50.0, 50.0, 25.0, 40.0])  # round 2 starts with spin: rotated order

    def fake_fps(runner, frame, frames):
        running.append((threading.active_count(), len(bench.multiprocessing.active_children())))
        return next(speeds)

    monkeypatch.setattr(bench, "WARMUP_S", 0.0)
    monkeypatch.setattr(bench, "inference_fps", fake_fps)
    monkeypatch.setattr(bench, "_spin", _idle_until_stopped)
    monkeypatch.setattr(bench, "_pipeline_work", _idle_until_stopped)
    result = bench.measure(rounds=2, frames=3)
    assert result["inference_fps"] == {"idle": [60.0, 40.0], "spin": [30.0, 50.0], "pipeline_work": [45.0, 50.0],
                                       "pipeline_work_thread": [40.0, 25.0]}
    assert result["ratios_to_idle_by_round"]["spin"] == [0.5, 1.25]
    assert result["median_ratio_to_idle"]["pipeline_work_thread"] == round((40 / 60 + 25 / 40) / 2, 3)
    idle, spin, process, thread = running[:4]
    assert idle[1] == 0 and spin[1] == 1 and process[1] == 1 and thread[1] == 0  # a process beside it, or none
    assert thread[0] == idle[0] + 1  # the pipeline's work as a thread of this process
    assert not bench.multiprocessing.active_children()


@pytest.mark.parametrize("condition", ["spin", "pipeline_work", "pipeline_work_thread"])
def test_core_interference_fails_when_the_work_beside_inference_died(monkeypatch, condition):
    """A worker that stopped (an import error, an exception) must not pass for an idle core."""
    from benchmarks.speed import core_interference as bench

    monkeypatch.setattr(bench, "WARMUP_S", 0.5)
    monkeypatch.setattr(bench, "_spin", _returns_at_once)
    monkeypatch.setattr(bench, "_pipeline_work", _returns_at_once)
    with pytest.raises(RuntimeError, match=f"the {condition} worker stopped"):
        bench._measured_beside(condition, bench.multiprocessing.get_context("spawn"), lambda: 50.0)
    assert not bench.multiprocessing.active_children()


def _returns_at_once(stop) -> None:
    return None


def _idle_until_stopped(stop) -> None:
    stop.wait(30)
