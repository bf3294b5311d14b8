import json
from pathlib import Path

import pytest
import torch
from onnx import TensorProto, helper

from benchmarks.bench import BenchOptions, render_chart, render_markdown, run_bench
from runtime.cli.run import DEFAULT_MODEL
from runtime.backends.graph_cost import graph_cost
from runtime.errors import CscError
from trainer.profile import count_flops


def test_flops_of_a_single_conv_by_hand():
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 3, 3, 3], [0.0] * 216)
    b = helper.make_tensor("b", TensorProto.FLOAT, [8], [0.0] * 8)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], [w, b])
    cost = graph_cost(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert cost == {"params": 216 + 8, "flops": 2 * (3 * 3 * 3) * (8 * 16 * 16)}


class TinyUNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.down = torch.nn.Conv2d(4, 8, 3, padding=1, stride=2)
        self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.dec = torch.nn.Conv2d(12, 4, 3, padding=1)
        self.head = torch.nn.Conv2d(4, 3, 1)

    def forward(self, x):
        e = torch.relu(self.enc(x))
        d = self.dw(torch.relu(self.down(e)))
        up = torch.nn.functional.interpolate(d, scale_factor=2.0, mode="nearest")
        return self.head(torch.relu(self.dec(torch.cat([up, e], 1))))


def test_flops_of_a_tiny_unet_match_hand_count_and_the_torch_counter(tmp_path):
    model = TinyUNet().eval()
    hand = 2 * (27 * 4 * 32 * 32 + 36 * 8 * 16 * 16 + 9 * 8 * 16 * 16 + 108 * 4 * 32 * 32 + 4 * 3 * 32 * 32)
    assert count_flops(model, 32) == hand
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), str(path), dynamo=True, opset_version=17)
    cost = graph_cost(path)
    assert cost["flops"] == hand
    assert cost["params"] == sum(p.numel() for p in model.parameters())


def test_graph_cost_of_the_bundled_model_equals_the_torch_count():
    from trainer.models import build_model

    assert graph_cost(DEFAULT_MODEL)["flops"] == count_flops(build_model("light-unet"), 512)


@pytest.fixture(scope="module")
def report():
    return run_bench([DEFAULT_MODEL], "ort", BenchOptions(batches=(1,), seconds_per_entry=0.5, end_to_end_frames=10,
                                                          full_frames=1))


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """An untrained light-unet exported fused at 64 px: another model cost than the bundled 512 px one."""
    from export.onnx_export import ExportOptions, export_onnx
    from trainer.checkpoint import save_checkpoint
    from trainer.models import build_model

    root = tmp_path_factory.mktemp("small")
    torch.manual_seed(0)
    save_checkpoint(root / "small.pt", {"arch": "light-unet", "classes": ["background", "rbc", "macrophage"],
                                        "model": build_model("light-unet").state_dict(), "config": {}})
    export_onnx(root / "small.pt", root / "small.onnx", ExportOptions(size=64))
    return root / "small.onnx"


