import pytest

from runtime.data.synthesize import synthesize_dataset
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


@pytest.fixture(scope="session")
def old_style_model(checkpoint, tmp_path_factory):
    """A fused export as exporters before the TensorRT fix wrote it (uint8 frames transposed and flipped, then cast):
    the layout of the bundled model until `csc-export upgrade` rewrote it."""
    import onnx
    import torch

    from export.onnx_export import ExportOptions, FusedSegmenter, _trace, _write_metadata
    from runtime.backends.model_meta import ModelMetadata
    from trainer.checkpoint import model_from_checkpoint

    class OldFusedSegmenter(FusedSegmenter):
        def forward(self, frames: torch.Tensor):
            return self.model(self.pre(frames)).argmax(1).to(torch.uint8)

    model, meta = model_from_checkpoint(checkpoint)
    options = ExportOptions(batch="1", size=64)
    graph = _trace(OldFusedSegmenter(model.eval()), options)
    _write_metadata(graph, ModelMetadata(classes=list(meta["classes"]), input_size=(64, 64), arch=meta["arch"],
                                         normalisation={"mean_rgb": [0.485, 0.456, 0.406], "std_rgb": [0.229, 0.224, 0.225]}))
    out = tmp_path_factory.mktemp("old") / "old.onnx"
    onnx.save(graph, out)
    return out


@pytest.fixture(scope="session")
def calib_images(tmp_path_factory):
    return synthesize_dataset("mixed", 4, tmp_path_factory.mktemp("calib"), seed=9, size=64) / "images"


def _export(checkpoint, tmp_path_factory, name, **options):
    from export.onnx_export import ExportOptions, export_onnx

    out = tmp_path_factory.mktemp("onnx") / name
    export_onnx(checkpoint, out, ExportOptions(size=64, **options))
    return out


@pytest.fixture(scope="session")
def plain_model(checkpoint, tmp_path_factory):
    """`--no-fuse`: float NCHW in, logits out (ONNX Runtime only)."""
    return _export(checkpoint, tmp_path_factory, "plain.onnx", fuse=False)


@pytest.fixture(scope="session")
def probabilities_model(checkpoint, tmp_path_factory):
    """`--probabilities`: class map and softmax probabilities out (ONNX Runtime only)."""
    return _export(checkpoint, tmp_path_factory, "probabilities.onnx", probabilities=True)
