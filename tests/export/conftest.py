import pytest

from runtime.synthesize import synthesize_dataset
from trainer.regimes import run_base
from trainer.train import TrainConfig


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A light-unet trained for a few steps: enough for export and agreement checks."""
    root = tmp_path_factory.mktemp("ckpt")
    data = synthesize_dataset("mixed", 6, root / "data", seed=4, size=64)
    config = TrainConfig(regime="U-Base", arch="light-unet", steps=6, batch=2, size=64, val_every=6, device="cpu")
    run_base(data, root / "run", config)
    return root / "run" / "best.pt"


@pytest.fixture(scope="session")
def fp32_model(checkpoint, tmp_path_factory):
    from export.onnx_export import ExportOptions, export_onnx

    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(checkpoint, out, ExportOptions(batch="1", size=64))
    return out
