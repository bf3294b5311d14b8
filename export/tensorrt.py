"""ONNX → TensorRT engine (`csc-export build-engine`), one code path for TensorRT 10.x (Jetson, JetPack 6) and
11.x (pip on x86).

Precision is in the ONNX file (FP16 weights or Q/DQ nodes): the network is strongly typed, so no precision
builder flag is set — TensorRT 11 removed them and 10.x forbids them on strongly typed networks. What differs by
version is chosen in `network_flags`. A sidecar `ENGINE.json` records what the engine was built for.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType

import onnx

from runtime.engine_sidecar import EngineSidecar
from runtime.errors import CscError
from runtime.gpu import gpu_info, import_tensorrt
from runtime.imageio import atomic_path
from runtime.model_meta import ModelMetadata


@dataclass
class BuildOptions:
    min_batch: int | None = None
    opt_batch: int | None = None
    max_batch: int | None = None
    workspace_mib: int = 1024
    timing_cache: str | None = None


def major_version(trt: ModuleType) -> int:
    return int(str(trt.__version__).split(".")[0])


def network_flags(trt: ModuleType) -> int:
    """Creation flags by version: 11.x networks are always strongly typed (no flag needed, none accepted); 10.x
    must ask for STRONGLY_TYPED so that the FP16/Q-DQ precision of the ONNX file is kept as written; older
    versions are not supported (no strongly typed networks before 9.x)."""
    major = major_version(trt)
    if major >= 11:
        return 0
    if major == 10:
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    raise CscError(f"TensorRT {trt.__version__} is too old", fix="use TensorRT 10.x (JetPack 6) or 11.x")


def read_onnx_metadata(path: Path) -> tuple[ModelMetadata, list[tuple[str, list[int]]]]:
    """The model's auto-CSC metadata and its inputs as (name, shape) with -1 for a dynamic dimension."""
    if not path.is_file():
        raise CscError("ONNX file not found", path=path, fix="export one with `csc-export onnx CKPT --out FILE`")
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise CscError(f"not a readable ONNX file ({type(err).__name__})", path=path) from None
    meta = ModelMetadata.from_props({p.key: p.value for p in graph.metadata_props}, str(path))
    inputs = [(i.name, [d.dim_value if d.HasField("dim_value") else -1 for d in i.type.tensor_type.shape.dim])
              for i in graph.graph.input]
    return meta, inputs


def profile_shapes(inputs: list[tuple[str, list[int]]], options: BuildOptions) -> dict[str, list[list[int]]]:
    """[min, opt, max] shapes per dynamic input from the batch options; empty for a static-batch model.

    Defaults: min 1, opt = max, max 8. A batch option on a static model is an error (rebuild the ONNX with
    `--batch dynamic`), as is min ≤ opt ≤ max violated.
    """
    dynamic = {name: shape for name, shape in inputs if any(d < 0 for d in shape)}
    asked = [options.min_batch, options.opt_batch, options.max_batch]
    if not dynamic:
        if any(v is not None for v in asked):
            raise CscError("--min/--opt/--max-batch given but the ONNX model has a static batch",
                           fix="export it with `csc-export onnx CKPT --batch dynamic`")
        return {}
    lo = options.min_batch or 1
    hi = options.max_batch or max(8, options.opt_batch or 0, lo)
    opt = options.opt_batch or hi
    if not 1 <= lo <= opt <= hi:
        raise CscError(f"batch sizes must satisfy 1 ≤ min ≤ opt ≤ max, got {lo}/{opt}/{hi}")
    profiles = {}
    for name, shape in dynamic.items():
        if any(d < 0 for d in shape[1:]):
            raise CscError(f"input {name} has dynamic dimensions beyond the batch: {shape}",
                           fix="export with a fixed --size")
        profiles[name] = [[b, *shape[1:]] for b in (lo, opt, hi)]
    return profiles


def _progress_monitor(trt: ModuleType, report):
    """A TensorRT IProgressMonitor that forwards (phase, step, steps) to ``report``."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.steps: dict[str, int] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            self.steps[phase_name] = num_steps
            report(phase_name, 0, num_steps)

        def step_complete(self, phase_name, step):
            report(phase_name, step + 1, self.steps.get(phase_name, 0))
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            report(phase_name, self.steps.get(phase_name, 0), self.steps.get(phase_name, 0))

    return Monitor()


def build_engine(onnx_path: str | Path, out: str | Path, options: BuildOptions, report=None) -> EngineSidecar:
    """Build and write ENGINE and ENGINE.json. Nothing is written unless the build succeeds."""
    onnx_path, out = Path(onnx_path), Path(out)
    meta, inputs = read_onnx_metadata(onnx_path)
    profiles = profile_shapes(inputs, options)
    trt = import_tensorrt()
    gpu_name, capability = gpu_info()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise CscError(f"TensorRT could not parse the model: {errors}", path=onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if profiles:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profiles.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    cache_path = Path(options.timing_cache) if options.timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(cache_bytes), False)
    if report is not None:
        config.progress_monitor = _progress_monitor(trt, report)
    began = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise CscError("TensorRT failed to build the engine (see its log above)", path=onnx_path)
    seconds = time.perf_counter() - began
    with atomic_path(out) as tmp:
        tmp.write_bytes(bytes(plan))
    if cache_path is not None:
        with atomic_path(cache_path) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    from export.onnx_export import sha256

    sidecar = EngineSidecar(
        tensorrt_version=str(trt.__version__), gpu_name=gpu_name, compute_capability=capability,
        precision=meta.precision, profiles=profiles, onnx_file=str(onnx_path), onnx_sha256=sha256(onnx_path),
        build_options=asdict(options), build_seconds=round(seconds, 1),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), model=asdict(meta))
    sidecar.write(out)
    return sidecar


__all__ = ["BuildOptions", "build_engine", "network_flags", "profile_shapes"]