def test_report_structure(report, tmp_path):
    assert set(report) >= {"models", "peak_gflops", "results", "machine", "not_measured"}
    assert report["models"][str(DEFAULT_MODEL)] == graph_cost(DEFAULT_MODEL) and report["peak_gflops"] > 0
    (entry,) = report["results"]
    assert {"backend", "precision", "batch", "fps", "end_to_end_fps", "latency_ms", "meets_25fps", "flops"} <= set(entry)
    assert entry["backend"] == "onnxruntime" and entry["precision"] == "fp32" and entry["batch"] == 1
    lat = entry["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] and entry["runs"] >= 10
    assert entry["meets_25fps"] == (entry["end_to_end_fps"] >= 25)
    assert 0 < entry["fraction_of_peak"] < 1
    assert set(entry["stages"]) == {"capture", "infer", "post"}
    # Post-processing beside inference: the end-to-end run's per-frame counting time, and per megapixel of frame.
    assert entry["post_ms"] == entry["stages"]["post"]["mean_ms"] > 0
    assert entry["post_ms_per_megapixel"] == pytest.approx(entry["post_ms"] / (512 * 512 / 1e6), abs=0.01)
    # And at the paper's camera size: a 4000×3000 frame tiled through the model and counted whole.
    full = entry["end_to_end_4000x3000"]
    assert full["frames"] == 1 and full["end_to_end_fps"] > 0 and full["post_ms"] > 0 and full["infer_ms"] > 0
    assert full["post_ms_per_megapixel"] == pytest.approx(full["post_ms"] / 12.0, abs=0.01)
    # The same pipeline on frames drawn before the run: the demo's drawing (the capture cost) left out.
    ready = entry["end_to_end_frames_ready"]
    assert ready["frames"] == 10 and ready["end_to_end_fps"] > 0 and set(ready["stages"]) == {"capture", "infer", "post"}
    md = render_markdown(report)
    assert (f"| {entry['end_to_end_fps']} | {ready['end_to_end_fps']} | {entry['post_ms']} "
            f"({entry['post_ms_per_megapixel']}) |") in md
    assert f"| {full['end_to_end_fps']} ({full['post_ms']}) |" in md
    assert "| default.onnx (light-unet) | onnxruntime | fp32 | 1 |" in md
    render_chart(report, tmp_path / "chart.png")
    import cv2

    assert cv2.imread(str(tmp_path / "chart.png")).shape[0] == 420
    json.dumps(report)


def test_cost_and_peak_fraction_are_per_model_when_models_differ(small_model):
    """Before, the first model's FLOPs were used for every row: "% of peak" of the second model was wrong."""
    both = run_bench([DEFAULT_MODEL, small_model], "ort",
                     BenchOptions(batches=(1,), seconds_per_entry=0.5, end_to_end_frames=10, full_frames=0))
    big, small = both["results"]
    assert big["flops"] == graph_cost(DEFAULT_MODEL)["flops"] and small["flops"] == graph_cost(small_model)["flops"]
    assert small["flops"] * 60 < big["flops"], "64² against 512² pixels"
    for entry in (big, small):
        assert entry["fps_ceiling"] == round(both["peak_gflops"] * 1e9 / entry["flops"], 1)
        assert entry["fraction_of_peak"] == round(entry["fps"] / (both["peak_gflops"] * 1e9 / entry["flops"]), 3)
    md = render_markdown(both)
    for model in (DEFAULT_MODEL, small_model):
        cost = graph_cost(model)
        assert f"- {model.name}: {cost['params']:,} parameters, {cost['flops'] / 1e9:.2f} GFLOPs" in md


def test_auto_adds_a_tensorrt_row_where_an_engine_runs_and_says_why_not_elsewhere(small_model, tmp_path):
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX (dev extra) builds the engine")
    import shutil

    from export.tensorrt import BuildOptions, build_engine
    from runtime.backends.tensorrt import why_not_runnable

    model = tmp_path / "small.onnx"
    shutil.copy(small_model, model)
    options = BenchOptions(batches=(1,), seconds_per_entry=0.5, end_to_end_frames=10, full_frames=0)
    from runtime.backends.openvino import openvino_available

    cpu = ["onnxruntime"] + (["openvino"] if openvino_available() else [])  # both CPU backends, side by side
    alone = run_bench([model], "auto", options)
    assert [r["backend"] for r in alone["results"]] == cpu
    assert alone["not_measured"] == [f"small.onnx: no TensorRT row — no engine beside it (csc-export build-engine "
                                     f"{model} --out {tmp_path / 'small.engine'})"]
    build_engine(model, tmp_path / "small.engine", BuildOptions(), flavour="rtx")
    report = run_bench([model], "auto", options)
    problem = why_not_runnable(tmp_path / "small.engine")
    if problem is None:  # a machine with an RTX GPU measures the engine
        assert [r["backend"] for r in report["results"]] == cpu + ["tensorrt"] and not report["not_measured"]
    else:  # no number is made up: the report says why there is no TensorRT row
        assert [r["backend"] for r in report["results"]] == cpu
        assert report["not_measured"] == [f"small.onnx: no TensorRT row — small.engine cannot run on this machine: {problem}"]
        assert "Not measured: small.onnx: no TensorRT row" in render_markdown(report)


def test_cli_writes_json_md_and_plot(tmp_path):
    from typer.testing import CliRunner

    from benchmarks.cli import app

    result = CliRunner().invoke(app, ["--backend", "ort", "--seconds", "0.5", "--frames", "10", "--full-frames", "0", "--json",
                                      str(tmp_path / "b.json"), "--md", str(tmp_path / "b.md"), "--plot",
                                      str(tmp_path / "b.png")])
    assert result.exit_code == 0, result.output
    (entry,) = json.loads((tmp_path / "b.json").read_text())["results"]
    assert entry["meets_25fps"] == (entry["end_to_end_fps"] >= 25)
    assert ("verdict: meets" if entry["meets_25fps"] else "verdict: misses") in result.output
    assert (tmp_path / "b.md").exists() and (tmp_path / "b.png").exists()
    bad = CliRunner().invoke(app, ["--backend", "cuda"])
    assert bad.exit_code == 2 and "auto" in bad.output and "ort" in bad.output



def test_a_missing_or_foreign_model_stops_the_bench_before_any_measurement(tmp_path, monkeypatch):
    """FileNotFoundError and DecodeError tracebacks from the model's cost, once the models before it were
    measured."""
    import benchmarks.bench as bench

    monkeypatch.setattr(bench, "full_size_frames", lambda count: pytest.fail("frames made before the models were read"))
    monkeypatch.setattr(bench, "runners_for", lambda *args: pytest.fail("measured before every model was read"))
    junk, truncated = tmp_path / "junk.onnx", tmp_path / "truncated.onnx"
    junk.write_text("junk\n")
    truncated.write_bytes(DEFAULT_MODEL.read_bytes()[:100_000])
    unreadable = r"not a readable ONNX file \(DecodeError"
    for bad, message in ((tmp_path / "none.onnx", "ONNX file not found"), (junk, unreadable), (truncated, unreadable)):
        with pytest.raises(CscError, match=message):
            run_bench([DEFAULT_MODEL, bad], "ort", BenchOptions(full_frames=1))


def test_without_batch_1_no_end_to_end_run_is_made_and_the_verdict_says_so(small_model, tmp_path, monkeypatch):
    """--batch 2 alone: the end-to-end runs (the demo, frames ready, 4000×3000) were measured and dropped, none
    shown, and the verdict, read off inference alone, said 'end-to-end'."""
    from typer.testing import CliRunner

    import benchmarks.bench as bench
    from benchmarks.cli import app
    from export.onnx_export import ExportOptions, export_onnx

    model = tmp_path / "dynamic.onnx"
    export_onnx(small_model.with_suffix(".pt"), model, ExportOptions(size=64, batch="dynamic"))
    for measure in ("measure_end_to_end", "measure_full_frames"):
        monkeypatch.setattr(bench, measure, lambda *args: pytest.fail("an end-to-end run nobody sees"))
    report = run_bench([model], "ort", BenchOptions(batches=(2,), seconds_per_entry=0.5, full_frames=1))
    (entry,) = report["results"]
    assert entry["batch"] == 2 and entry["end_to_end_fps"] is None and "end_to_end_4000x3000" not in entry
    assert report["not_measured"] == ["dynamic.onnx on onnxruntime: no end-to-end run — it stands beside batch 1, "
                                      "not among the batches measured (2)"]
    monkeypatch.setattr(bench, "run_bench", lambda *args, **kwargs: report)
    result = CliRunner().invoke(app, ["--model", str(model), "--batch", "2"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "25 FPS at 512×512 in inference alone on this machine" in result.output, result.output


def test_a_model_no_runner_can_run_stops_the_bench_before_any_measurement(small_model, tmp_path, monkeypatch):
    """An engine this machine cannot run, or one given to --backend ort, was found out only when its turn came,
    after minutes of measuring the models before it, and nothing was written."""
    import shutil

    import benchmarks.bench as bench
    from runtime.backends.engine_sidecar import EngineSidecar

    for measure in ("peak_gflops", "measure_end_to_end", "measure_latency"):
        monkeypatch.setattr(bench, measure, lambda *args: pytest.fail("measured before every runner was chosen"))
    shutil.copy(small_model, tmp_path / "small.onnx")
    engine = tmp_path / "small.engine"
    engine.write_bytes(b"plan")
    EngineSidecar(tensorrt_version="0.0", gpu_name="", compute_capability="", precision="fp32", profiles={},
                  onnx_file="small.onnx", onnx_sha256="0" * 64, flavour="rtx").write(engine)
    options = BenchOptions(full_frames=0)
    with pytest.raises(CscError):  # no GPU here; on a GPU box, no TensorRT-RTX 0.0
        run_bench([DEFAULT_MODEL, engine], "auto", options)
    with pytest.raises(CscError, match="ONNX Runtime cannot run a TensorRT engine"):
        run_bench([DEFAULT_MODEL, engine], "ort", options)


def test_ctrl_c_keeps_the_entries_measured_before_it(small_model, tmp_path, monkeypatch):
    """Ctrl-C after some entries were measured: typer's exit 130 printed nothing, and every figure was lost."""
    from typer.testing import CliRunner

    import benchmarks.bench as bench
    from benchmarks.cli import app

    measured = bench.measure_latency

    def second_one_interrupted(runner, batch, budget_s):
        if second_one_interrupted.calls:
            raise KeyboardInterrupt
        second_one_interrupted.calls += 1
        return measured(runner, batch, budget_s)

    second_one_interrupted.calls = 0
    monkeypatch.setattr(bench, "measure_latency", second_one_interrupted)
    with pytest.raises(bench.BenchInterrupted) as stop:
        run_bench([small_model, DEFAULT_MODEL], "ort", BenchOptions(seconds_per_entry=0.5, end_to_end_frames=10,
                                                                    full_frames=0))
    report = stop.value.report
    assert report["interrupted"] and [r["model"] for r in report["results"]] == [str(small_model)]

    def interrupted(*args, **kwargs):
        raise bench.BenchInterrupted(report)

    monkeypatch.setattr(bench, "run_bench", interrupted)
    out = {"--json": tmp_path / "b.json", "--md": tmp_path / "b.md", "--plot": tmp_path / "b.png"}
    result = CliRunner().invoke(app, [str(v) for pair in out.items() for v in pair], env={"COLUMNS": "200"})
    assert result.exit_code == 130 and "entries measured before Ctrl-C" in result.output, result.output
    assert "verdict" not in result.output, "no verdict on the part of a run"
    assert json.loads(out["--json"].read_text()) == json.loads(json.dumps(report))
    assert "Interrupted (Ctrl-C)" in out["--md"].read_text() and out["--plot"].exists()
    report["results"] = []
    nothing = CliRunner().invoke(app, ["--json", str(tmp_path / "none.json")])
    assert nothing.exit_code == 130 and "nothing written" in nothing.output and not (tmp_path / "none.json").exists()

    def while_preparing(*args, **kwargs):  # Ctrl-C while the models are read and the 4000×3000 frames made
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "run_bench", while_preparing)
    nothing = CliRunner().invoke(app, ["--json", str(tmp_path / "none.json")])
    assert nothing.exit_code == 130 and "nothing written" in nothing.output and not (tmp_path / "none.json").exists()


def test_ctrl_c_in_an_end_to_end_run_stops_the_benchmark(monkeypatch):
    """The pipeline takes Ctrl-C as the end of a run: the benchmark went on to its next figure, reported the cut
    run's FPS and printed the verdict, exit 0."""
    import os
    import signal

    import benchmarks.bench as bench
    from runtime.backends import open_runner
    from runtime.io.sources import DemoSource

    class PressedCtrlC(DemoSource):
        """The demo, with Ctrl-C pressed at its fourth frame in the first run it feeds."""
        pressed = False

        def frames(self):
            for i, frame in enumerate(super().frames()):
                if i == 3 and not PressedCtrlC.pressed:
                    PressedCtrlC.pressed = True
                    os.kill(os.getpid(), signal.SIGINT)
                yield frame

    monkeypatch.setattr(bench, "DemoSource", PressedCtrlC)
    runner, _ = open_runner(DEFAULT_MODEL, "ort")
    with runner, pytest.raises(KeyboardInterrupt):
        bench.measure_end_to_end(runner, 50)


@pytest.mark.parametrize("args, message", [
    (["--plot", "chart.txt"], "--plot is not an image file name"), (["--plot", "."], "--plot names a folder"),
    (["--batch", "0"], "--batch"), (["--json", "."], "--json names a folder"), (["--md", "."], "--md names a folder"),
    (["--json", "r.json", "--md", "r.json"], "--md and --json name the same file"),
    (["--model", "m.onnx", "--json", "m.onnx"], "--json and --model name the same file"),
    (["--json", "notes.txt/r.json"], "--json lies inside a file"), (["--md", "notes.txt/a/r.md"], "--md lies inside a file"),
    (["--json", "read-only/r.json"], "cannot write here (permission denied)")])
def test_cli_refuses_bad_outputs_or_batch_before_the_run(monkeypatch, tmp_path, args, message):
    """--plot chart.txt, --json or --md onto a folder, inside a file or in a read-only folder failed only after the
    whole benchmark; --json onto the model replaced it; --batch 0 was taken."""
    import os

    from typer.testing import CliRunner

    import benchmarks.bench as bench
    from benchmarks.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "read-only").mkdir()
    real_access = os.access  # chmod binds no root user (CI's containers): the permission is what os.access says
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p).name != "read-only" and real_access(p, mode, **kw))
    monkeypatch.setattr(bench, "run_bench", lambda *args, **kwargs: pytest.fail("the benchmark ran"))
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0 and message in result.output + str(result.exception)
    assert isinstance(result.exception, (SystemExit, CscError))

