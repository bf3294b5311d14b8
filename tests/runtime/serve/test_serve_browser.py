"""The live page in a real browser: headless Chromium (Debian's chromium and chromium-driver) through Selenium opens a
`csc-run --source demo --serve` run, sees the counts change and the video play, pauses, fits a phone's screen, takes
a screenshot that is not blank, and downloads the CSVs; and a token link opened from another site shows `csc-serve`'s
page.

Without Chromium the test is skipped, saying why, except under CI (the CI variable set), where `.ci/run` installs
it and a skip would hide a broken page.
"""
import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
RUN = [sys.executable, "-c", "from runtime.cli.run import main; main()"]


def _why_no_browser() -> str | None:
    try:
        import fastapi  # noqa: F401
        import selenium  # noqa: F401
    except ImportError as err:
        return f"{err.name} is not installed (pip install -e '.[dev]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists() and not shutil.which(path.name):
            return f"{path} not found (apt-get install chromium chromium-driver)"
    return None


@pytest.fixture(scope="module")
def browser_missing():
    reason = _why_no_browser()
    if reason and os.environ.get("CI"):
        pytest.fail(f"CI must test the page in a real browser: {reason}")
    if reason:
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo_page(browser_missing):
    import httpx

    port = free_port()
    process = subprocess.Popen([*RUN, "--source", "demo", "--serve", f"127.0.0.1:{port}", "--no-show"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "the run never served counts"
            try:
                if httpx.get(url + "api/counts", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def chromium(browser_missing, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium"))
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,900", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER if CHROMEDRIVER.exists() else shutil.which("chromedriver"))),
                              options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    yield driver
    driver.quit()


def until(condition, timeout=15.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not met within {timeout} s")


VIDEO_SAMPLE = """
const img = document.getElementById('video');
if (!img.complete || !img.naturalWidth) return null;
const c = document.createElement('canvas'); c.width = 96; c.height = 96;
const g = c.getContext('2d'); g.drawImage(img, 0, 0, 96, 96);
return Array.from(g.getImageData(0, 0, 96, 96).data);
"""


def test_the_page_shows_live_counts_video_chart_and_downloads(demo_page, chromium):
    driver = chromium
    driver.get(demo_page)
    text = lambda element_id: driver.find_element("id", element_id).text  # noqa: E731
    until(lambda: text("frame").isdigit(), what="a frame number on the page")
    assert [e.text for e in driver.find_elements("css selector", ".count .name")] == ["rbc", "macrophage"]

    # the counts change: frame numbers advance and the drifting slide's RBC count moves
    frames, rbc = set(), set()
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline and (len(frames) < 5 or len(rbc) < 2):
        frames.add(int(text("frame")))
        rbc.add(text("n0"))
        time.sleep(0.1)
    assert len(frames) >= 5 and len(rbc) >= 2, (frames, rbc)
    assert float(text("fps")) > 0 and "µm/px" in text("scale")

    # the video plays: the <img> holds a decoded frame, and its pixels change
    first = until(lambda: driver.execute_script(VIDEO_SAMPLE), what="a frame in the <img>")
    assert driver.execute_script("return document.getElementById('video').naturalWidth") == 512
    second = until(lambda: (s := driver.execute_script(VIDEO_SAMPLE)) and s != first and s, what="a new frame")
    assert np.abs(np.array(first, float) - np.array(second, float)).mean() > 0.5

    # the chart has been drawn on the canvas
    drawn = driver.execute_script("""
        const c = document.getElementById('chart'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n;""")
    assert drawn > 500

    # pause freezes the view, resume brings it back
    driver.find_element("id", "pause").click()
    assert text("pause") == "Resume" and text("status") == "paused"
    held = text("frame")
    time.sleep(1.0)
    assert text("frame") == held
    driver.find_element("id", "pause").click()
    until(lambda: text("frame") != held, what="frames after resume")

    # a screenshot with content (not a blank page); CSC_SCREENSHOT=PATH keeps it (the README's, after
    # CSC_SCREENSHOT_AFTER seconds of chart)
    driver.execute_script("window.scrollTo(0, 0)")
    if os.environ.get("CSC_SCREENSHOT"):
        time.sleep(float(os.environ.get("CSC_SCREENSHOT_AFTER", "0")))
    png = driver.get_screenshot_as_png()
    if os.environ.get("CSC_SCREENSHOT"):
        Path(os.environ["CSC_SCREENSHOT"]).write_bytes(png)
    shot = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert shot.shape[1] == 1280
    assert shot.std() > 20 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 1000

    # the CSVs of the run so far download
    for link, name, header in (("counts-csv", "auto-csc-counts.csv", "frame,source,rbc,macrophage,fps,pixel_size_um"),
                               ("cells-csv", "auto-csc-cells.csv", "frame,source,id,class,cx,cy")):
        driver.find_element("id", link).click()
        path = driver.downloads / name
        until(lambda: path.exists() and path.stat().st_size > 0
              and not any(p.suffix == ".crdownload" for p in driver.downloads.iterdir()), what=f"{name} downloaded")
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        assert ",".join(rows[0]).startswith(header) and len(rows) > 10
        assert all(len(row) == len(rows[0]) for row in rows)


def test_the_page_fits_a_phone(demo_page, chromium):
    driver = chromium
    driver.set_window_size(390, 844)
    try:
        driver.get(demo_page)
        until(lambda: driver.find_element("id", "frame").text.isdigit(), what="a frame number on the page")
        layout = driver.execute_script("""
            const r = (s) => document.querySelector(s).getBoundingClientRect();
            return {scroll: document.documentElement.scrollWidth, width: window.innerWidth,
                    video: r('.video'), counts: r('#counts'), chart: r('#chart')};""")
        assert layout["scroll"] <= layout["width"]  # nothing wider than the screen
        assert layout["counts"]["top"] >= layout["video"]["bottom"]  # one column: counts below the video
        assert layout["video"]["width"] <= layout["width"] and layout["chart"]["width"] <= layout["width"]
    finally:
        driver.set_window_size(1280, 900)


def test_the_token_link_opened_from_another_site_shows_the_page(browser_missing, chromium, tmp_path):
    """A person clicks http://box:PORT/?token=T in a chat or a wiki (another site): the cookie set on the way
    must come with the redirect's request. A SameSite=Strict cookie did not (a navigation begun on another site
    stays cross-site through its redirects): 401 until the page was reloaded."""
    import http.server
    import threading

    from selenium.webdriver.common.by import By

    port, token = free_port(), "link-token-123"
    api = subprocess.Popen([sys.executable, "-c", "from runtime.cli.serve import main; main()", "--host",
                            "127.0.0.1", "--port", str(port), "--token", token],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    (tmp_path / "chat.html").write_text(f'<a id="link" href="http://127.0.0.1:{port}/?token={token}">the box</a>')
    handler = lambda *args: http.server.SimpleHTTPRequestHandler(*args, directory=str(tmp_path))  # noqa: E731
    chat = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=chat.serve_forever, daemon=True).start()
    try:
        until(lambda: api.poll() is None and _answers(f"http://127.0.0.1:{port}/healthz"), 60, "csc-serve up")
        chromium.get(f"http://localhost:{chat.server_address[1]}/chat.html")  # localhost and 127.0.0.1: two sites
        chromium.find_element(By.ID, "link").click()
        until(lambda: chromium.current_url == f"http://127.0.0.1:{port}/", what="the redirect to the bare address")
        body = until(lambda: chromium.find_element(By.TAG_NAME, "body").text, what="a page")
        assert "counting API" in body and "needs its token" not in body, body
    finally:
        chat.shutdown()
        api.terminate()
        api.wait(timeout=20)


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False
