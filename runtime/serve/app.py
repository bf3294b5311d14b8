"""The routes: the live page and its streams (a `csc-run --serve` run), and the counting API (both commands).

Built with FastAPI (OpenAPI at /docs and /openapi.json); every answer that is not a picture, a stream or a CSV is
JSON, errors included (``{"detail": reason}``).
"""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from runtime.errors import CscError
from runtime.pipeline.overlay import CLASS_COLOURS
from runtime.pipeline.stream import Pipeline
from runtime.serve.auth import TokenGate
from runtime.serve.frame_hub import FrameHub
from runtime.serve.image_counter import ImageCounter
from runtime.serve.metrics import MetricsText, UploadStats
from runtime.serve.uploads import UploadLimits, UploadRejected, add_chunk, check_declared_length
from runtime.version import __version__

PAGE = Path(__file__).with_name("page.html")
NO_STORE = {"Cache-Control": "no-store"}
CSV_TAIL = 1 << 16  # bytes read back from a CSV's end to find its last complete row


@dataclass
class LiveRun:
    """A running `csc-run`: its pipeline (stage times, drops, scale), the hub its observer feeds, and the CSVs it
    writes (the user's --save-csv/--save-cells, or temporary ones)."""

    pipeline: Pipeline
    hub: FrameHub
    counts_csv: Path
    cells_csv: Path


@dataclass
class ServeContext:
    counter: ImageCounter
    class_names: tuple[str, ...]  # the model's, background first
    model: str
    backend: str
    limits: UploadLimits = field(default_factory=UploadLimits)
    live: LiveRun | None = None
    token: str | None = None
    uploads: UploadStats = field(default_factory=UploadStats)
    started: float = field(default_factory=time.time)


_COUNT_BODY = {
    "requestBody": {
        "required": True,
        "description": "The image (PNG, JPEG, TIFF or BMP) as the raw body, or as the file part of a multipart form.",
        "content": {"image/*": {"schema": {"type": "string", "format": "binary"}},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    "multipart/form-data": {"schema": {"type": "object", "properties": {
                        "image": {"type": "string", "format": "binary"}}}}},
    },
}


