"""The web view's and the counting API's endpoints (runtime/serve): answers, token rules, hostile bodies, and the
streams' promise that a slow viewer never queues frames."""
import asyncio
import csv
import importlib.util
import io
import logging
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import warnings
import zlib

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'auto-csc[serve]'")
import httpx  # noqa: E402

with warnings.catch_warnings():  # starlette's newest TestClient asks for httpx2; it works with httpx as it is
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402
from fastapi.responses import StreamingResponse  # noqa: E402

from runtime.backends.base import Runner  # noqa: E402
from runtime.backends.onnxruntime import OnnxRuntimeRunner  # noqa: E402
from runtime.cli.run import DEFAULT_MODEL  # noqa: E402
from runtime.errors import CscError  # noqa: E402
from runtime.backends.model_meta import ModelMetadata  # noqa: E402
from runtime.pipeline.stream import Pipeline, RunOptions  # noqa: E402
from runtime.serve import require_serve  # noqa: E402
from runtime.serve.app import LiveRun, ServeContext, _csv_so_far, create_app  # noqa: E402
from runtime.serve.auth import choose_token, is_loopback  # noqa: E402
from runtime.serve.frame_hub import FrameHub, ViewSettings  # noqa: E402
from runtime.serve.image_counter import ImageCounter  # noqa: E402
from runtime.serve.server import BackgroundServer, bind, parse_address  # noqa: E402
from runtime.serve.uploads import UploadLimits, UploadRejected  # noqa: E402
from runtime.data.simulator import SimConfig, SimulatedMicroscope  # noqa: E402
from runtime.io.sources import Frame, MemorySource, Source  # noqa: E402
from runtime.io.writers import CELL_COLUMNS, CountsCsvWriter  # noqa: E402

NAMES = ("background", "rbc", "macrophage")
TOKEN = "test-token-0123456789"


class DarkIsCells(Runner):
    """A stand-in model for the live run (fast): class 1 where the blue channel is dark."""

    name = "threshold"

    def __init__(self, size=128):
        super().__init__()
        self.metadata = ModelMetadata(classes=list(NAMES), input_size=(size, size), arch="test")

    def activate(self):
        """Nothing to load."""

    def deactivate(self):
        """Nothing to release."""

    def infer(self, frames):
        return (frames[..., 0] < 100).astype(np.uint8)


class EndlessFrames(Source):
    """The same few frames over and over until stopped: a live run a test can end."""

    def __init__(self, images):
        super().__init__("endless")
        self.images, self.stop = images, threading.Event()

    def frames(self):
        i = 0
        while not self.stop.is_set():
            yield Frame(i, self.images[i % len(self.images)], "endless")
            i += 1
            time.sleep(0.002)


def discs(n=6, size=128, seed=0):
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), 210, np.uint8)
    for _ in range(n):
        cv2.circle(image, tuple(int(v) for v in rng.integers(12, size - 12, 2)), 6, (40, 40, 40), -1)
    return image


def encoded(image, ext=".png"):
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


@pytest.fixture(scope="module")
def counter():
    c = ImageCounter(lambda: OnnxRuntimeRunner(DEFAULT_MODEL, threads=1))
    c.open()
    yield c
    c.close()


@pytest.fixture(scope="module")
def sim_image():
    return SimulatedMicroscope(SimConfig(height=512, width=512), seed=5).frame(0).image


def api(counter, **kw):
    return ServeContext(counter, NAMES, DEFAULT_MODEL.name, "ort", **kw)


@pytest.fixture()
def finished_run(tmp_path, counter):
    """A live run of 40 frames that has ended, its hub and CSVs left for the endpoints to serve."""
    images = [discs(seed=s) for s in range(4)]
    pipeline = Pipeline(MemorySource(images * 10), DarkIsCells(),
                        options=RunOptions(save_csv=tmp_path / "counts.csv", save_cells=tmp_path / "cells.csv",
                                           calibrate=False, host_budget=False))
    hub = FrameHub(NAMES, pipeline.segmenter.to_frame, ViewSettings(idle_period_s=0.0))
    pipeline.observer = hub.observe
    summary = pipeline.run()
    deadline = time.monotonic() + 5
    while hub.jpeg() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    yield pipeline, hub, summary
    hub.close()


