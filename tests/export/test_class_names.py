"""Class names come from the dataset: labels imported as rbc and wbc train, export and run under those names."""
import cv2
from typer.testing import CliRunner

from runtime.data.annotations import export_dataset, read_annotations
from runtime.data.annotations.classmap import ClassMap
from runtime.data.annotations.writer import import_annotations
from runtime.backends.onnxruntime import OnnxRuntimeRunner
from runtime.data.synthesize import synthesize_dataset
from trainer.regimes import run_base
from trainer.train import TrainConfig


def test_imported_class_names_train_export_and_run_end_to_end(tmp_path):
    from export.onnx_export import ExportOptions, export_onnx
    from runtime.cli.run import app as run_app

    simulated = synthesize_dataset("mixed", 6, tmp_path / "sim", seed=4, size=64)
    export_dataset(simulated, "coco", tmp_path / "cells.json")
    summary = import_annotations(read_annotations("coco", tmp_path / "cells.json"), simulated / "images",
                                 tmp_path / "blood", ClassMap.parse("rbc=rbc,macrophage=wbc"), origin="import:coco")
    assert summary.classes == ["background", "rbc", "wbc"]

    run_base(tmp_path / "blood", tmp_path / "run", TrainConfig(regime="U-Base", arch="light-unet", steps=4, batch=2,
                                                               size=64, val_every=4, device="cpu"))
    model = tmp_path / "model.onnx"
    export_onnx(tmp_path / "run" / "best.pt", model, ExportOptions(batch="1", size=64))
    with OnnxRuntimeRunner(model) as runner:
        assert runner.metadata.classes == ["background", "rbc", "wbc"]

    frames = tmp_path / "frames"
    frames.mkdir()
    for path in sorted((simulated / "images").iterdir())[:3]:
        cv2.imwrite(str(frames / path.name), cv2.imread(str(path)))
    result = CliRunner().invoke(run_app, ["--images", str(frames), "--model", str(model), "--no-show",
                                          "--save-csv", str(tmp_path / "counts.csv")])
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "counts.csv").read_text().splitlines()
    assert rows[0] == "frame,source,rbc,wbc,fps,pixel_size_um" and len(rows) == 4
