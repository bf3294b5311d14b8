"""`csc-run --serve`: the web view and the API beside a running pipeline, from the option to the stopped server.

Usage (what runtime/cli/run.py does)::

    with WebView("0.0.0.0:8080", token=None, say=print) as web:  # the extra checked, the port bound, the token
        pipeline = Pipeline(...)
        web.start(pipeline, model, backend)  # the pipeline's observer and CSVs feed the page
        summary = pipeline.run()             # the server stops when the block ends
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from runtime.pipeline.stream import Pipeline
from runtime.serve import require_serve
from runtime.serve.auth import choose_token
from runtime.serve.server import bind, parse_address
from runtime.serve.uploads import UploadLimits

UPLOAD_THREADS = 1  # the live run's inference keeps the other cores
TEMPORARY_CSV_BYTES = 64 << 20  # each of the page's own CSVs keeps its newest 32–64 MB of rows


class WebView:
    def __init__(self, address: str, token: str | None, say: Callable[[str], None] = print,
                 limits: UploadLimits = UploadLimits()):
        require_serve()
        self.host, port = parse_address(address)
        self.token = choose_token(self.host, token)
        self.say = say
        self.limits = limits
        self.sock = bind(self.host, port)  # now: a port in use fails before the model loads
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.server = None
        self.hub = None
        self.counter = None

    def _csv_paths(self, pipeline: Pipeline) -> tuple[Path, Path]:
        """The counts and cells CSVs the page offers: the run's own (--save-csv, --save-cells), else temporary ones
        the run is told to write, removed when the server stops."""
        options = pipeline.options
        if options.save_csv is None or options.save_cells is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="csc-serve-")
            folder = Path(self._tmp.name)
            # Temporary ones keep only their newest rows: a run of weeks would fill the disk with cells otherwise.
            if options.save_csv is None:
                options.save_csv, options.counts_csv_max_bytes = folder / "counts.csv", TEMPORARY_CSV_BYTES
            if options.save_cells is None:
                options.save_cells, options.cells_csv_max_bytes = folder / "cells.csv", TEMPORARY_CSV_BYTES
        return Path(options.save_csv), Path(options.save_cells)

    def start(self, pipeline: Pipeline, model: Path, backend: str) -> None:
        """Serve ``pipeline``'s frames (as its observer) and count uploads with the same model and scale."""
        from runtime.backends import open_runner
        from runtime.backends.select import same_backend
        from runtime.serve.app import LiveRun, ServeContext, create_app
        from runtime.serve.frame_hub import FrameHub
        from runtime.serve.image_counter import ImageCounter
        from runtime.serve.server import BackgroundServer

        names = pipeline.counter.config.class_names
        self.hub = FrameHub(names, pipeline.segmenter.to_frame)
        pipeline.observer = self.hub.observe
        backend = same_backend(pipeline.runner, backend)  # uploads run on the live run's CPU backend
        self.counter = ImageCounter(lambda: open_runner(model, backend, UPLOAD_THREADS)[0], pipeline.counter.config,
                                    lambda: pipeline.frame_pixel_size_um, pipeline.options.tile_overlap)
        counts_csv, cells_csv = self._csv_paths(pipeline)
        context = ServeContext(self.counter, names, Path(model).name, f"{pipeline.runner.name} ({pipeline.runner.detail})",
                               self.limits, LiveRun(pipeline, self.hub, counts_csv, cells_csv), self.token.token)
        self.server = BackgroundServer(create_app(context), self.host, self.sock).start()
        self.say(f"web view: {self.server.url}"
                 + (f"?token={self.token.token}  (token made for this run, printed once; or send "
                    "'Authorization: Bearer TOKEN')" if self.token.generated else "")
                 + ("  (token required)" if self.token.token and not self.token.generated else ""))

    def close(self) -> None:
        if self.hub is not None:
            self.hub.close()  # ends the streams, so the server's connections close
        if self.server is not None:
            self.server.stop()
        else:
            self.sock.close()
        if self.counter is not None:
            self.counter.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> WebView:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
