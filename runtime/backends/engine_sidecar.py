"""`model.engine.json`: what a TensorRT engine was built for. Engines are not portable across TensorRT versions,
flavours or (for full TensorRT) GPUs, so the runtime checks this sidecar before deserialising and says exactly
how to rebuild, naming the flavour that would run on this GPU."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from shlex import quote
from typing import Any, ClassVar

from runtime.errors import CscError
from runtime.backends.cuda import INSTALL, LABELS
from runtime.io.imageio import write_text
from runtime.backends.model_meta import ModelMetadata, fields_from_json

# Compute capabilities TensorRT-RTX can target (its ComputeCapability enum: SM75 … SM121), and those its default
# ahead-of-time engine runs on: a run on an H100 answered "Supported compute capabilities: 8.0 8.6 8.9 12.0 12.1
# >12.0". "X+" means X and later. Turing (7.5) needs an engine built for it alone.
RTX_TARGETABLE = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")
RTX_DEFAULT_TARGETS = ("8.0", "8.6", "8.9", "12.0+")


def sha256(path: str | Path) -> str:
    """The hex sha256 of a file's bytes: how a sidecar names the ONNX file its engine was built from (and an export
    the checkpoint it was made from)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cc(value: str) -> tuple[int, int]:
    major, _, minor = value.partition(".")
    return int(major), int(minor or 0)


def runs_on(targets: list[str] | tuple[str, ...], capability: str) -> bool:
    """Whether compute capability ``capability`` is one of ``targets`` (where "X+" covers X and later)."""
    return any(_cc(capability) >= _cc(t[:-1]) if t.endswith("+") else t == capability for t in targets)


