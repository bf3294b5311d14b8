"""Serve load: does the web view keep its promise that viewers and uploads never slow the counting?

Runs the real command line, `csc-run --source demo --no-show --serve 127.0.0.1:PORT --save-csv CSV`, in a child
process, and measures its counting rate (frames added to the CSV per second) in three windows of --seconds each:
idle (served, nobody connected), under load, and idle again. The load, from this process on loopback only, bounded
in count and time: 20 viewers reading /stream.mjpg and 10 uploads a second to POST /api/count (a 512 × 512 PNG of
the simulated microscope), sent on a fixed schedule whatever the answers take. Also measured: the same command
without --serve (the cost of serving while nobody watches), upload latency percentiles and status codes, frames
each viewer received, and the child's resident memory at the start and end of the load (and every few seconds).

Target: the counting FPS under load within 10 % of the idle FPS (the mean of the two idle windows).

The load generator runs at --client-nice (default 10, the niceness of the server's own threads): on a real box the
viewers and the lab's software run on other machines, and here they share its cores; at 19 it is starved of the CPU
the counting fills and sends almost nothing. Run it on a quiet machine:
    python -m benchmarks.speed.serve_load --seconds 60 --out benchmarks/results/serve_load.json
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import httpx
import numpy as np

from benchmarks.publish import machine, publish
from benchmarks.speed.soak import FrameCounter, rss_mb

VIEWERS = 20
UPLOADS_PER_SECOND = 10.0
FPS_DROP_TARGET = 0.10
START_TIMEOUT = 90.0
RAMP_S = 3.0  # viewers connected and uploads flowing before the load window opens
RUN = [sys.executable, "-c", "from runtime.cli.run import main; main()", "--source", "demo", "--no-show"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def upload_image() -> bytes:
    from runtime.data.simulator import SimConfig, SimulatedMicroscope

    return cv2.imencode(".png", SimulatedMicroscope(SimConfig(height=512, width=512), seed=21).frame(0).image)[1].tobytes()


class CpuShares:
    """Where the machine's CPU time went over a window (Linux /proc): the run, this load generator, and every other
    process — on a shared machine the last says how far the window's FPS can be trusted."""

    def __init__(self, pid: int):
        self.pid = pid
        self.start = self._read()

    def _read(self) -> tuple[float, float, float, float]:
        ticks = os.sysconf("SC_CLK_TCK")
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
        child = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        own = os.times()
        return (time.perf_counter(), busy / ticks, (int(child[11]) + int(child[12])) / ticks, own.user + own.system)

    def shares(self) -> dict:
        """Cores' worth of CPU used by each over the window."""
        end = self._read()
        wall = end[0] - self.start[0]
        machine, run, generator = ((end[i] - self.start[i]) / wall for i in (1, 2, 3))
        return {"machine_cores_busy": round(machine, 2), "run_cores": round(run, 2),
                "load_generator_cores": round(generator, 2), "other_processes_cores": round(machine - run - generator, 2)}


def counting_fps(counter: FrameCounter, seconds: float, pid: int) -> dict:
    """Frames per second the run adds to its CSV over the next ``seconds``, and where the CPU went meanwhile."""
    cpu = CpuShares(pid)
    f0, t0 = counter.frames(), time.perf_counter()
    time.sleep(seconds)
    f1, t1 = counter.frames(), time.perf_counter()
    return {"frames": f1 - f0, "seconds": round(t1 - t0, 2), "fps": round((f1 - f0) / (t1 - t0), 2), "cpu": cpu.shares()}


def wait_for_frames(counter: FrameCounter, child: subprocess.Popen, warmup: float) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while counter.frames() < 5:
        if child.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"csc-run did not start (exit {child.poll()})")
        time.sleep(0.2)
    time.sleep(warmup)  # past calibration and the first allocations


