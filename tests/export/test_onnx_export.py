import numpy as np
import onnx
import onnxruntime as ort
import pytest

from export.checks import run_checks, unsupported_by_tensorrt
from export.onnx_export import ExportOptions, export_onnx
from runtime.backends.onnxruntime import OnnxRuntimeRunner
from runtime.errors import CscError
from runtime.backends.model_meta import ModelMetadata


def test_fused_graph_takes_uint8_frames_and_gives_a_class_map(fp32_model):
    session = ort.InferenceSession(str(fp32_model), providers=["CPUExecutionProvider"])
    (inp,), outs = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape) == ("frames", "tensor(uint8)", [1, 64, 64, 3])
    assert [(o.name, o.type) for o in outs] == [("class_map", "tensor(uint8)")]
    graph = onnx.load(str(fp32_model))
    assert graph.opset_import[0].version >= 17
    assert {n.op_type for n in graph.graph.node} >= {"ArgMax", "Cast", "Conv"}
    # TensorRT takes a uint8 input only straight into a Cast, and gives a uint8 output only from one.
    first, last = graph.graph.node[0], graph.graph.node[-1]
    assert (first.op_type, list(first.input)) == ("Cast", ["frames"])
    assert (last.op_type, list(last.output)) == ("Cast", ["class_map"])
    meta = ModelMetadata.from_props(session.get_modelmeta().custom_metadata_map)
    assert meta.classes == ["background", "rbc", "macrophage"] and meta.input_size == (64, 64)
    assert meta.arch == "light-unet" and meta.regime == "U-Base" and meta.fused and meta.precision == "fp32"
    assert meta.normalisation["mean_rgb"] == [0.485, 0.456, 0.406] and meta.version
    assert meta.modalities == ["stained"], "the optics its (simulated, stained) training set records"


def test_fp32_checks_pass_with_the_pytorch_comparison(fp32_model, checkpoint):
    report = run_checks(fp32_model, checkpoint)
    assert report.ok, [c for c in report.checks if not c.ok]
    assert report.agreement >= 0.999 and report.max_logit_diff < 1e-3
    assert [c.name for c in report.checks] == ["onnx.checker", "metadata", "TensorRT ONNX parser",
                                               "ONNX Runtime vs PyTorch FP32"]


def test_the_check_says_when_the_checkpoint_is_not_the_one_exported(fp32_model, checkpoint, tmp_path):
    """`check model.onnx --checkpoint other.pt` gave "FAIL 43 %" without a word that the file's metadata names
    another checkpoint: a broken export, it seemed."""
    import torch

    from trainer.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(checkpoint)
    state["model"] = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
                      for k, v in state["model"].items()}
    save_checkpoint(tmp_path / "other.pt", {k: v for k, v in state.items() if k not in ("format", "version")})
    said = {c.name: c.detail for c in run_checks(fp32_model, tmp_path / "other.pt").checks}
    assert "exported from another checkpoint (best.pt sha256:" in said["ONNX Runtime vs PyTorch FP32"]
    own = {c.name: c.detail for c in run_checks(fp32_model, checkpoint).checks}
    assert "another checkpoint" not in own["ONNX Runtime vs PyTorch FP32"]


def test_dynamic_batch_and_unfused_graphs_run_through_the_runner(checkpoint, plain_model, tmp_path):
    dyn, plain = tmp_path / "dyn.onnx", plain_model
    export_onnx(checkpoint, dyn, ExportOptions(batch="dynamic", size=64))
    frames = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    with OnnxRuntimeRunner(dyn) as a, OnnxRuntimeRunner(plain) as b:
        assert a.max_batch is None and b.max_batch == 1
        ca, cb = a.infer(frames), b.infer(frames)
    assert ca.shape == (3, 64, 64) and ca.dtype == np.uint8
    assert (ca == cb).mean() > 0.999
    assert run_checks(plain, checkpoint).ok


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_reduced_precisions_keep_uint8_in_and_the_check_names_its_threshold(checkpoint, calib_images, tmp_path, precision):
    out = tmp_path / f"{precision}.onnx"
    meta = export_onnx(checkpoint, out, ExportOptions(batch="1", size=64, precision=precision),
                       calib=calib_images if precision == "int8" else None)
    assert meta.precision == precision
    graph = onnx.load(str(out))
    ops = {n.op_type for n in graph.graph.node}
    if precision == "int8":
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
        # TensorRT's DequantizeLinear refuses int32 input, so biases stay float.
        int32 = {t.name for t in graph.graph.initializer if t.data_type == onnx.TensorProto.INT32}
        assert not [n.name for n in graph.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int32]
    else:
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.graph.initializer)
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert graph.graph.node[0].op_type == "Cast"
    report = run_checks(out, checkpoint)
    assert report.agreement is not None and f"for {precision}" in report.checks[-1].detail
    if precision == "fp16":
        assert report.ok, report.checks


