"""ONNX → TensorRT engine (`csc-export build-engine`), one code path for two flavours of one API:
full TensorRT (10.x on JetPack 6, 10.x/11.x from pip on x86) and TensorRT for RTX (``tensorrt_rtx``).

Precision is in the ONNX file (FP16 weights or Q/DQ nodes): the network is strongly typed, so no precision
builder flag is set — TensorRT 11 and TensorRT-RTX removed them and 10.x forbids them on strongly typed
networks. Full TensorRT builds on and for the GPU it runs on; TensorRT-RTX builds ahead of time without a GPU, for
a list of compute capabilities, and specialises the engine on the RTX GPU when it is first loaded. A sidecar
``ENGINE.json`` records the flavour, its version and the GPUs the engine runs on.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from shlex import quote
from types import ModuleType

import onnx

from export.frames import check_frames
from export.targets import validate
from runtime.backends.engine_sidecar import RTX_DEFAULT_TARGETS, RTX_TARGETABLE, EngineSidecar, sha256
from runtime.errors import CscError
from runtime.backends.cuda import LABELS, gpu_info, import_tensorrt, installed_flavours, tensorrt_logger
from runtime.io.imageio import atomic_path
from runtime.backends.model_meta import ModelMetadata, load_onnx


@dataclass
class BuildOptions:
    min_batch: int | None = None
    opt_batch: int | None = None
    max_batch: int | None = None
    workspace_mib: int = 1024
    timing_cache: str | None = None
    compute_capabilities: list[str] = field(default_factory=list)  # TensorRT-RTX targets; [] = its default set


@dataclass
class OnnxFacts:
    """What the ONNX file is, read from the graph (its shapes and types) and its metadata."""

    metadata: ModelMetadata
    inputs: list[tuple[str, list[int]]]  # (name, shape), -1 for a dynamic dimension
    input_uint8: bool
    outputs: list[str]


def major_version(trt: ModuleType) -> int:
    return int(str(trt.__version__).split(".")[0])


def flavour_of(trt: ModuleType) -> str:
    return "rtx" if trt.__name__.split(".")[0] == "tensorrt_rtx" else "tensorrt"


def network_flags(trt: ModuleType) -> int:
    """Creation flags: TensorRT-RTX and TensorRT 11.x networks are always strongly typed (no flag needed); 10.x
    must ask for STRONGLY_TYPED so that the FP16/Q-DQ precision of the ONNX file is kept as written; older
    versions are not supported (no strongly typed networks before 9.x)."""
    if flavour_of(trt) == "rtx":
        return 0
    major = major_version(trt)
    if major >= 11:
        return 0
    if major == 10:
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    raise CscError(f"TensorRT {trt.__version__} is too old", fix="use TensorRT 10.x (JetPack 6) or 11.x")


def resolve_flavour(requested: str) -> tuple[str, ModuleType, tuple[str, str] | None]:
    """(flavour, its module, (GPU name, compute capability) or None) for `--flavour auto|tensorrt|rtx`.

    ``auto`` takes full TensorRT where it and a GPU are present, else TensorRT-RTX (which needs no GPU to build).
    Full TensorRT always needs the GPU it builds for."""
    if requested not in ("auto", "tensorrt", "rtx"):
        raise CscError(f"unknown flavour {requested!r}", fix="use auto, tensorrt or rtx")
    gpu, gpu_problem = None, ""
    try:
        gpu = gpu_info()
    except CscError as err:
        gpu_problem = str(err)
    if requested == "auto":
        installed = installed_flavours()
        if "tensorrt" in installed and gpu is not None:
            requested = "tensorrt"
        elif "rtx" in installed:
            requested = "rtx"
        elif "tensorrt" in installed:
            raise CscError(f"full TensorRT builds only on the GPU it builds for, and there is none here ({gpu_problem})",
                           fix="build on the target GPU box, or install TensorRT-RTX for a build without a GPU: "
                               "pip install 'auto-csc[rtx]'")
        else:
            raise CscError("no TensorRT is installed", fix="pip install 'auto-csc[rtx]' (TensorRT for RTX; builds "
                                                           "without a GPU) or 'auto-csc[trt]' (full TensorRT, needs the GPU)")
    trt = import_tensorrt(requested)
    if requested == "tensorrt" and gpu is None:
        raise CscError(f"full TensorRT builds only on the GPU it builds for, and there is none here ({gpu_problem})",
                       fix="build on the target GPU box, or use --flavour rtx (TensorRT-RTX builds without a GPU)")
    return requested, trt, gpu


def read_onnx(path: Path) -> OnnxFacts:
    """The model's auto-CSC metadata and what its graph takes and gives."""
    graph = load_onnx(path, external_data=False)
    meta = ModelMetadata.from_props({p.key: p.value for p in graph.metadata_props}, path)
    inputs = [(i.name, [d.dim_value if d.HasField("dim_value") else -1 for d in i.type.tensor_type.shape.dim])
              for i in graph.graph.input]
    uint8 = [i.type.tensor_type.elem_type == onnx.TensorProto.UINT8 for i in graph.graph.input]
    return OnnxFacts(meta, inputs, len(uint8) == 1 and uint8[0], [o.name for o in graph.graph.output])


