"""uvicorn in a background thread: the counting stays the main thread's work, and stopping one stops the other.

The socket is bound here, before any work starts, so that a port in use is one clear error, not a traceback in a
thread after the model has loaded. The access log is off: it writes each request's query string, where a browser's
first request carries the token.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import socket
import threading
import time
from typing import TYPE_CHECKING

from runtime.errors import CscError
from runtime.serve.priority import lower_thread_priority

if TYPE_CHECKING:
    import uvicorn

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
UVICORN_LOG = "uvicorn.error"  # where uvicorn logs an exception in a request, with its traceback
MAX_CONNECTIONS = 64  # more get 503 from uvicorn: each open connection holds buffers
NOT_HERE = "give an address of this machine, e.g. 127.0.0.1 or 0.0.0.0"


def parse_address(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``[HOST:]PORT`` (``[::1]:8080`` for IPv6) as (host, port); port 0 picks a free one."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host = default_host
    host = host.strip("[]") or default_host
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise CscError(f"--serve {text!r}: the port must be a number from 0 to 65535",
                       fix="e.g. --serve 8080 (this machine only) or --serve 0.0.0.0:8080 (the network, with a token)")
    return host, int(port)


def bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as err:
        raise CscError(f"cannot serve on {host}: {err.strerror}", fix=NOT_HERE) from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may rebind at once (TIME_WAIT)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise CscError(f"cannot serve on {host}:{port}: {err.strerror}",
                       fix=NOT_HERE if err.errno == errno.EADDRNOTAVAIL  # another machine's address
                       else "choose another port, or stop the program using it") from None
    return sock


class _QuietCancellation(logging.Filter):
    """Drops uvicorn's traceback for a request it cancelled while stopping (an upload still arriving or being
    counted when Ctrl-C came): a stop is no error, and its one line saying how many it cancelled stays."""

    def __init__(self, server: uvicorn.Server) -> None:
        super().__init__()
        self.server = server

    def filter(self, record: logging.LogRecord) -> bool:
        cancelled = record.exc_info is not None and isinstance(record.exc_info[1], asyncio.CancelledError)
        return not (cancelled and self.server.should_exit)


class BackgroundServer:
    """An ASGI app served by uvicorn from a thread; `start` returns once it accepts connections."""

    def __init__(self, app, host: str, sock: socket.socket):
        import uvicorn

        self.host = host
        self.sock = sock  # bound by `bind`
        self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", ws="none", server_header=False,
            timeout_graceful_shutdown=2, limit_concurrency=MAX_CONNECTIONS))
        self._quiet = _QuietCancellation(self.server)
        self._thread = threading.Thread(target=self._serve, daemon=True, name="serve")
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def _serve(self) -> None:
        lower_thread_priority()
        try:
            asyncio.run(self.server.serve(sockets=[self.sock]))
        except BaseException as err:  # noqa: BLE001 - reported by start(); uvicorn exits with SystemExit
            self._error = err

    def start(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.sock.close()
                raise CscError(f"the web server did not start on {self.host}:{self.port}"
                               + (f" ({type(self._error).__name__}: {self._error})" if self._error else ""))
            time.sleep(0.01)
        logging.getLogger(UVICORN_LOG).addFilter(self._quiet)
        return self

    def stop(self) -> None:
        """Stop accepting, close the connections (streams end when their hub closes), join the thread."""
        if self._thread.ident is None:  # never started
            self.sock.close()
            return
        self.server.should_exit = True
        self._thread.join(STOP_TIMEOUT)
        if self._thread.is_alive():
            self.server.force_exit = True
            self._thread.join(STOP_TIMEOUT)
        self.sock.close()
        logging.getLogger(UVICORN_LOG).removeFilter(self._quiet)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