def stop(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


async def viewer(port: int, stop_at: float, received: list[int], index: int) -> None:
    """An MJPEG client that reads everything and counts the frames (boundaries) it gets."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /stream.mjpg HTTP/1.1\r\nHost: bench\r\n\r\n")
    await writer.drain()
    tail = b""
    try:
        while time.perf_counter() < stop_at:
            try:
                chunk = await asyncio.wait_for(reader.read(1 << 16), timeout=max(0.01, stop_at - time.perf_counter()))
            except asyncio.TimeoutError:
                break
            if not chunk:
                break
            data = tail + chunk
            received[index] += data.count(b"--frame\r\n")
            tail = data[-9:]
    finally:
        writer.close()


async def uploads(port: int, body: bytes, stop_at: float, results: list[tuple[float, float, int]]) -> None:
    """POST /api/count UPLOADS_PER_SECOND times a second until ``stop_at``, each on its own schedule slot."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                 limits=httpx.Limits(max_connections=64)) as client:
        async def one(sent_at: float) -> None:
            try:
                answer = await client.post("/api/count", content=body, headers={"content-type": "image/png"})
                status = answer.status_code
            except httpx.HTTPError:
                status = 0
            results.append((sent_at, time.perf_counter() - sent_at, status))

        tasks, start, i = [], time.perf_counter(), 0
        while True:
            slot = start + i / UPLOADS_PER_SECOND
            if slot >= stop_at:
                break
            await asyncio.sleep(max(0.0, slot - time.perf_counter()))
            tasks.append(asyncio.create_task(one(time.perf_counter())))
            i += 1
        await asyncio.gather(*tasks)


async def load(port: int, seconds: float, body: bytes, pid: int, rss_samples: list) -> dict:
    start = time.perf_counter()
    stop_at = start + RAMP_S + seconds
    received = [0] * VIEWERS
    results: list[tuple[float, float, int]] = []

    async def sample_rss() -> None:
        while time.perf_counter() < stop_at:
            rss_samples.append((round(time.perf_counter() - start, 1), round(rss_mb(pid) or 0.0, 1)))
            await asyncio.sleep(5.0)

    await asyncio.gather(*(viewer(port, stop_at, received, i) for i in range(VIEWERS)),
                         uploads(port, body, stop_at, results), sample_rss())
    return {"received": received, "uploads": results, "start": start}


def serve_load(seconds: float = 60.0, warmup: float = 10.0, backend: str = "auto", client_nice: int = 10) -> dict:
    body = upload_image()
    result: dict = {"machine": f"{machine()}, no GPU", "load_average_at_start": load_average(),
                    "settings": {"seconds_per_window": seconds, "warmup_s": warmup, "viewers": VIEWERS,
                                 "uploads_per_second": UPLOADS_PER_SECOND, "upload_bytes": len(body),
                                 "upload_image": "512 x 512 PNG, simulated microscope", "backend": backend,
                                 "load_generator": f"this process, niced to {client_nice}, on loopback"}}
    with tempfile.TemporaryDirectory() as tmp:
        # the command without --serve: what serving costs while nobody watches
        csv = Path(tmp) / "plain.csv"
        child = subprocess.Popen([*RUN, "--backend", backend, "--save-csv", str(csv)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        try:
            counter = FrameCounter(csv)
            wait_for_frames(counter, child, warmup)
            result["without_serve"] = counting_fps(counter, seconds, child.pid)
        finally:
            stop(child)

        port = free_port()
        csv = Path(tmp) / "served.csv"
        child = subprocess.Popen([*RUN, "--backend", backend, "--save-csv", str(csv), "--serve", f"127.0.0.1:{port}"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            counter = FrameCounter(csv)
            wait_for_frames(counter, child, warmup)
            # one upload first: the uploads' runner opens on the first (a second copy of the model, ~40 MB), which
            # is not growth under load
            first = httpx.post(f"http://127.0.0.1:{port}/api/count", content=body, timeout=120)
            result["first_upload"] = {"status": first.status_code, "seconds": round(first.elapsed.total_seconds(), 2)}
            time.sleep(2.0)
            result["idle_before"] = counting_fps(counter, seconds, child.pid)
            rss_samples: list = []
            rss_start = rss_mb(child.pid)
            f0 = None
            loop_result: dict = {}

            async def measured() -> None:
                nonlocal f0
                task = asyncio.create_task(load(port, seconds, body, child.pid, rss_samples))
                await asyncio.sleep(RAMP_S)
                f0 = (counter.frames(), time.perf_counter(), CpuShares(child.pid))
                loop_result.update(await task)

            os.nice(client_nice)  # see the module: the clients stand in for other machines (children keep theirs)
            asyncio.run(measured())
            f1 = (counter.frames(), time.perf_counter())
            rss_end = rss_mb(child.pid)
            result["under_load"] = {"frames": f1[0] - f0[0], "seconds": round(f1[1] - f0[1], 2),
                                    "fps": round((f1[0] - f0[0]) / (f1[1] - f0[1]), 2), "cpu": f0[2].shares()}
            time.sleep(2.0)  # the last answers and closed connections settle
            result["idle_after"] = counting_fps(counter, seconds, child.pid)
            result["rss_mb"] = {"load_start": round(rss_start, 1), "load_end": round(rss_end, 1),
                                "change": round(rss_end - rss_start, 1),
                                "samples_s_mb": [list(s) for s in rss_samples]}
        finally:
            stop(child)
    idle = (result["idle_before"]["fps"] + result["idle_after"]["fps"]) / 2
    drop = 1 - result["under_load"]["fps"] / idle
    uploads_done = loop_result["uploads"]
    statuses: dict[str, int] = {}
    for _, _, status in uploads_done:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    ok = np.array([latency for _, latency, status in uploads_done if status == 200]) * 1e3
    window = seconds + RAMP_S
    result["fps_idle_mean"] = round(idle, 2)
    result["fps_drop_under_load"] = round(drop, 4)
    result["serving_idle_cost"] = round(1 - idle / result["without_serve"]["fps"], 4)
    result["target"] = {"fps_drop_at_most": FPS_DROP_TARGET, "met": bool(drop <= FPS_DROP_TARGET)}
    result["uploads"] = {"sent": len(uploads_done), "per_second": round(len(uploads_done) / window, 2),
                         "status_counts": statuses,
                         "latency_ms_ok": {q: round(float(np.percentile(ok, p)), 1) if len(ok) else None
                                           for q, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))}}
    received = loop_result["received"]
    result["viewers"] = {"count": VIEWERS, "frames_received_mean": round(float(np.mean(received)), 1),
                         "frames_received_min": int(min(received)),
                         "fps_per_viewer_mean": round(float(np.mean(received)) / window, 2)}
    result["load_average_at_end"] = load_average()
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each measured window (default 60)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds after the first frames before measuring")
    parser.add_argument("--backend", default="auto", help="csc-run's --backend (auto, ort, openvino, trt)")
    parser.add_argument("--client-nice", type=int, default=10, help="niceness of the load generator (default 10)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    publish(serve_load(args.seconds, args.warmup, args.backend, args.client_nice), args.out)