def test_int8_of_a_static_batch_is_calibrated_in_batches_of_that_size(checkpoint, calib_images, tmp_path):
    """`--precision int8 --batch 3` ended in ONNX Runtime's traceback "Got: 1 Expected: 3": calibration fed one
    frame at a time to a graph that takes exactly three."""
    out = tmp_path / "int8-b3.onnx"
    export_onnx(checkpoint, out, ExportOptions(batch="3", size=64, precision="int8"), calib=calib_images)
    graph = onnx.load(str(out))
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 3
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.graph.node}


def test_int8_of_the_bundled_model_agrees_with_its_fp32_on_fixed_frames(tmp_path):
    """INT8 quality on a trained model (the 6-step fixture's logits nearly tie everywhere): ONNX Runtime class maps
    of the quantized bundled model agree with its FP32 ones on ≥ 98 % of pixels (the documented INT8 threshold)."""
    from export.checks import AGREEMENT_THRESHOLD, check_frames, metadata_of
    from export.precision import quantize_int8
    from runtime.cli.run import DEFAULT_MODEL
    from runtime.backends.compare import class_map_agreement
    from runtime.data.synthesize import synthesize_dataset

    graph = onnx.load(str(DEFAULT_MODEL))
    calib = synthesize_dataset("mixed", 4, tmp_path / "calib", seed=5, size=512) / "images"
    onnx.save(quantize_int8(graph, calib, metadata_of(graph, DEFAULT_MODEL)), tmp_path / "int8.onnx")
    with OnnxRuntimeRunner(DEFAULT_MODEL) as fp32, OnnxRuntimeRunner(tmp_path / "int8.onnx") as int8:
        agreement = class_map_agreement(fp32, int8, check_frames((512, 512), n=2))
    assert AGREEMENT_THRESHOLD["int8"] <= agreement < 1.0


@pytest.mark.parametrize("options, calib, message", [
    (ExportOptions(precision="int8", size=64), None, "int8 needs calibration images"),
    (ExportOptions(precision="fp16", size=64), "calib", "--calib is read only for --precision int8"),
    (ExportOptions(size=64, fuse=False, probabilities=True), None, "--probabilities is an output of the fused graph"),
])
def test_option_combinations_are_refused_before_any_work(tmp_path, options, calib, message):
    """The checkpoint does not exist: the option table must answer before it is even opened."""
    with pytest.raises(CscError, match=message):
        export_onnx(tmp_path / "missing.pt", tmp_path / "m.onnx", options, calib=calib)
    assert not list(tmp_path.iterdir())


def test_out_naming_the_checkpoint_is_refused_and_the_checkpoint_kept(checkpoint, tmp_path):
    """`csc-export onnx best.pt --out best.pt` wrote the ONNX file over the checkpoint, then failed to read it back
    for the comparison: the trained model was lost."""
    import shutil
    from pathlib import Path

    ckpt = Path(shutil.copy(checkpoint, tmp_path / "best.pt"))
    before = ckpt.read_bytes()
    with pytest.raises(CscError, match="--out is the checkpoint itself"):
        export_onnx(ckpt, tmp_path / "." / "best.pt", ExportOptions(size=64))
    assert ckpt.read_bytes() == before


def test_an_onnx_export_named_like_an_engine_is_refused(checkpoint, tmp_path):
    """`--out m.engine` wrote an ONNX file that csc-run then took for an engine by its suffix ("engine has no
    sidecar")."""
    with pytest.raises(CscError, match="ends like a TensorRT engine"):
        export_onnx(checkpoint, tmp_path / "m.engine", ExportOptions(size=64))
    assert not list(tmp_path.iterdir())


