"""`csc-serve`: the HTTP counting API alone — POST an image, get its counts and cell table."""
from __future__ import annotations

import math
from pathlib import Path

import typer

from runtime.backends.select import BACKENDS
from runtime.cli.common import VersionOption, choices, console, entry

app = typer.Typer(add_completion=False, rich_markup_mode="rich", pretty_exceptions_show_locals=False)

Backend = choices("Backend", BACKENDS)


@app.command(help="Serve the counting API alone: POST /api/count (an image in, its counts and cell table out), "
                  "GET /healthz, /metrics and /docs. Loopback by default; any other --host requires a token. "
                  "Ctrl-C stops.")
def serve(
    model: Path = typer.Option(None, "--model", help="ONNX file or TensorRT engine (default: the bundled stained-smear model)."),
    pixel_size: str = typer.Option("auto", "--pixel-size", help="The images' µm per pixel (a request may give its own with ?pixel_size_um=). auto: MODEL.camera.json beside the model, else the model's own."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on: 127.0.0.1 (this machine only) or e.g. 0.0.0.0 (the network: a token is then required)."),
    port: int = typer.Option(..., "--port", min=0, max=65535, help="Port to listen on (0: any free one, printed)."),
    token: str = typer.Option(None, "--token", help="The token every request must carry (Authorization: Bearer TOKEN); default: the CSC_TOKEN environment variable, else none on loopback and a random one, printed once, on any other address."),
    backend: Backend = typer.Option("auto", "--backend", help="As csc-run's --backend."),
    threads: int = typer.Option(None, "--threads", min=1, help="Inference threads (default: the backend's)."),
    max_upload_mb: float = typer.Option(50.0, "--max-upload-mb", min=0.001, help="Largest request body accepted (MB); larger ones get 413."),
    version: bool = VersionOption,  # noqa: ARG001
) -> None:
    from runtime.cli.run import DEFAULT_MODEL, _parse_pixel_size, _pixel_size
    from runtime.errors import CscError
    from runtime.serve.standalone import serve_api
    from runtime.serve.uploads import MB, UploadLimits

    if not math.isfinite(max_upload_mb):  # typer's min lets inf through, and int(inf) is a traceback
        raise CscError(f"--max-upload-mb must be a number of MB, got {max_upload_mb}", fix="e.g. --max-upload-mb 200")
    model = model or DEFAULT_MODEL
    if not model.exists():
        raise CscError("model file not found", path=model, fix="pass --model PATH (an .onnx from `csc-export onnx` or an engine)")
    pixel_size_um, _ = _pixel_size(_parse_pixel_size(pixel_size), model)
    serve_api(model, pixel_size_um, host, port, token, Backend(backend).value, threads,
              UploadLimits(max_bytes=int(max_upload_mb * MB)),
              say=lambda text: console.print(text, highlight=False, soft_wrap=True))


main = entry(app)