@dataclass
class EngineSidecar:
    tensorrt_version: str  # version of the flavour's library
    gpu_name: str  # the GPU it was built on; "" for an ahead-of-time TensorRT-RTX build without one
    compute_capability: str  # of that GPU ("8.7"), "" likewise
    precision: str
    profiles: dict[str, list[list[int]]]  # input name → [min, opt, max] shapes; empty for a static engine
    onnx_file: str
    onnx_sha256: str
    build_options: dict[str, Any] = field(default_factory=dict)
    build_seconds: float = 0.0
    created: str = ""
    model: dict[str, Any] = field(default_factory=dict)  # the ONNX file's auto-CSC metadata
    flavour: str = "tensorrt"  # "tensorrt" or "rtx"; sidecars older than TensorRT-RTX support were full TensorRT
    target_compute_capabilities: list[str] = field(default_factory=list)  # GPUs it runs on; [] = its build GPU's
    # Keys of the file this reader does not know (from a newer exporter); never written back.
    ignored_keys: ClassVar[tuple[str, ...]] = ()

    @staticmethod
    def path_for(engine: str | Path) -> Path:
        return Path(f"{engine}.json")

    @property
    def label(self) -> str:
        return LABELS.get(self.flavour, self.flavour)

    @property
    def targets(self) -> list[str]:
        return self.target_compute_capabilities or ([self.compute_capability] if self.compute_capability else [])

    def write(self, engine: str | Path) -> Path:
        path = self.path_for(engine)
        write_text(path, json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, engine: str | Path) -> EngineSidecar:
        """The sidecar of ``engine``; a missing key, a wrong type or bad JSON is one error naming it, a key from a
        newer exporter is ignored (listed in ``ignored_keys``)."""
        path = cls.path_for(engine)
        fix = f"rebuild it with `csc-export build-engine MODEL.onnx --out {quote(str(engine))}` (it writes both)"
        if not path.is_file():
            raise CscError("engine has no sidecar", path=path, fix=fix)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CscError(f"unreadable engine sidecar ({type(err).__name__}: {str(err)[:80]})", path=path,
                           fix=fix) from None
        sidecar, ignored = fields_from_json(cls, data, "engine sidecar", path, fix)
        if sidecar.flavour not in LABELS:
            raise CscError(f"engine sidecar key 'flavour' is {sidecar.flavour!r}, not one of {', '.join(LABELS)}",
                           path=path, fix=fix)
        sidecar.ignored_keys = tuple(ignored)
        return sidecar

    def metadata(self, engine: str | Path) -> ModelMetadata:
        """The model's metadata recorded at build time, checked key by key like the ONNX file's."""
        return ModelMetadata.from_dict(self.model, self.path_for(engine))

    def onnx_candidates(self, engine: str | Path) -> list[Path]:
        """Where the ONNX file this engine was built from may be, most likely first: its recorded path taken from
        the engine's folder (sidecars record it relative to that folder, so a folder copied elsewhere keeps it),
        a file of its name beside the engine (engine, sidecar and ONNX file copied together), and the recorded
        path as it stands (absolute, or from the current folder as older sidecars meant it)."""
        recorded, folder = Path(self.onnx_file), Path(engine).parent
        found: list[Path] = []
        for path in (folder / recorded, folder / recorded.name, recorded):
            if path not in found:
                found.append(path)
        return found

    def onnx_path(self, engine: str | Path) -> Path | None:
        """The first of `onnx_candidates` that exists, or None."""
        return next((p for p in self.onnx_candidates(engine) if p.is_file()), None)

    def built_from(self, onnx: str | Path) -> bool:
        """Whether ``onnx`` holds the very bytes the engine was built from: a model exported again under the same
        name is another model, and its old engine would count with the old one."""
        return sha256(onnx) == self.onnx_sha256

    def rebuild_command(self, engine: str | Path, flavour: str | None = None,
                        compute_capabilities: list[str] | None = None) -> str:
        """The `csc-export build-engine` line that builds this engine again (for another flavour or GPU if asked)."""
        opts = self.build_options
        flavour = flavour or self.flavour
        # quoted as a shell needs it: a copied line with a path of spaces or brackets must run as printed
        parts = [f"csc-export build-engine {quote(str(self.onnx_path(engine) or self.onnx_file))} "
                 f"--out {quote(str(engine))}"]
        parts += [f"--{k.replace('_', '-')} {opts[k]}" for k in ("min_batch", "opt_batch", "max_batch") if opts.get(k)]
        parts.append(f"--flavour {flavour}")
        if flavour == "rtx":
            ccs = (opts.get("compute_capabilities") or []) if compute_capabilities is None else compute_capabilities
            parts += [f"--compute-capability {cc}" for cc in ccs]
        return " ".join(parts)

    def check_matches(self, engine: str | Path, version: str, gpu_name: str, compute_capability: str) -> None:
        """Refuse an engine built by another version of its flavour, or for another GPU, with the exact rebuild
        command; for a GPU that the engine's flavour cannot serve at all, name the flavour that can."""
        if self.flavour == "rtx" and not runs_on(self.targets, compute_capability):
            where = f"{gpu_name} (sm {compute_capability})"
            if compute_capability in RTX_TARGETABLE:
                fix = f"rebuild it for this GPU: {self.rebuild_command(engine, 'rtx', [compute_capability])}"
            else:
                fix = (f"TensorRT-RTX does not support sm {compute_capability}; build with full TensorRT on this "
                       f"machine ({INSTALL['tensorrt']}): {self.rebuild_command(engine, 'tensorrt')}")
            raise CscError(f"this {self.label} engine runs on GPUs of compute capability "
                           f"{', '.join(self.targets)}, not on {where}", path=engine, fix=fix)
        problems = []
        if self.tensorrt_version != version:
            problems.append(f"built with {self.label} {self.tensorrt_version}, running {version}")
        if self.flavour == "tensorrt" and (self.compute_capability != compute_capability or self.gpu_name != gpu_name):
            problems.append(f"built for {self.gpu_name} (sm {self.compute_capability}), running on {gpu_name} "
                            f"(sm {compute_capability})")
        if problems:
            raise CscError("engine does not fit this machine: " + "; ".join(problems), path=engine,
                           fix=f"rebuild it here: {self.rebuild_command(engine)}")
