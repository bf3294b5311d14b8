"""The torch counter gives CellCounter's answers: counts, whole cell tables (ids and row order included) and label
images, on simulator class maps and hand-made edge cases, on torch's CPU (CI has no GPU)."""
import subprocess
import sys

import cv2
import numpy as np
import pytest

from runtime.classes import MACROPHAGE, RBC
from runtime.counting.counter import CellCounter, CountingConfig
from runtime.errors import CscError
from runtime.data.simulator import make_microscope

torch = pytest.importorskip("torch", reason="torch is not installed: the GPU counter is optional (pip install torch)")
from runtime.counting.gpu import TorchCellCounter, make_counter  # noqa: E402


def assert_same(config: CountingConfig, class_map: np.ndarray, as_tensor: bool = False) -> None:
    expected = CellCounter(config).count(class_map, return_labels=True)
    counter = TorchCellCounter(config, device="cpu")
    got = counter.count(torch.from_numpy(class_map) if as_tensor else class_map, return_labels=True)
    assert counter.host_fallbacks == 0
    assert got.counts == expected.counts
    assert got.cells.dtype == expected.cells.dtype
    assert got.cells.tobytes() == expected.cells.tobytes()  # every field of every row, in the same order
    assert np.array_equal(got.labels, expected.labels)
    assert np.array_equal(got.weights, expected.weights)
    assert (got.pixel_size_um, got.scale) == (expected.pixel_size_um, expected.scale)


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2, 5])
def test_same_cells_as_the_cpu_counter_on_simulator_frames(seed, split):
    class_map = make_microscope("mixed", size=512, seed=seed).frame(seed % 3).semantic
    assert_same(CountingConfig(split_touching=split), class_map, as_tensor=bool(seed % 2))


@pytest.mark.parametrize("border", ["ignore", "half"])
def test_same_counts_under_every_border_policy(border):
    class_map = make_microscope("mixed", size=512, seed=3).frame(1).semantic
    assert_same(CountingConfig(border=border), class_map)


def test_clumps_and_cut_cells_on_every_edge_and_an_estimated_scale():
    m = np.zeros((90, 140), np.uint8)
    for x in (30, 50, 70):  # a clump of three
        cv2.circle(m, (x, 40), 11, RBC, -1)
    for centre in ((0, 20), (139, 60), (100, 0), (60, 89), (0, 89)):  # cut by the edges, two of them clumps
        cv2.circle(m, centre, 9, RBC, -1)
    cv2.circle(m, (16, 89), 9, RBC, -1)
    cv2.circle(m, (139, 78), 9, RBC, -1)
    cv2.circle(m, (110, 40), 16, MACROPHAGE, -1)
    m[5:7, 5:7] = RBC  # debris
    for split in (False, True):
        assert_same(CountingConfig(split_touching=split, pixel_size_um=0.5), m)
    assert_same(CountingConfig(pixel_size_um=None), make_microscope("mixed", size=256, seed=4).frame(0).semantic)


def test_one_cell_rule_needs_the_frames_median_single_cell():
    # Twelve single RBCs set the median (197 px); two touching pairs of 224 and 296 px together: the one-cell rule
    # (1.25 × the median) merges the first only.
    m = np.zeros((200, 300), np.uint8)
    for k in range(12):
        cv2.circle(m, (20 + 22 * k, 20), 8, RBC, -1)
    cv2.circle(m, (60, 100), 6, RBC, -1), cv2.circle(m, (71, 100), 6, RBC, -1)
    cv2.circle(m, (160, 100), 7, RBC, -1), cv2.circle(m, (173, 100), 7, RBC, -1)
    for one_cell, expected in ((0.0, 16), (1.25, 15)):
        config = CountingConfig(pixel_size_um=0.5, one_cell=one_cell)
        assert CellCounter(config).count(m).counts["rbc"] == expected
        assert_same(config, m)


