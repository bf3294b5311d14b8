"""`csc-serve`: the counting API alone (no source), for a lab's own software to send images to."""
from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path

from runtime.serve import require_serve
from runtime.serve.auth import choose_token
from runtime.serve.server import bind
from runtime.serve.uploads import UploadLimits


def serve_api(model: Path, pixel_size_um: float | None, host: str, port: int, token: str | None = None,
              backend: str = "auto", threads: int | None = None, limits: UploadLimits = UploadLimits(),
              say: Callable[[str], None] = print, stop: threading.Event | None = None) -> None:
    """Serve POST /api/count, /healthz, /metrics and /docs on host:port until Ctrl-C, SIGTERM or ``stop``.
    ``pixel_size_um``: the images' µm per pixel (None: the model's); a request may give its own."""
    require_serve()
    from runtime.backends import open_runner
    from runtime.serve.app import ServeContext, create_app
    from runtime.serve.image_counter import ImageCounter
    from runtime.serve.server import BackgroundServer

    choice = choose_token(host, token)
    sock = bind(host, port)
    counter = ImageCounter(lambda: open_runner(model, backend, threads)[0], None, lambda: pixel_size_um)
    server = None
    try:
        runner = counter.open()  # a model that does not load is an error now, not at the first upload
        say(f"model: {model} ({runner.name}: {runner.detail}); images at "
            + (f"{pixel_size_um:g} µm/px" if pixel_size_um else f"the model's {runner.metadata.pixel_size_um:g} µm/px"))
        context = ServeContext(counter, tuple(runner.metadata.classes), Path(model).name,
                               f"{runner.name} ({runner.detail})", limits, token=choice.token)
        server = BackgroundServer(create_app(context), host, sock).start()
        say(f"counting API: {server.url}api/count  (docs: {server.url}docs)"
            + (f"\ntoken (made for this server, printed once): {choice.token}" if choice.generated else "")
            + ("  (token required)" if choice.token and not choice.generated else ""))
        _wait(stop or threading.Event())
    finally:
        if server is not None:
            server.stop()
        else:
            sock.close()
        counter.close()


def _wait(stop: threading.Event) -> None:
    """Until ``stop`` is set, Ctrl-C or SIGTERM (a supervisor's stop)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