def profile_shapes(inputs: list[tuple[str, list[int]]], options: BuildOptions) -> dict[str, list[list[int]]]:
    """[min, opt, max] shapes per dynamic input from the batch options; empty for a static-batch model.

    Defaults: min 1, opt = max, max 8. min ≤ opt ≤ max must hold. (Batch options on a static model are refused by
    the option table, export/targets.py.)
    """
    dynamic = {name: shape for name, shape in inputs if any(d < 0 for d in shape)}
    if not dynamic:
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


def parse_onnx(trt: ModuleType, path: Path) -> tuple[list[str], object, object, object]:
    """Parse with the flavour's ONNX parser: (errors naming each rejected node, builder, network, logger); no
    errors means the parser took the whole graph."""
    logger = tensorrt_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(path)):
        return [], builder, network, logger
    errors = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        # The parser's own description is generic ("Invalid Node"); the reason is in the log it wrote meanwhile.
        reason = next((m for m in logger.errors() if err.node_name() and err.node_name() in m), err.desc())
        errors.append(f"node {err.node_name() or err.node()} ({err.node_operator()}): {reason.splitlines()[0]}")
    return errors, builder, network, logger


def upgrade_hint(errors: list[str], path: Path) -> str:
    """The fix for a parse failure; `csc-export upgrade` where the uint8 input is the cause."""
    if any("UInt8" in e for e in errors):
        return (f"the uint8 frames must go straight into a Cast: `csc-export upgrade {quote(str(path))} --out NEW.onnx` "
                "rewrites the graph (or re-export it with this version's `csc-export onnx`)")
    return "re-export with `csc-export onnx` (opset 17), or report the node above"


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


def _set_compute_capabilities(trt: ModuleType, config, wanted: list[str]) -> list[str]:
    """Target GPUs of a TensorRT-RTX build: ``wanted`` ("7.5", "8.6", …) or the library's default set."""
    if not wanted:
        return list(RTX_DEFAULT_TARGETS)
    config.num_compute_capabilities = len(wanted)
    for i, cc in enumerate(wanted):
        if cc not in RTX_TARGETABLE:
            raise CscError(f"TensorRT-RTX cannot build for compute capability {cc}",
                           fix=f"use one of {', '.join(RTX_TARGETABLE)}, or full TensorRT (--flavour tensorrt) on that GPU")
        if not config.set_compute_capability(getattr(trt.ComputeCapability, "SM" + cc.replace(".", "")), i):
            raise CscError(f"TensorRT-RTX refused compute capability {cc}")
    return list(wanted)