def test_an_onnx_export_onto_a_folder_is_refused_before_the_export(checkpoint, tmp_path, monkeypatch):
    import export.onnx_export as exporter

    monkeypatch.setattr(exporter, "model_from_checkpoint", lambda *a: pytest.fail("the export began"))
    (tmp_path / "m.onnx").mkdir()
    with pytest.raises(CscError, match="is a folder"):
        export_onnx(checkpoint, tmp_path / "m.onnx", ExportOptions(size=64))


def test_foreign_onnx_file_fails_the_metadata_check(tmp_path):
    node = onnx.helper.make_node("Relu", ["x"], ["y"])
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph), tmp_path / "foreign.onnx")
    report = run_checks(tmp_path / "foreign.onnx")
    assert not report.ok
    assert "not written by csc-export" in report.checks[1].detail and "input size" in report.checks[1].detail


def _with_metadata(source, tmp_path, text):
    graph = onnx.load(str(source))
    for prop in graph.metadata_props:
        if prop.key == "auto_csc":
            prop.value = text
    onnx.save(graph, tmp_path / "m.onnx")
    return tmp_path / "m.onnx"


def test_metadata_from_a_newer_exporter_is_read_with_a_note(fp32_model, tmp_path):
    import json

    graph = onnx.load(str(fp32_model))
    data = json.loads(next(p.value for p in graph.metadata_props if p.key == "auto_csc"))
    path = _with_metadata(fp32_model, tmp_path, json.dumps({**data, "tile_policy": "nearest", "camera": {}}))
    report = run_checks(path)
    assert report.ok and "newer exporter ignored: camera, tile_policy" in report.checks[1].detail
    with OnnxRuntimeRunner(path) as runner:
        assert runner.metadata.classes == data["classes"] and runner.notes == [
            "metadata keys from a newer exporter ignored: camera, tile_policy"]


@pytest.mark.parametrize("edit, message", [
    (lambda d: "{broken", "not valid JSON"),
    (lambda d: {**d, "input_size": "512"}, "key 'input_size' has a str value"),
    (lambda d: {k: v for k, v in d.items() if k != "classes"}, "lacks the key 'classes'"),
    (lambda d: {**d, "fused": "yes"}, "key 'fused' has a str value 'yes', expected bool"),
    (lambda d: {**d, "precision": "fp8"}, "key 'precision' is 'fp8'"),
])
def test_malformed_metadata_is_one_line_naming_the_key(fp32_model, tmp_path, edit, message):
    import json
    import subprocess
    import sys

    graph = onnx.load(str(fp32_model))
    data = json.loads(next(p.value for p in graph.metadata_props if p.key == "auto_csc"))
    edited = edit(data)
    path = _with_metadata(fp32_model, tmp_path, edited if isinstance(edited, str) else json.dumps(edited))
    report = run_checks(path)
    assert not report.ok and message in report.checks[1].detail
    with pytest.raises(CscError, match=message):
        OnnxRuntimeRunner(path).activate()
    run = subprocess.run([sys.executable, "-c", "from runtime.cli.run import main; main()", "--source", "demo",
                          "--no-show", "--max-frames", "1", "--model", str(path)], capture_output=True, text=True)
    assert run.returncode == 2 and message.split("'")[0] in run.stderr and "Traceback" not in run.stderr


def test_unsupported_nodes_and_attributes_are_named():
    nodes = [onnx.helper.make_node("NonMaxSuppression", ["a", "b"], ["c"], name="nms"),
             onnx.helper.make_node("Resize", ["x", "", "s"], ["y"], name="up", mode="bogus"),
             onnx.helper.make_node("Conv", ["x", "w"], ["z"], name="conv")]
    graph = onnx.helper.make_model(onnx.helper.make_graph(nodes, "g", [], []))
    problems = unsupported_by_tensorrt(graph)
    assert len(problems) == 2
    assert "NonMaxSuppression (nms) — operator not supported" in problems[0]
    assert "mode='bogus'" in problems[1]