# -- POST /api/count ------------------------------------------------------------------------------------------
def test_upload_is_counted_as_the_pipeline_counts_a_frame(counter, sim_image, tmp_path):
    runner = OnnxRuntimeRunner(DEFAULT_MODEL, threads=1)
    with runner:
        summary = Pipeline(MemorySource([sim_image]), runner,
                           options=RunOptions(save_cells=tmp_path / "cells.csv", save_csv=tmp_path / "counts.csv",
                                              calibrate=False, host_budget=False)).run()
    with open(tmp_path / "cells.csv", newline="") as f:
        table = list(csv.DictReader(f))
    client = TestClient(create_app(api(counter)))
    raw = client.post("/api/count", content=encoded(sim_image), headers={"content-type": "image/png"})
    form = client.post("/api/count", files={"image": ("slide 1.png", encoded(sim_image), "image/png")})
    for answer, source in ((raw, "upload"), (form, "slide 1.png")):
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["counts"] == {name: summary["counts"][name]["total"] for name in NAMES[1:]}
        assert body["counts"]["rbc"] > 10
        assert (body["width"], body["height"], body["pixel_size_um"]) == (512, 512, 0.4)
        assert len(body["cells"]) == len(table) and list(body["cells"][0]) == CELL_COLUMNS
        for cell, row in zip(body["cells"], table):  # the --save-cells table, value for value
            assert {k: as_csv(k, v) for k, v in cell.items()} == {**row, "source": source}
            assert isinstance(cell["id"], int) and isinstance(cell["area_um2"], float)


def as_csv(column, value):
    """A cell-table value as the cells CSV writes it."""
    if column in ("cx", "cy"):
        return f"{value:.1f}"
    if column in ("area_um2", "eq_diameter_px", "eq_diameter_um"):
        return f"{value:.2f}"
    return str(value)


def test_upload_pixel_size_rescales_like_the_run(counter, sim_image):
    client = TestClient(create_app(api(counter)))
    at_model = client.post("/api/count", content=encoded(sim_image)).json()
    enlarged = cv2.resize(sim_image, (1024, 1024), interpolation=cv2.INTER_LINEAR)
    halved = client.post("/api/count?pixel_size_um=0.2", content=encoded(enlarged)).json()
    assert halved["pixel_size_um"] == 0.2 and (halved["width"], halved["height"]) == (1024, 1024)
    assert abs(halved["counts"]["rbc"] - at_model["counts"]["rbc"]) <= 0.1 * at_model["counts"]["rbc"] + 1
    bad = client.post("/api/count?pixel_size_um=-1", content=encoded(sim_image))
    assert bad.status_code == 422 and "detail" in bad.json()


def test_a_pixel_size_that_enlarges_past_the_limits_is_refused(counter):
    """?pixel_size_um= enlarges the image to the model's scale before it is segmented: ×10 makes a 128 px upload
    1280 px a side, and 1e308 overflows the scale itself. Neither may cost a huge image or a 500."""
    client = TestClient(create_app(api(counter, limits=UploadLimits(max_pixels=100_000))), raise_server_exceptions=False)
    image = encoded(discs(size=128))
    assert client.post("/api/count?pixel_size_um=0.8", content=image).status_code == 200  # ×2: 65 536 px
    for value in ("4", "1e308"):
        answer = client.post(f"/api/count?pixel_size_um={value}", content=image)
        assert answer.status_code == 413 and "pixel_size_um" in answer.json()["detail"], (value, answer.text)
    for value in ("inf", "nan"):
        answer = client.post(f"/api/count?pixel_size_um={value}", content=image)
        assert answer.status_code == 422 and answer.json()["detail"], (value, answer.text)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def one_bit_png(width: int, height: int) -> bytes:
    """A real, complete 1-bit grey PNG of zeros: 20 000² px (400 MP) is ~50 kB — a decompression bomb."""
    row = b"\0" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def gif() -> bytes:
    return (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00"
            b"\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")


