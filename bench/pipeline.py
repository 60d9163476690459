"""Pipeline benchmarks on the local profile, each against a baseline measured in the same run.

1. Upload: time for POST /upload of 10,000 rows x 3 URLs to answer 202, against the time for
   the same multipart body to be posted to a handler that only reads it, and the time to parse
   the CSV in-process. (The stack runs without a worker, so only the upload itself is timed.)
2. End to end: 60 photo-like 2400x1800 JPEGs (quality 90), served from loopback with 50 ms
   latency per request, from POST /upload to status "completed", divided by the ideal: the
   single-core time to decode and re-encode all 60 with plain Pillow, divided by the cores.
"""

from __future__ import annotations

import io
import os
import statistics
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from PIL import Image
from waitress.server import create_server

from local_profile import sample_images
from local_profile.image_host import ImageHost
from local_profile.recipes import (
    LOOPBACK_NETWORKS,
    PROJECT,
    Stack,
    create_buckets,
    new_webhook_secret,
)
from shared.config import Limits
from shared.domain.csv_table import parse_product_csv

HEADER = "Serial Number,Product Name,Input Image Urls\r\n"


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    baseline_name: str = ""
    baseline: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.value / self.baseline if self.baseline else None


def bench_env() -> dict[str, str]:
    return {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "TASK_BACKEND": "celery",
        "FETCH_ALLOWED_NETWORKS": LOOPBACK_NETWORKS,
        "WEBHOOK_SECRET": new_webhook_secret(),
        "UPLOADS_BUCKET": "bench-uploads",
        "OUTPUTS_BUCKET": "bench-outputs",
        "LOG_LEVEL": "WARNING",
    }


def start_stack(run_dir: Path, with_worker: bool) -> Stack:
    stack = Stack(run_dir, bench_env())
    try:
        stack.start_firestore()
        stack.start_storage()
        stack.start_redis()
        create_buckets(stack.env)
        if with_worker:
            stack.start_worker()
        stack.start_gateway()
    except BaseException:
        stack.stop_all()
        raise
    return stack


def multipart(csv_bytes: bytes) -> tuple[bytes, str]:
    prepared = requests.Request(
        "POST", "http://x/upload", files={"file": ("big.csv", csv_bytes, "text/csv")}
    ).prepare()
    return bytes(prepared.body or b""), prepared.headers["Content-Type"]


def _drain_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    stream = environ["wsgi.input"]
    while stream.read(1 << 16):
        pass
    start_response("202 Accepted", [("Content-Type", "application/json")])
    return [b"{}"]


def time_post(url: str, body: bytes, content_type: str, runs: int) -> list[float]:
    timings = []
    with requests.Session() as session:
        for _ in range(runs):
            started = time.perf_counter()
            answer = session.post(
                url, data=body, headers={"Content-Type": content_type}, timeout=60
            )
            timings.append(time.perf_counter() - started)
            assert answer.status_code == 202, answer.text[:300]
    return timings


def upload_benchmark(
    run_dir: Path, rows: int = 10_000, urls: int = 3, runs: int = 5
) -> list[Figure]:
    lines = [
        f'{i},Product {i},"'
        + ",".join(f"http://127.0.0.1:9/p/{i}/{n}.jpg" for n in range(urls))
        + '"'
        for i in range(1, rows + 1)
    ]
    csv_bytes = (HEADER + "\r\n".join(lines) + "\r\n").encode()
    body, content_type = multipart(csv_bytes)

    parse_times = []
    for _ in range(runs):
        started = time.perf_counter()
        parse_product_csv(csv_bytes, Limits())
        parse_times.append(time.perf_counter() - started)

    # The same body to a WSGI handler on the same server software that only reads it.
    drain = create_server(_drain_app, host="127.0.0.1", port=0, threads=4)
    drain_thread = threading.Thread(target=drain.run, daemon=True)
    drain_thread.start()
    try:
        drain_url = f"http://127.0.0.1:{drain.effective_port}/upload"
        transfer = time_post(drain_url, body, content_type, runs)
    finally:
        drain.close()

    stack = start_stack(run_dir / "upload", with_worker=False)
    try:
        gateway = stack.services["gateway"].url
        time_post(f"{gateway}/upload", body, content_type, 1)  # warm-up: connections, caches
        uploads = time_post(f"{gateway}/upload", body, content_type, runs)
    finally:
        stack.stop_all()
    size = f"{rows:,} rows x {urls} URLs, {len(csv_bytes) / 1e6:.1f} MB"
    return [
        Figure(
            f"POST /upload to 202 ({size})",
            statistics.median(uploads),
            "s",
            "parsing and validating the same CSV in-process",
            statistics.median(parse_times),
            f"median of {runs}; the bare HTTP transfer of the same body takes "
            f"{statistics.median(transfer) * 1000:.0f} ms",
        ),
    ]


def ideal_compression_time(images: list[bytes]) -> float:
    """Single-core time to decode and re-encode every image with plain Pillow."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for data in images:
            out = io.BytesIO()
            Image.open(io.BytesIO(data)).save(out, "JPEG", quality=45)
        best = min(best, time.perf_counter() - started)
    return best


def end_to_end_benchmark(run_dir: Path, count: int = 60, latency: float = 0.05) -> list[Figure]:
    images = [sample_images.photo_jpeg(2400, 1800, 90, seed=i) for i in range(count)]
    cores = os.cpu_count() or 1
    ideal = ideal_compression_time(images) / cores
    files = {f"/photo{i}.jpg": (data, "image/jpeg") for i, data in enumerate(images)}
    stack = start_stack(run_dir / "e2e", with_worker=True)
    walls = []
    try:
        gateway = stack.services["gateway"].url
        with ImageHost(files, latency=latency) as host:
            # The first run warms the emulators' JIT and the worker's connections; a service
            # runs warm, so it is not counted.
            for run in range(4):
                lines = [f"{run}-{i},Photo {i},{host.url(f'/photo{i}.jpg')}" for i in range(count)]
                csv_bytes = (HEADER + "\r\n".join(lines) + "\r\n").encode()
                started = time.time()
                answer = requests.post(
                    f"{gateway}/upload",
                    files={"file": ("p.csv", csv_bytes, "text/csv")},
                    timeout=60,
                )
                request_id = answer.json()["request_id"]
                # Poll gently (each poll is four emulator queries) and take the completion
                # time the service recorded, on the same clock.
                while True:
                    status = requests.get(f"{gateway}/status/{request_id}", timeout=10).json()
                    if status["status"] != "in progress":
                        break
                    time.sleep(0.25)
                assert status["progress"]["done"] == count, status
                completed = datetime.fromisoformat(status["completed_at"].replace("Z", "+00:00"))
                if run:
                    walls.append(completed.timestamp() - started)
    finally:
        stack.stop_all()
    wall = statistics.median(walls)
    return [
        Figure(
            f"{count} x 2400x1800 q90 JPEGs, upload to completed, {latency * 1000:.0f} ms/fetch",
            wall, "s", f"ideal: plain Pillow single-core time / {cores} cores", ideal,
            "median of 3 warm runs: " + ", ".join(f"{w:.2f}" for w in walls),
        )
    ]  # fmt: skip