def _offline_docs(app) -> None:
    """OpenAPI's page at /docs from Swagger UI's files on this box (the swagger-ui-bundle package, in the serve
    extra): FastAPI's own page loads them from a CDN, and a box beside a microscope is often offline."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="auto-CSC API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")


def create_app(ctx: ServeContext):
    """The ASGI application: FastAPI's routes behind the token gate."""
    app = FastAPI(title="auto-CSC", version=__version__, redoc_url=None, docs_url=None,
                  description="Cell counts from a live `csc-run --serve` and from uploaded images.")
    _offline_docs(app)
    names = ctx.class_names[1:]
    pending = 0

    @app.post("/api/count", openapi_extra=_COUNT_BODY, summary="Count the cells of one image",
              response_description='{"counts": {class: n}, "cells": [one object per cell, with the cells CSV\'s '
                                   'columns], "pixel_size_um", "width", "height"}')
    async def count(request: Request, pixel_size_um: float | None = Query(
            None, gt=0, allow_inf_nan=False, description="The image's µm per pixel (default: the run's, given or calibrated, else the "
                                    "model's)")) -> JSONResponse:
        nonlocal pending
        started = time.perf_counter()
        status = 200
        if pending >= ctx.limits.max_pending:
            ctx.uploads.add(503, time.perf_counter() - started)
            return JSONResponse({"detail": f"busy: {pending} uploads already waiting; retry shortly"}, 503,
                                headers={"Retry-After": "1"})
        pending += 1
        try:
            body, name = await _read_upload(request, ctx.limits)
            result = await ctx.counter.count_upload(body, ctx.limits, name, pixel_size_um)
            return JSONResponse(result)
        except UploadRejected as err:
            status = err.status
            return JSONResponse({"detail": err.reason}, err.status)
        except CscError as err:
            status = 422
            return JSONResponse({"detail": str(err)}, 422)
        except ClientDisconnect:
            status = 499  # nobody to answer
            return JSONResponse({"detail": "client disconnected"}, 400)
        finally:
            pending -= 1
            ctx.uploads.add(status, time.perf_counter() - started)

    @app.get("/healthz", summary="Liveness (open without the token)")
    async def healthz() -> dict:
        now = time.time()
        answer = {"status": "ok", "uptime_s": round(now - ctx.started, 1)}
        if ctx.live is not None:  # the server answers while its source is stalled: a watchdog reads the frames' age
            last = ctx.live.hub.last_frame_at
            answer["frames"] = ctx.live.hub.frames
            answer["seconds_since_frame"] = None if last is None else round(now - last, 1)
        return answer

    @app.get("/metrics", summary="Prometheus text format", response_class=Response)
    async def metrics() -> Response:
        return Response(_metrics_text(ctx), media_type="text/plain; version=0.0.4; charset=utf-8", headers=NO_STORE)

    if ctx.live is None:
        @app.get("/", include_in_schema=False)
        async def index() -> dict:
            return {"service": "auto-CSC counting API", "count": "POST /api/count", "docs": "/docs",
                    "openapi": "/openapi.json"}
        return TokenGate(app, ctx.token)

    live = ctx.live
    hub = live.hub

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers=NO_STORE)

    @app.get("/api/info", summary="What is counted: source, model, classes and their colours, scale")
    async def info() -> dict:
        p = live.pipeline
        return {"source": p.source.name, "model": ctx.model, "backend": f"{p.runner.name} ({p.runner.detail})",
                "classes": [{"name": n, "colour": _hex(CLASS_COLOURS[i + 1])} for i, n in enumerate(names)],
                "scale": p.scale_note, "pixel_size_um": round(p.frame_pixel_size_um, 4),
                "stream_fps": hub.settings.stream_fps, "history_s": hub.settings.history_s, "version": __version__}

    @app.get("/api/counts", summary="The newest frame's counts")
    async def counts() -> Response:
        state = hub.state_json()
        if state is None:
            return JSONResponse({"detail": "no frame counted yet"}, 503, headers={"Retry-After": "1"})
        return Response(state, media_type="application/json", headers=NO_STORE)

    @app.get("/api/history", summary="Per-second mean counts over the last minutes, oldest first")
    async def history() -> dict:
        return {"interval_s": 1, "points": hub.history()}

    @app.get("/api/events", summary="Server-Sent Events: the counts of each frame (the newest only, to a slow client)")
    async def events() -> StreamingResponse:
        async def stream():
            yield b"retry: 2000\n\n"
            last = 0
            while True:
                item = await hub.next_state(last)
                if item is None:
                    return
                seq, data = item
                if not data:
                    yield b": keep-alive\n\n"
                    continue
                last = seq
                yield b"data: " + data + b"\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={**NO_STORE, "X-Accel-Buffering": "no"})

    @app.get("/stream.mjpg", summary="The overlay video (MJPEG; the newest frame only, to a slow client)")
    async def stream_mjpg() -> StreamingResponse:
        async def stream():
            hub.watch()
            try:
                last = 0
                while True:
                    item = await hub.next_jpeg(last)
                    if item is None:
                        return
                    last, jpeg = item
                    yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(jpeg)).encode()
                           + b"\r\n\r\n" + jpeg + b"\r\n")
            finally:
                hub.unwatch()

        return StreamingResponse(stream(), media_type="multipart/x-mixed-replace; boundary=frame",
                                 headers={**NO_STORE, "X-Accel-Buffering": "no"})

    @app.get("/snapshot.jpg", summary="The newest overlay frame", response_class=Response)
    async def snapshot() -> Response:
        drawn = hub.jpeg()
        if drawn is None:
            return JSONResponse({"detail": "no frame drawn yet"}, 503, headers={"Retry-After": "1"})
        index, jpeg = drawn
        return Response(jpeg, media_type="image/jpeg", headers={**NO_STORE, "X-Frame": str(index)})

    @app.get("/counts.csv", summary="The run's per-frame counts CSV so far (without --save-csv: its newest 32–64 MB of rows)", response_class=Response)
    async def counts_csv() -> Response:
        return run_csv(live.counts_csv, "counts.csv")

    @app.get("/cells.csv", summary="The run's per-cell CSV so far (without --save-cells: its newest 32–64 MB of rows)", response_class=Response)
    async def cells_csv() -> Response:
        return run_csv(live.cells_csv, "cells.csv")

    def run_csv(path: Path, name: str) -> Response:
        # The run makes (or replaces) its CSVs at its first counted frame: before it, the file at --save-csv may
        # still be an earlier run's, whose rows are not this run's.
        if hub.state_json() is None:
            return JSONResponse({"detail": "no frame counted yet"}, 503, headers={"Retry-After": "1"})
        return _csv_so_far(path, name)

    return TokenGate(app, ctx.token)


async def _read_upload(request: Request, limits: UploadLimits) -> tuple[bytes, str]:
    """The image bytes and a name for them (the multipart file name, else "upload"), the body capped as read."""
    check_declared_length(request.headers.get("content-length"), limits)
    chunks: list[bytes] = []

    async def read() -> None:
        received = 0
        async for chunk in request.stream():
            received = add_chunk(chunks, chunk, received, limits)

    try:
        await asyncio.wait_for(read(), limits.read_seconds)
    except asyncio.TimeoutError:
        raise UploadRejected(408, f"the body did not arrive within {limits.read_seconds:g} s: send it at once "
                                  "(a sender that trickles it holds an upload slot)") from None
    body = b"".join(chunks)
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return body, "upload"

    async def once():
        yield body

    try:
        form = await MultiPartParser(request.headers, once(), max_files=4, max_fields=16).parse()
    except MultiPartException as err:
        raise UploadRejected(400, f"bad multipart body: {err.message}") from None
    try:
        return await _image_part(form.multi_items())
    finally:
        await form.close()