def bad_bodies():
    image = discs(size=256)
    png, jpeg = encoded(image), encoded(image, ".jpg")
    return {
        "empty": (b"", 400),
        "text": (b"frame,rbc\n1,2\n" * 20, 415),
        "random bytes": (np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(), 415),
        "truncated PNG": (png[: len(png) // 2], 400),
        "PNG without its end": (png[:-12], 400),
        "truncated JPEG": (jpeg[: len(jpeg) // 2], 400),
        "JPEG without its end": (jpeg[:-2], 400),
        "PNG header only": (png[:33], 400),
        "decompression bomb 20000x20000": (one_bit_png(20_000, 20_000), 413),
        "49 MP, under Pillow's bomb size": (one_bit_png(7_000, 7_000), 413),
        "100000 px wide PNG": (one_bit_png(100_000, 4), 413),
        "GIF": (gif(), 415),
    }


@pytest.mark.parametrize("name", list(bad_bodies()))
def test_bad_bodies_get_a_4xx_with_a_json_reason(counter, name):
    body, status = bad_bodies()[name]
    client = TestClient(create_app(api(counter)), raise_server_exceptions=True)
    for answer in (client.post("/api/count", content=body, headers={"content-type": "application/octet-stream"}),
                   client.post("/api/count", files={"image": ("x.png", body, "image/png")})):
        assert answer.status_code == status, (name, answer.status_code, answer.text)
        assert answer.headers["content-type"] == "application/json" and answer.json()["detail"]


def test_a_float_tiff_is_told_apart_from_a_damaged_header(counter):
    """A valid floating-point TIFF (which csc-run refuses too) was answered "truncated or damaged TIFF header"."""
    import tifffile

    body = io.BytesIO()
    tifffile.imwrite(body, np.random.default_rng(0).random((64, 64)))  # float64
    answer = TestClient(create_app(api(counter))).post("/api/count", content=body.getvalue())
    assert answer.status_code == 400 and "floating point" in answer.json()["detail"], answer.text


def test_a_body_that_trickles_in_is_refused_with_408():
    """Eight senders trickling bytes held every upload slot (503 for everyone else) as long as they kept sending."""
    from starlette.requests import Request

    from runtime.serve.app import _read_upload

    body = encoded(discs())
    parts = [body[i:i + 100] for i in range(0, len(body), 100)]  # 0.05 s apart
    assert len(parts) >= 10

    async def receive():
        await asyncio.sleep(0.05)
        chunk = parts.pop(0) if parts else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(parts)}

    request = Request({"type": "http", "method": "POST", "headers": []}, receive)
    with pytest.raises(UploadRejected) as refused:
        asyncio.run(_read_upload(request, UploadLimits(read_seconds=0.2)))
    assert refused.value.status == 408 and "did not arrive within 0.2 s" in refused.value.reason
    parts[:] = [body[:200], body[200:400]]  # two chunks arrive in time
    assert asyncio.run(_read_upload(Request({"type": "http", "method": "POST", "headers": []}, receive),
                                    UploadLimits(read_seconds=5)))[0] == body[:400]


def test_body_size_is_capped_declared_or_chunked(counter):
    client = TestClient(create_app(api(counter, limits=UploadLimits(max_bytes=10_000))))
    big = encoded(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8))
    assert len(big) > 10_000
    declared = client.post("/api/count", content=big)
    chunked = client.post("/api/count", content=(big[i : i + 4096] for i in range(0, len(big), 4096)))
    form = client.post("/api/count", files={"image": ("big.png", big, "image/png")})
    for answer in (declared, chunked, form):
        assert answer.status_code == 413 and "limit" in answer.json()["detail"], answer.text
    ok = client.post("/api/count", content=encoded(discs(size=64)))
    assert ok.status_code == 200


def test_multipart_counts_the_part_named_image_beside_other_files(counter):
    """A form with a metadata file before the image had its first file part counted (a 415 for a JSON file)."""
    client = TestClient(create_app(api(counter)))
    image = ("cells.png", encoded(discs()), "image/png")
    meta = ("meta.json", b'{"slide": 1}', "application/json")
    answer = client.post("/api/count", files=[("meta", meta), ("image", image)])
    assert answer.status_code == 200 and answer.json()["counts"]["rbc"] > 0, answer.text
    only = client.post("/api/count", files={"picture": image})  # one file part, whatever its name
    assert only.status_code == 200, only.text
    two = client.post("/api/count", files=[("meta", meta), ("picture", image)])
    assert two.status_code == 400 and "none named image" in two.json()["detail"]


def test_multipart_without_a_file_and_a_busy_server(counter):
    client = TestClient(create_app(api(counter)))
    answer = client.post("/api/count", files={"note": (None, "no image")})
    assert answer.status_code == 400 and "file" in answer.json()["detail"]
    busy = TestClient(create_app(api(counter, limits=UploadLimits(max_pending=0))))
    answer = busy.post("/api/count", content=encoded(discs()))
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"


# -- the live run's endpoints ---------------------------------------------------------------------------------
def test_live_endpoints_after_a_run(finished_run, counter):
    pipeline, hub, summary = finished_run
    client = TestClient(create_app(api(counter, live=LiveRun(pipeline, hub, pipeline.options.save_csv,
                                                             pipeline.options.save_cells))))
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text and "stream.mjpg" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere: boxes are offline
    counts = client.get("/api/counts").json()
    assert set(counts) == {"frame", "source", "counts", "fps", "pixel_size_um"}
    assert counts["frame"] == 39 and counts["source"] == "frame39" and set(counts["counts"]) == {"rbc", "macrophage"}
    info = client.get("/api/info").json()
    assert [c["name"] for c in info["classes"]] == ["rbc", "macrophage"] and info["source"] == "frames"
    health = client.get("/healthz").json()
    assert health["frames"] == 40 and 0 <= health["seconds_since_frame"] < 60
    snap = client.get("/snapshot.jpg")
    assert snap.status_code == 200 and snap.headers["content-type"] == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(snap.content, np.uint8), cv2.IMREAD_COLOR).shape == (128, 128, 3)
    rows = list(csv.reader(io.StringIO(client.get("/counts.csv").text)))
    assert rows[0] == ["frame", "source", "rbc", "macrophage", "fps", "pixel_size_um"] and len(rows) == 41
    cells = client.get("/cells.csv")
    assert cells.headers["content-disposition"].startswith("attachment")
    assert cells.text.splitlines()[0] == ",".join(CELL_COLUMNS) and len(cells.text.splitlines()) > 40
    history = client.get("/api/history").json()
    assert history["interval_s"] == 1 and all(set(p["counts"]) == {"rbc", "macrophage"} for p in history["points"])
    schema = client.get("/openapi.json").json()
    assert {"/api/count", "/api/counts", "/api/events", "/metrics", "/healthz", "/stream.mjpg"} <= set(schema["paths"])
    assert "multipart/form-data" in schema["paths"]["/api/count"]["post"]["requestBody"]["content"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text.lower(), "the docs page must work offline"
    for asset in re.findall(r'(/docs-assets/[\w.-]+)', docs.text):
        assert client.get(asset).status_code == 200, asset
    assert "/docs-assets/swagger-ui-bundle.js" in docs.text


def test_csv_download_stops_at_the_last_complete_row(finished_run, counter):
    pipeline, hub, _ = finished_run
    with open(pipeline.options.save_csv, "a") as f:
        f.write("40,frame40,3")  # a row being written
    client = TestClient(create_app(api(counter, live=LiveRun(pipeline, hub, pipeline.options.save_csv,
                                                             pipeline.options.save_cells))))
    text = client.get("/counts.csv").text
    assert text.endswith("\n") and "frame40" not in text and len(text.splitlines()) == 41


def test_a_csv_trimmed_during_its_download_is_sent_as_it_was(tmp_path):
    """The page's temporary CSVs are trimmed (replaced by a new, shorter file) while the run goes on: a large
    download that has begun keeps the file it measured, its declared length and its rows."""
    path = tmp_path / "counts.csv"
    writer = CountsCsvWriter(path, NAMES, max_bytes=200_000)
    frame = 0
    while not path.exists() or path.stat().st_size < 150_000:  # the file is made by its first row
        writer.write(frame, f"frame{frame}", {"rbc": 40, "macrophage": 3}, 50.0, 0.4)
        frame += 1
    before = path.read_bytes()
    answer = _csv_so_far(path, "counts.csv")
    assert isinstance(answer, StreamingResponse) and int(answer.headers["content-length"]) == len(before)
    while path.stat().st_size >= len(before):  # the run goes on, and trims the file
        writer.write(frame, f"frame{frame}", {"rbc": 40, "macrophage": 3}, 50.0, 0.4)
        frame += 1
    writer.close()

    async def body():
        return b"".join([chunk async for chunk in answer.body_iterator])

    assert asyncio.run(body()) == before


def parse_metrics(text):
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value.replace("+Inf", "inf"))
    return samples


def test_metrics_in_prometheus_text_format(finished_run, counter):
    pipeline, hub, summary = finished_run
    client = TestClient(create_app(api(counter, live=LiveRun(pipeline, hub, pipeline.options.save_csv,
                                                             pipeline.options.save_cells))))
    client.post("/api/count", content=b"not an image")
    answer = client.get("/metrics")
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    m = parse_metrics(answer.text)
    last = hub.state()["counts"]
    assert m["csc_frames_total"] == 40 and m["csc_dropped_frames_total"] == 0
    assert m['csc_cells{class="rbc"}'] == last["rbc"] and m['csc_cells{class="macrophage"}'] == last["macrophage"]
    assert m['csc_cells_counted_total{class="rbc"}'] == summary["counts"]["rbc"]["total"]
    assert m["csc_fps"] > 0 and m["csc_pixel_size_um"] == 0.4 and m['csc_uploads_total{code="415"}'] == 1
    for stage in ("capture", "infer", "post"):
        buckets = [(k, v) for k, v in m.items() if k.startswith(f'csc_stage_latency_seconds_bucket{{stage="{stage}"')]
        values = [v for _, v in buckets]
        assert len(buckets) > 20 and values == sorted(values)  # cumulative
        assert values[-1] == m[f'csc_stage_latency_seconds_count{{stage="{stage}"}}'] == 40
    assert "# TYPE csc_stage_latency_seconds histogram" in answer.text


def test_counts_before_the_first_frame_are_503(counter, tmp_path):
    """The CSVs too: the run makes them at its first counted frame, and before it the files at --save-csv and
    --save-cells were an earlier run's, offered as this run's rows."""
    pipeline = Pipeline(MemorySource([discs()]), DarkIsCells())
    hub = FrameHub(NAMES, pipeline.segmenter.to_frame)
    earlier = tmp_path / "counts.csv"
    earlier.write_text("frame,source,rbc,macrophage,fps,pixel_size_um\n0,earlier.png,5,1,,0.4\n")
    try:
        client = TestClient(create_app(api(counter, live=LiveRun(pipeline, hub, earlier, tmp_path / "none.csv"))))
        for path in ("/api/counts", "/snapshot.jpg", "/counts.csv", "/cells.csv"):
            answer = client.get(path)
            assert answer.status_code == 503 and answer.json()["detail"].startswith("no frame")
            assert answer.headers["retry-after"] == "1"
        assert client.get("/healthz").json()["frames"] == 0
        assert client.get("/healthz").json()["seconds_since_frame"] is None
    finally:
        hub.close()


# -- the token --------------------------------------------------------------------------------------------------
def test_token_rules():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20") and not is_loopback("box.lab")
    assert choose_token("127.0.0.1", None, {}).token is None
    made = choose_token("0.0.0.0", None, {})
    assert made.generated and len(made.token) >= 24
    assert choose_token("0.0.0.0", None, {"CSC_TOKEN": TOKEN}) == choose_token("0.0.0.0", TOKEN, {})
    assert choose_token("127.0.0.1", None, {"CSC_TOKEN": TOKEN}).token == TOKEN  # asked for: required on loopback too
    for bad in ("short", "has space in it", "semi;colon-token"):
        with pytest.raises(CscError, match="token"):
            choose_token("0.0.0.0", bad, {})


def test_requests_without_the_token_get_401(counter):
    client = TestClient(create_app(api(counter, token=TOKEN)), follow_redirects=False)
    for path in ("/", "/metrics", "/openapi.json", "/docs"):
        answer = client.get(path)
        assert answer.status_code == 401 and answer.json()["detail"] and "bearer" in answer.headers["www-authenticate"].lower()
    assert client.post("/api/count", content=encoded(discs())).status_code == 401
    assert client.get("/metrics", headers={"authorization": "Bearer wrong-token-123"}).status_code == 401
    assert client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.post("/api/count", content=encoded(discs()), headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/healthz").status_code == 200  # liveness probes carry no secret
    # a browser: ?token= once sets a cookie and sends it to the bare address
    answer = client.get(f"/?token={TOKEN}")
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    assert "HttpOnly" in answer.headers["set-cookie"] and "SameSite=Lax" in answer.headers["set-cookie"]
    assert answer.headers["set-cookie"].startswith(f"csc_token_80={TOKEN};")  # the test client's port
    client.cookies.set("csc_token_80", TOKEN)
    assert client.get("/metrics").status_code == 200


def test_two_servers_on_one_box_keep_their_own_token_cookies(counter):
    """Browsers keep cookies by host, not by port: with one cookie name, opening a second server's ?token= replaced
    the first's cookie, and the first page got 401."""
    servers = [(bind("127.0.0.1", 0), token) for token in (TOKEN, TOKEN + "-other")]
    with BackgroundServer(create_app(api(counter, token=servers[0][1])), "127.0.0.1", servers[0][0]) as first, \
            BackgroundServer(create_app(api(counter, token=servers[1][1])), "127.0.0.1", servers[1][0]) as second:
        jar = httpx.Cookies()
        for server, token in ((first, servers[0][1]), (second, servers[1][1])):
            with httpx.Client(base_url=server.url, timeout=10) as http:
                set_cookie = http.get(f"/?token={token}").headers["set-cookie"]
            name, value = set_cookie.split(";")[0].split("=", 1)
            jar.set(name, value)  # as a browser keeps them: by host, every port's name side by side
        for server in (first, second):
            with httpx.Client(base_url=server.url, timeout=10, cookies=jar) as http:
                assert http.get("/metrics").status_code == 200, server.port


def test_the_token_never_reaches_the_logs(counter, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    sock = bind("127.0.0.1", 0)
    with BackgroundServer(create_app(api(counter, token=TOKEN)), "127.0.0.1", sock) as server:
        def get(path, cookies=None, **kw):  # a fresh client each time: no cookie carried over
            with httpx.Client(base_url=server.url, timeout=10, cookies=cookies) as http:
                return http.get(path, **kw).status_code

        assert get(f"/?token={TOKEN}") == 303
        assert get(f"/metrics?token={TOKEN}") == 200
        assert get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}) == 200
        mine = f"csc_token_{server.port}"
        assert get(f"/metrics?token={TOKEN}x") == 401 and get("/metrics", cookies={mine: TOKEN + "x"}) == 401
        assert get("/metrics", cookies={mine: TOKEN}) == 200
        with httpx.Client(base_url=server.url, timeout=10) as http:
            assert http.post(f"/api/count?token={TOKEN}", content=b"junk").status_code == 415
    out, err = capfd.readouterr()
    # the server's records only: httpx, the test's client, logs each URL it requests
    server_logs = [r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert TOKEN not in "\n".join(server_logs) + out + err


# -- the server and its streams ----------------------------------------------------------------------------------
def test_address_parsing_and_a_port_in_use():
    assert parse_address("8080") == ("127.0.0.1", 8080)
    assert parse_address("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_address("[::1]:9000") == ("::1", 9000)
    with pytest.raises(CscError, match="port"):
        parse_address("127.0.0.1:http")
    with pytest.raises(CscError) as elsewhere:
        bind("192.0.2.1", 0)  # TEST-NET-1: no machine's own address
    assert "address of this machine" in elsewhere.value.fix and "port" not in elsewhere.value.fix
    taken = bind("127.0.0.1", 0)
    taken.listen()
    try:
        with pytest.raises(CscError, match="cannot serve"):
            bind("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()


def test_stopping_with_an_upload_in_flight_logs_no_traceback(counter):
    """Ctrl-C while a client is still sending its image: uvicorn cancels the request after its grace period, and
    says so in one line, without the traceback of the cancelled request."""
    records = []
    catcher = logging.Handler(logging.DEBUG)
    catcher.emit = records.append
    log = logging.getLogger("uvicorn.error")
    server = BackgroundServer(create_app(api(counter)), "127.0.0.1", bind("127.0.0.1", 0))
    log.addHandler(catcher)  # after uvicorn's configuration, which drops the handlers there
    try:
        with server:
            slow = socket.create_connection(("127.0.0.1", server.port))
            slow.sendall(b"POST /api/count HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n\x89PNG")
            time.sleep(0.3)  # the request is read, its body awaited
        slow.close()
    finally:
        log.removeHandler(catcher)
    assert any("graceful shutdown" in r.getMessage() for r in records), [r.getMessage() for r in records]
    assert not [r for r in records if r.exc_info], [r.getMessage() for r in records]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="RSS is read from /proc")
def test_streams_send_the_newest_frame_and_a_stalled_viewer_holds_nothing(counter):
    """A live run at full speed; one viewer reads the MJPEG stream, one never reads, one follows the events. The
    reader sees frames advance, the stalled one costs no memory, and the counting is not held up."""
    rng = np.random.default_rng(1)
    noisy = [rng.integers(0, 256, (512, 512, 3), dtype=np.uint8) for _ in range(3)]  # ~800 kB JPEGs
    source = EndlessFrames(noisy)
    pipeline = Pipeline(source, DarkIsCells(512), options=RunOptions(calibrate=False, host_budget=False))
    hub = FrameHub(NAMES, pipeline.segmenter.to_frame, ViewSettings(stream_fps=60))
    pipeline.observer = hub.observe
    run = threading.Thread(target=pipeline.run)
    sock = bind("127.0.0.1", 0)
    app = create_app(api(counter, live=LiveRun(pipeline, hub, "none.csv", "none.csv")))
    with BackgroundServer(app, "127.0.0.1", sock) as server:
        run.start()
        stalled = socket.create_connection(("127.0.0.1", server.port))
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(1.0)
        before, frames_before = rss_mb(), hub.frames
        seen = []
        with httpx.Client(base_url=server.url, timeout=10) as http:
            with http.stream("GET", "/stream.mjpg") as stream:
                assert stream.headers["content-type"].startswith("multipart/x-mixed-replace")
                buffer = b""
                for chunk in stream.iter_bytes():
                    buffer += chunk
                    while b"\r\n\r\n" in buffer:
                        head, rest = buffer.split(b"\r\n\r\n", 1)
                        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                        if len(rest) < length + 2:
                            break
                        seen.append(rest[:length])
                        buffer = rest[length + 2 :]
                    if len(seen) >= 30:
                        break
            assert hub.viewers >= 1
            with http.stream("GET", "/api/events") as events:
                data = []
                for line in events.iter_lines():
                    if line.startswith("data: "):
                        data.append(line)
                    if len(data) >= 5:
                        break
        time.sleep(2.0)  # the stalled viewer sits through ~100 more frames drawn (80 MB, were they queued)
        grown = rss_mb() - before
        counted = hub.frames - frames_before
        source.stop.set()
        run.join(10)
        stalled.close()
    hub.close()
    assert len(seen) == 30 and all(cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) is not None for j in seen)
    assert len({hash(j) for j in seen}) > 1  # the picture changes
    frames = [int(line.split('"frame": ')[1].split(",")[0]) for line in data]
    assert frames == sorted(frames) and len(set(frames)) == 5
    # while the stalled viewer sat on ~800 kB frames at up to 60 a second, memory stayed flat and counting went on
    assert counted > 30 and grown < 40, (counted, grown)
    deadline = time.monotonic() + 5
    while hub.viewers and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hub.viewers == 0


# -- the extra ---------------------------------------------------------------------------------------------------
def test_a_missing_extra_says_how_to_install_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    with pytest.raises(CscError, match=r"pip install 'auto-csc\[serve\]'"):
        require_serve()


def test_runtime_imports_without_the_serve_stack():
    code = ("import sys, runtime, runtime.pipeline.stream, runtime.cli.run, runtime.serve, runtime.serve.live;"
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
