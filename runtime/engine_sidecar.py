"""`model.engine.json`: what a TensorRT engine was built for. Engines are not portable across TensorRT versions
or GPUs, so the runtime checks this sidecar before deserialising and says exactly how to rebuild."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runtime.errors import CscError
from runtime.imageio import write_text


@dataclass
class EngineSidecar:
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7"
    precision: str
    profiles: dict[str, list[list[int]]]  # input name → [min, opt, max] shapes; empty for a static engine
    onnx_file: str
    onnx_sha256: str
    build_options: dict[str, Any] = field(default_factory=dict)
    build_seconds: float = 0.0
    created: str = ""
    model: dict[str, Any] = field(default_factory=dict)  # the ONNX file's auto-CSC metadata

    @staticmethod
    def path_for(engine: str | Path) -> Path:
        return Path(f"{engine}.json")

    def write(self, engine: str | Path) -> Path:
        path = self.path_for(engine)
        write_text(path, json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, engine: str | Path) -> EngineSidecar:
        path = cls.path_for(engine)
        if not path.is_file():
            raise CscError("engine has no sidecar", path=path,
                           fix=f"rebuild it with `csc-export build-engine MODEL.onnx --out {engine}` (it writes both)")
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError) as err:
            raise CscError(f"unreadable engine sidecar ({err})", path=path, fix="rebuild the engine") from None

    def rebuild_command(self, engine: str | Path) -> str:
        opts = self.build_options
        batch = "".join(f" --{k.replace('_', '-')} {opts[k]}" for k in ("min_batch", "opt_batch", "max_batch") if opts.get(k))
        return f"csc-export build-engine {self.onnx_file} --out {engine}{batch}"

    def check_matches(self, engine: str | Path, tensorrt_version: str, gpu_name: str, compute_capability: str) -> None:
        """Refuse an engine built by another TensorRT or for another GPU, with the exact rebuild command."""
        problems = []
        if self.tensorrt_version != tensorrt_version:
            problems.append(f"built with TensorRT {self.tensorrt_version}, running {tensorrt_version}")
        if self.compute_capability != compute_capability or self.gpu_name != gpu_name:
            problems.append(f"built for {self.gpu_name} (sm {self.compute_capability}), running on {gpu_name} "
                            f"(sm {compute_capability})")
        if problems:
            raise CscError("engine does not fit this machine: " + "; ".join(problems), path=engine,
                           fix=f"rebuild it here: {self.rebuild_command(engine)}")