def test_e2e_ratio_script_pairs_each_pipeline_run_with_inference_and_publishes(tmp_path, capsys):
    from benchmarks.speed.e2e_ratio import measure
    from benchmarks.publish import publish

    result = measure(pairs=2, frames=40)
    assert len(result["pairs"]) == 2 and "CPUExecutionProvider" in result["runner"]
    for pair in result["pairs"]:
        assert pair["inference_fps"] > 0 and pair["ratio"] == pytest.approx(pair["end_to_end_fps"] / pair["inference_fps"], abs=2e-3)
        assert pair["steady_ratio"] == pytest.approx(pair["steady_fps"] / pair["inference_fps"], abs=2e-3)
        # The steady rate leaves the start out; whether it is higher is a timing (the result files show it), which
        # a loaded machine can turn round in a 40-frame run, so only its presence is checked here.
        assert pair["steady_fps"] > 0
    with pytest.raises(ValueError, match="at least 40"):
        measure(pairs=1, frames=39)
    with pytest.raises(ValueError, match="demo, ready"):
        measure(pairs=1, source="camera")
    ready = measure(pairs=1, frames=40, source="ready")
    assert ready["source"] == "ready" and result["source"] == "demo"
    assert ready["pairs"][0]["steady_fps"] > 0 and ready["pairs"][0]["end_to_end_fps"] > 0
    publish(result, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(capsys.readouterr().out) == result


def test_export_agreement_script_reports_each_precision_as_the_export_check_does(small_model, capsys, tmp_path):
    from benchmarks.accuracy.export_agreement import measure
    from benchmarks.publish import publish
    from export.checks import AGREEMENT_THRESHOLD

    result = measure(small_model.with_suffix(".pt"), size=64)
    assert [r["precision"] for r in result["results"]] == ["fp32", "fp16", "int8"]
    fp32 = result["results"][0]
    assert fp32["agreement"] >= 0.999 and fp32["max_logit_diff"] < 1e-3 and fp32["passes"]
    for row in result["results"]:
        assert row["threshold"] == AGREEMENT_THRESHOLD[row["precision"]]
        assert row["passes"] == (row["agreement"] >= row["threshold"])
    publish(result, tmp_path / "a.json")
    assert json.loads((tmp_path / "a.json").read_text()) == json.loads(capsys.readouterr().out)


def test_engine_build_script_builds_each_variant_with_the_real_builder():
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX (dev extra) builds the engines")
    from benchmarks.speed.engine_build import measure, render_markdown

    result = measure(("light-unet",), size=64, repeats=2, precisions=("fp16",), bundled=False)
    static, dynamic = result["results"]
    assert (static["batch"], dynamic["batch"]) == ("1", "dynamic") and static["precision"] == "fp16"
    assert static["profiles"] == {} and dynamic["profiles"] == {"frames": [[1, 64, 64, 3], [8, 64, 64, 3], [8, 64, 64, 3]]}
    for row in (static, dynamic):
        assert row["engine_mb"] > 0.01 and len(row["build_seconds_all"]) == 2 and row["library"].startswith("TensorRT-RTX")
    assert "| light-unet, fresh export (untrained weights) | fp16 | dynamic 1–8 |" in render_markdown(result)


def test_int8_accuracy_script_quantizes_with_the_exporter_and_evaluates_both(small_model):
    from benchmarks.accuracy.int8_accuracy import main

    result = main([str(small_model)], n=2, quantize_first=True)
    fp32, int8 = result["results"]
    assert (fp32["precision"], int8["precision"]) == ("fp32", "int8") and "quantized by export/precision.py" in int8["model"]
    for row in (fp32, int8):
        assert 0 <= row["miou"] <= 1 and set(row["count_accuracy"]) == {"rbc", "macrophage"}