def build_engine(onnx_path: str | Path, out: str | Path, options: BuildOptions, report=None,
                 flavour: str = "auto", accept: Callable[[Path], None] | None = None) -> EngineSidecar:
    """Build and write ENGINE and ENGINE.json. Options are checked before any work, and nothing is written unless
    the build succeeds and ``accept`` (the accuracy guard), given the new engine under a temporary name with its
    sidecar beside it, raises no error: an engine refused after it had replaced ``out`` took the good one it
    replaced with it."""
    onnx_path, out = Path(onnx_path), Path(out)
    facts = read_onnx(onnx_path)
    flavour, trt, gpu = resolve_flavour(flavour)
    validate("engine", {**asdict(options), "flavour": flavour, "fused": facts.metadata.fused and facts.input_uint8,
                        "layout": facts.metadata.input_layout, "outputs": facts.outputs,
                        "dynamic": any(d < 0 for _, shape in facts.inputs for d in shape), "onnx": onnx_path,
                        "out": out}, onnx_path)
    profiles = profile_shapes(facts.inputs, options)
    errors, builder, network, logger = parse_onnx(trt, onnx_path)
    if errors:
        raise CscError(f"{LABELS[flavour]} {trt.__version__} could not parse the model: {'; '.join(errors)}",
                       path=onnx_path, fix=upgrade_hint(errors, onnx_path))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if profiles:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profiles.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    if flavour == "rtx":
        targets = _set_compute_capabilities(trt, config, options.compute_capabilities)
    else:
        targets = [gpu[1]]
    cache_path = Path(options.timing_cache) if options.timing_cache else None  # full TensorRT only (option table)
    if cache_path is not None:
        cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
        config.set_timing_cache(config.create_timing_cache(cache_bytes), False)
    if report is not None:
        config.progress_monitor = _progress_monitor(trt, report)
    began = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - began
    if plan is None:
        errors = logger.errors()[-3:]
        memory = any("OutOfMemory" in e for e in errors)
        raise CscError(f"{LABELS[flavour]} failed to build the engine: {'; '.join(errors) or 'no reason given'}",
                       path=onnx_path, fix=f"raise --workspace (now {options.workspace_mib} MiB) or lower --max-batch"
                       if memory else None)
    if cache_path is not None:
        with atomic_path(cache_path) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    sidecar = EngineSidecar(
        tensorrt_version=str(trt.__version__), gpu_name=gpu[0] if gpu else "", compute_capability=gpu[1] if gpu else "",
        precision=facts.metadata.precision, profiles=profiles, onnx_file=_relative_to(onnx_path, Path(out).parent),
        onnx_sha256=sha256(onnx_path),
        build_options=asdict(options), build_seconds=round(seconds, 2),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), model=asdict(facts.metadata),
        flavour=flavour, target_compute_capabilities=targets)
    with atomic_path(out) as tmp:
        tmp.write_bytes(bytes(plan))
        if accept is not None:
            sidecar.write(tmp)
            try:
                accept(tmp)
            finally:
                sidecar.path_for(tmp).unlink(missing_ok=True)
    sidecar.write(out)
    return sidecar


def _relative_to(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` (the engine's): the sidecar then finds its ONNX file from any current folder,
    and after engine and ONNX file are copied elsewhere together. Absolute where no relative path exists (another
    drive on Windows)."""
    try:
        return Path(os.path.relpath(Path(path).resolve(), Path(folder).resolve())).as_posix()
    except ValueError:
        return str(Path(path).resolve())


# Minimum TensorRT-vs-ONNX-Runtime class-map agreement of a built engine: both run the same precision, so only
# kernel choice differs; pixels can flip only where two logits tie to within FP16 rounding.
ENGINE_AGREEMENT = 0.995


def engine_agreement(engine: str | Path, images: str | Path | None = None) -> float:
    """Class-map agreement of ``engine`` (run here by TensorRT) with the ONNX file it was built from (run by ONNX
    Runtime) on frames: the accuracy guard of `csc-export build-engine` and `csc-export check ENGINE`."""
    from runtime.backends.onnxruntime import OnnxRuntimeRunner
    from runtime.backends.tensorrt import TensorRTRunner
    from runtime.backends.compare import class_map_agreement

    sidecar = EngineSidecar.read(engine)
    source = sidecar.onnx_path(engine)
    if source is None:
        raise CscError("the ONNX file this engine was built from is not here (looked for "
                       f"{', '.join(map(str, sidecar.onnx_candidates(engine)))})", path=engine,
                       fix="copy the ONNX file beside the engine")
    if sha256(source) != sidecar.onnx_sha256:
        raise CscError("the ONNX file changed since the engine was built from it", path=source,
                       fix=f"rebuild the engine: {sidecar.rebuild_command(engine)}")
    with TensorRTRunner(engine) as runner, OnnxRuntimeRunner(source) as reference:
        return class_map_agreement(runner, reference, check_frames(reference.input_size, images))