def test_bad_inputs(checkpoint, tmp_path):
    with pytest.raises(CscError, match="is a 'light-unet' model, not 'vgg16-unet'"):
        export_onnx(checkpoint, tmp_path / "m.onnx", ExportOptions(size=64), arch="vgg16-unet")
    with pytest.raises(CscError, match="multiple of 32"):
        export_onnx(checkpoint, tmp_path / "m.onnx", ExportOptions(size=50))
    with pytest.raises(CscError, match="--batch"):
        ExportOptions(batch="many")
    for size in (0, -32):  # both multiples of the stride: torch's traceback came from the trace
        with pytest.raises(CscError, match=f"--size must be a positive number of pixels, got {size}"):
            ExportOptions(size=size)
    (tmp_path / "file").write_text("")
    with pytest.raises(CscError, match="cannot write here"):
        export_onnx(checkpoint, tmp_path / "file" / "m.onnx", ExportOptions(size=64))
    assert not (tmp_path / "m.onnx").exists()


def test_cli_check_exit_codes(fp32_model, tmp_path):
    from typer.testing import CliRunner

    from export.cli import app

    assert CliRunner().invoke(app, ["check", str(fp32_model)]).exit_code == 0
    help_text = CliRunner().invoke(app, ["onnx", "--help"]).output
    assert "fp32" in help_text and "fp16" in help_text and "int8" in help_text
    assert CliRunner().invoke(app, ["onnx", "x.pt", "--out", "m.onnx", "--precision", "fp8"]).exit_code == 2
    (tmp_path / "bad.onnx").write_bytes(b"garbage")
    result = CliRunner().invoke(app, ["check", str(tmp_path / "bad.onnx")])
    assert result.exit_code != 0



def test_cli_check_refuses_images_it_cannot_read_or_would_not_read(fp32_model, checkpoint, tmp_path):
    """`csc-export check M.onnx --images nonexist` exited 0: the folder is read only for the comparison with
    PyTorch, and without --checkpoint there was none."""
    import cv2
    from typer.testing import CliRunner

    from export.cli import app

    (tmp_path / "empty").mkdir()
    for images, extra, message in ((tmp_path / "none", ["--checkpoint", checkpoint], "not a folder"),
                                   (tmp_path / "empty", ["--checkpoint", checkpoint], "no images found"),
                                   (tmp_path / "empty", [], "no images found"),
                                   (tmp_path / "none", [], "not a folder")):
        result = CliRunner().invoke(app, ["check", str(fp32_model), "--images", str(images), *map(str, extra)])
        assert result.exit_code != 0 and message in str(result.exception)
    cv2.imwrite(str(tmp_path / "empty" / "a.png"), np.full((8, 8, 3), 200, np.uint8))
    result = CliRunner().invoke(app, ["check", str(fp32_model), "--images", str(tmp_path / "empty")])
    assert result.exit_code != 0 and "--images is read only with --checkpoint" in str(result.exception)

def test_cli_refuses_images_that_do_not_decode_before_the_export(checkpoint, tmp_path):
    """`csc-export onnx --images D` with a broken image in D exported the model and then failed at the
    comparison: the images are decoded before the export now, and nothing is written."""
    import cv2
    from typer.testing import CliRunner

    from export.cli import app

    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.full((8, 8, 3), 200, np.uint8))
    (images / "b.png").write_bytes(b"not a png")
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(app, ["onnx", str(checkpoint), "--out", str(out), "--images", str(images)])
    assert result.exit_code != 0 and "unreadable or empty image file" in str(result.exception)
    assert "b.png" in str(result.exception) and not out.exists()


def test_auto_runs_an_unfused_export_on_onnx_runtime_and_says_why_not_openvino(plain_model):
    """`auto`'s trial of the CPU backends: OpenVINO serves fused exports only, so an unfused one goes to ONNX
    Runtime with OpenVINO's own reason, not to a runner that refuses the model when the run starts."""
    pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'auto-csc[openvino]')")
    from runtime.backends import open_runner
    from runtime.backends.select import cpu_trial

    trial = cpu_trial(plain_model, 1)
    assert trial["ort"] > 0 and "openvino" not in trial and "fused exports only" in trial["why_not_openvino"]
    runner, reason = open_runner(plain_model, "auto", 1)
    assert isinstance(runner, OnnxRuntimeRunner) and "OpenVINO cannot serve it: " in reason, reason