def test_empty_and_blank_frames():
    for m in (np.zeros((0, 0), np.uint8), np.zeros((40, 50), np.uint8)):
        got = TorchCellCounter(CountingConfig(), device="cpu").count(m)
        assert got.counts == {"rbc": 0, "macrophage": 0} and len(got.cells) == 0


def test_bad_class_maps_are_errors_with_the_fix():
    counter = TorchCellCounter(CountingConfig(), device="cpu")
    with pytest.raises(CscError, match="uint8"):
        counter.count(torch.zeros((4, 4), dtype=torch.int64))
    with pytest.raises(CscError, match="class id 7"):
        counter.count(torch.full((4, 4), 7, dtype=torch.uint8))
    with pytest.raises(CscError, match="1×4 px is too thin"):
        counter.count(torch.ones((4, 1), dtype=torch.uint8))


def test_make_counter_picks_by_device():
    assert type(make_counter(CountingConfig(), "cpu")) is CellCounter
    if torch.cuda.is_available():
        assert isinstance(make_counter(CountingConfig(), "auto"), TorchCellCounter)
    else:
        assert type(make_counter(CountingConfig(), "auto")) is CellCounter
        with pytest.raises(CscError, match="no GPU"):
            make_counter(CountingConfig(), "cuda")
    with pytest.raises(CscError, match="cpu, cuda, auto"):
        make_counter(CountingConfig(), "tpu")


def test_importing_the_module_does_not_import_torch():
    code = "import sys, runtime, runtime.counting.gpu; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_benchmark_compares_with_the_cpu_counter_and_names_the_device():
    from benchmarks.speed.gpu_counting import measure

    result = measure(repeats=1, frames=1, height=200, width=260)
    assert result["frame"].startswith("260x200") and result["frames_512_differing"] == {"split_off": 0, "split_on": 0}
    for mode in result["best_of_repeats"].values():
        assert mode["same_table"] and mode["counts"] == mode["cpu_counts"] and mode["torch_ms"] > 0
    assert result["device"].startswith("torch CPU") != torch.cuda.is_available()


def test_the_pipeline_counts_with_the_torch_counter_as_with_the_cpu_one(tmp_path, monkeypatch):
    """`csc-run --counting-device` reaches every counting thread: with the torch counter (on torch's CPU here) the
    counts and cell CSVs are the CPU counter's, frame for frame."""
    from runtime.backends import open_runner
    from runtime.cli.run import DEFAULT_MODEL
    from runtime.io.sources import DemoSource
    from runtime.pipeline import stream

    made = []

    def torch_counter(config, device):
        assert device == "cuda"
        made.append(TorchCellCounter(config, device="cpu"))
        return made[-1]

    runner, _ = open_runner(DEFAULT_MODEL, "ort")
    outputs = {}
    with runner:
        for device in ("cpu", "cuda"):
            if device == "cuda":
                monkeypatch.setattr(stream, "make_counter", torch_counter)
            counts, cells = tmp_path / f"{device}.csv", tmp_path / f"{device}-cells.csv"
            stream.Pipeline(DemoSource(seed=4), runner, options=stream.RunOptions(
                max_frames=4, count_workers=2, save_csv=counts, save_cells=cells, counting_device=device)).run()
            outputs[device] = ([row.rsplit(",", 2)[0] for row in counts.read_text().splitlines()],  # fps differs
                               cells.read_text())
    assert len(made) >= 2, "the pipeline's counter and its counting threads' counters are the torch one"
    assert all(counter.host_fallbacks == 0 for counter in made)
    assert len(outputs["cpu"][0]) == 5 and outputs["cuda"] == outputs["cpu"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for boxes without a GPU")
def test_csc_run_asked_to_count_on_a_gpu_it_lacks_says_so_in_one_line():
    run = subprocess.run([sys.executable, "-c", "from runtime.cli.run import main; main()", "--source", "demo",
                          "--no-show", "--max-frames", "2", "--counting-device", "cuda"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "torch sees no GPU" in run.stderr and "--counting-device auto" in run.stderr
    assert "Traceback" not in run.stderr