async def _image_part(items: list[tuple[str, object]]) -> tuple[bytes, str]:
    """The image of a multipart form: its file part named ``image``, or its only file part (a client that sends a
    metadata file beside the image had the first part counted, whatever it held, and got 415)."""
    files = [(name, value) for name, value in items if hasattr(value, "read")]
    if not files:
        raise UploadRejected(400, "the multipart body has no file: send the image as a file part "
                                  "(curl -F image=@cells.png)")
    named = [value for name, value in files if name == "image"]
    if not named and len(files) > 1:
        raise UploadRejected(400, f"the multipart body has {len(files)} files and none named image: name the "
                                  "image's part image (curl -F image=@cells.png)")
    part = named[0] if named else files[0][1]
    return await part.read(), part.filename or "upload"


def _csv_so_far(path: Path, name: str) -> Response:
    """The CSV as written so far, up to its last complete row (the run appends to it as this is read). A large one
    is streamed from the file opened here: a temporary CSV trimmed meanwhile is replaced by a new file, and the
    open one keeps the rows (and the length) the answer declared."""
    try:
        with ExitStack() as opened:
            f = opened.enter_context(open(path, "rb"))
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - CSV_TAIL))
            tail = f.read(size - f.tell())
            cut = size - len(tail) + tail.rfind(b"\n") + 1
            f.seek(0)
            if cut > CSV_TAIL:  # large: stream it, never whole in memory
                opened.pop_all()  # the stream closes it
                return StreamingResponse(_file_chunks(f, cut), media_type="text/csv",
                                         headers={**_attachment(name), "Content-Length": str(cut)})
            data = f.read(cut)
    except OSError as err:
        return JSONResponse({"detail": f"{name} cannot be read ({err.strerror})"}, 503)
    return Response(data, media_type="text/csv", headers=_attachment(name))


def _file_chunks(f: BinaryIO, length: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    """The first ``length`` bytes of the open file ``f``, which it closes (at the end, or when the download stops)."""
    with f:
        while length > 0:
            data = f.read(min(chunk, length))
            if not data:
                return
            length -= len(data)
            yield data


def _attachment(name: str) -> dict[str, str]:
    return {**NO_STORE, "Content-Disposition": f'attachment; filename="auto-csc-{name}"'}


def _hex(bgr) -> str:
    b, g, r = (int(c) for c in bgr)
    return f"#{r:02x}{g:02x}{b:02x}"


def _metrics_text(ctx: ServeContext) -> str:
    out = MetricsText()
    out.family("csc_info", "gauge", "The model and backend (value 1).").sample(
        "csc_info", 1, {"model": ctx.model, "backend": ctx.backend, "version": __version__})
    out.family("csc_start_time_seconds", "gauge", "When the server started (Unix time).").sample(
        "csc_start_time_seconds", round(ctx.started, 3))
    live = ctx.live
    if live is not None:
        hub, p = live.hub, live.pipeline
        state = hub.state() or {"counts": {}, "fps": 0.0}
        out.family("csc_frames_total", "counter", "Frames counted.").sample("csc_frames_total", hub.frames)
        out.family("csc_dropped_frames_total", "counter", "Frames a live source dropped because counting was behind."
                   ).sample("csc_dropped_frames_total", p.dropped)
        out.family("csc_blank_frames_total", "counter", "Frames judged blank (counted zero, not segmented)."
                   ).sample("csc_blank_frames_total", p.blank_frames)
        out.family("csc_fps", "gauge", "Frames counted per second since the run began.").sample("csc_fps", state["fps"])
        out.family("csc_pixel_size_um", "gauge", "The frames' pixel size counted at (given or calibrated), µm."
                   ).sample("csc_pixel_size_um", round(p.frame_pixel_size_um, 4))
        out.family("csc_cells", "gauge", "Cells in the newest frame, per class.")
        for name in hub.names:
            out.sample("csc_cells", state["counts"].get(name, 0), {"class": name})
        out.family("csc_cells_counted_total", "counter", "Cells counted over all frames, per class.")
        for name, total in hub.cell_totals.items():
            out.sample("csc_cells_counted_total", total, {"class": name})
        out.family("csc_viewers", "gauge", "Open overlay streams.").sample("csc_viewers", hub.viewers)
        out.family("csc_stage_latency_seconds", "histogram", "Time per frame in each pipeline stage.")
        for stage in p.times.STAGES:
            out.histogram("csc_stage_latency_seconds", getattr(p.times, stage), {"stage": stage})
    out.family("csc_uploads_total", "counter", "POST /api/count answers, by HTTP status.")
    for status, n in sorted(ctx.uploads.by_status.items()):
        out.sample("csc_uploads_total", n, {"code": status})
    out.family("csc_upload_latency_seconds", "histogram", "POST /api/count: body read to answer.")
    out.histogram("csc_upload_latency_seconds", ctx.uploads.latency)
    return out.text()

