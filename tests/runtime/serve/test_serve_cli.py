"""`csc-run --source demo --serve` and `csc-serve` as scripts outside the project call them: the endpoints while
counting, hostile uploads that leave the counting running, Ctrl-C, a port in use, the token printed once."""
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'auto-csc[serve]'")
import httpx  # noqa: E402

RUN = [sys.executable, "-c", "from runtime.cli.run import main; main()"]
SERVE = [sys.executable, "-c", "from runtime.cli.serve import main; main()"]
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, path: str, process: subprocess.Popen, headers=None) -> httpx.Response:
    """The first 200 answer to ``path``, while ``process`` runs."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode}: {process.stdout.read()}")
        try:
            answer = httpx.get(url + path, headers=headers, timeout=5)
            if answer.status_code == 200:
                return answer
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{path} never answered 200")


def stop(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGINT)  # Ctrl-C
    out, _ = process.communicate(timeout=30)
    return process.returncode, out


@pytest.fixture(scope="module")
def demo_run():
    port = free_port()
    process = subprocess.Popen([*RUN, "--source", "demo", "--serve", f"127.0.0.1:{port}", "--no-show"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "COLUMNS": "200"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url, "/api/counts", process)
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares this size, with a few compressed rows of zeros after it."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * (1 + width // 8) * 4)) + chunk(b"IEND", b""))


def frame_now(url: str) -> int:
    return httpx.get(url + "/api/counts", timeout=5).json()["frame"]


def test_demo_run_serves_counts_that_advance(demo_run):
    url, _ = demo_run
    first = httpx.get(url + "/api/counts", timeout=5).json()
    assert set(first) == {"frame", "source", "counts", "fps", "pixel_size_um"}
    assert first["source"] == "demo" and set(first["counts"]) == {"rbc", "macrophage"} and first["pixel_size_um"] > 0
    time.sleep(1.0)
    assert frame_now(url) > first["frame"]
    assert httpx.get(url + "/healthz", timeout=5).json()["status"] == "ok"
    assert "csc_frames_total" in httpx.get(url + "/metrics", timeout=5).text
    snapshot = httpx.get(url + "/snapshot.jpg", timeout=5)
    assert cv2.imdecode(np.frombuffer(snapshot.content, np.uint8), cv2.IMREAD_COLOR).shape == (512, 512, 3)
    rows = httpx.get(url + "/counts.csv", timeout=5).text.splitlines()
    assert rows[0] == "frame,source,rbc,macrophage,fps,pixel_size_um" and len(rows) > 5


def test_hostile_uploads_leave_the_counting_running(demo_run):
    url, process = demo_run
    bomb = png_declaring(100_000, 100_000)
    image = httpx.get(url + "/snapshot.jpg", timeout=5).content
    for body, status in ((bomb, 413), (image[: len(image) // 3], 400), (b"hello", 415), (b"", 400)):
        answer = httpx.post(url + "/api/count", content=body, timeout=30)
        assert answer.status_code == status and answer.json()["detail"], answer.text
    good = httpx.post(url + "/api/count", files={"image": ("frame.jpg", image, "image/jpeg")}, timeout=60)
    assert good.status_code == 200 and good.json()["counts"]["rbc"] > 0 and good.json()["cells"][0]["source"] == "frame.jpg"
    before = frame_now(url)
    time.sleep(1.0)
    assert frame_now(url) > before and process.poll() is None


def test_ctrl_c_stops_counting_and_serving(demo_run):
    url, process = demo_run
    code, out = stop(process)
    assert code == 0, out
    assert "web view: http://127.0.0.1:" in out and "interrupted" in out and "Traceback" not in out
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/healthz", timeout=2)


def test_a_port_in_use_is_one_line_before_any_work():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run([*RUN, "--source", "demo", "--serve", str(port), "--no-show", "--max-frames", "5"],
                             capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "cannot serve on 127.0.0.1" in run.stderr and "Traceback" not in run.stderr
    bad = subprocess.run([*RUN, "--source", "demo", "--token", "abcdefgh1234", "--no-show", "--max-frames", "1"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--token without --serve" in bad.stderr


def test_csc_serve_refuses_an_infinite_upload_limit_in_one_line():
    bad = subprocess.run([*SERVE, "--port", "0", "--max-upload-mb", "inf"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--max-upload-mb" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


def test_csc_serve_off_loopback_prints_a_token_once_and_requires_it():
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "CSC_TOKEN"}
    process = subprocess.Popen([*SERVE, "--host", "0.0.0.0", "--port", str(port)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env={**env, "COLUMNS": "200"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url, "/healthz", process)  # open: a liveness probe carries no secret
        image = cv2.imencode(".png", np.full((64, 64, 3), 200, np.uint8))[1].tobytes()
        assert httpx.post(url + "/api/count", content=image, timeout=30).status_code == 401
        assert httpx.get(url + "/metrics", timeout=5).status_code == 401
        code, out = stop(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    tokens = re.findall(r"token \(made for this server, printed once\): (\S+)", out)
    assert code == 0 and len(tokens) == 1 and out.count(tokens[0]) == 1, out


def test_csc_serve_counts_with_the_given_token():
    port = free_port()
    token = "lab-token-for-tests-42"
    process = subprocess.Popen([*SERVE, "--host", "0.0.0.0", "--port", str(port)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env={**os.environ, "CSC_TOKEN": token})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url, "/healthz", process)
        image = cv2.imencode(".png", np.full((64, 64, 3), 200, np.uint8))[1].tobytes()
        answer = httpx.post(url + "/api/count", content=image, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert answer.status_code == 200 and answer.json()["counts"] == {"rbc": 0, "macrophage": 0}
        code, out = stop(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == 0 and token not in out
