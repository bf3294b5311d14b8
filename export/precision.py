"""INT8 by explicit quantization: a QDQ ONNX file calibrated on images, for TensorRT (10/11, RTX) and ONNX Runtime.

FP16 needs no pass here: export/onnx_export.py exports the half-precision model directly (uint8 in and
class map out stay as they are), which is what strongly typed networks (TensorRT 10/11, TensorRT-RTX) read.
INT8 uses ONNX Runtime's static quantizer with TensorRT-compatible settings: QDQ format, symmetric
activations and per-channel symmetric weights, the convolutions quantized except the first and the last, biases
left in float (TensorRT's DequantizeLinear takes 8-bit input only; an int32 bias DQ fails its parser).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

from runtime.errors import CscError
from runtime.io.imageio import list_images, read_image
from runtime.backends.model_meta import ModelMetadata


class _FrameReader:
    """Calibration batches: the images of a folder, resized to the model input, as the graph's input. A static
    batch of N takes exactly N frames, so they are grouped N at a time, the last group filled from the first
    images."""

    def __init__(self, folder: Path, metadata: ModelMetadata, input_name: str, limit: int = 64):
        import cv2

        h, w = metadata.input_size
        singles = []
        for path in list_images(folder)[:limit]:
            image = cv2.resize(read_image(path), (w, h), interpolation=cv2.INTER_AREA)
            if metadata.fused:
                singles.append(image)
            else:
                rgb = image[..., ::-1].astype(np.float32) / 255.0
                norm = (rgb - np.array(metadata.normalisation["mean_rgb"])) / np.array(metadata.normalisation["std_rgb"])
                singles.append(norm.transpose(2, 0, 1).astype(np.float32))
        batch = 1 if metadata.batch == "dynamic" else int(metadata.batch)
        self.frames = [np.stack([singles[(start + i) % len(singles)] for i in range(batch)])
                       for start in range(0, len(singles), batch)]
        self.input_name = input_name
        self._it = iter(self.frames)

    def get_next(self):
        frame = next(self._it, None)
        return None if frame is None else {self.input_name: frame}

    def rewind(self) -> None:
        self._it = iter(self.frames)


def quantize_int8(graph: onnx.ModelProto, calib: str | Path, metadata: ModelMetadata) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calib = Path(calib)
    reader = _FrameReader(calib, metadata, graph.graph.input[0].name)
    if not reader.frames:
        raise CscError("no calibration images", path=calib, fix="put a few dozen camera frames there")
    with tempfile.TemporaryDirectory() as tmp:
        fp32, prep, q = Path(tmp) / "fp32.onnx", Path(tmp) / "prep.onnx", Path(tmp) / "int8.onnx"
        onnx.save(graph, fp32)
        quant_pre_process(str(fp32), str(prep), skip_symbolic_shape=True)
        # The first and last convolutions stay in float, as is common practice: the stem reads the normalised
        # pixels and the head writes the class logits whose near-ties decide outline pixels; 8 bits cost most there.
        convs = [n.name for n in onnx.load(prep).graph.node if n.op_type == "Conv"]
        quantize_static(
            str(prep), str(q), reader, quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["Conv"],
            nodes_to_exclude=[convs[0], convs[-1]],
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        )
        return onnx.load(q)
