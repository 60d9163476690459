"""The finaliser at the largest request the service accepts (issue 12).

A request of 100,000 images (20,000 rows x 5 URLs, every tenth image failed) is written
straight into the emulators, no fetching: its CSV into the Storage emulator, the request, its
image documents (settled) and its tallies (all counted) into the Firestore emulator. Then a
child process does what a `finalize` instance does when the last tallies settle: it builds its
services and calls the finaliser from 8 threads at once (8 settle events arriving together, as
the issue saw at the end of a big request; `finalize` runs at concurrency 10). Measured there:

- the wall and CPU time from the events to the request being `completed`;
- the process's RSS after building its services and before finalising (the baseline), and
  its RSS high-water mark (VmHWM) after: the peak the instance's memory limit must hold;
- how many of the 8 rendered the output CSV (the render is claimed with a lease: one should).

The same is done for a request of 1,000 images in the same run, a second baseline: a
finaliser whose memory grew with the request would show it in the difference between the two.
The output CSV is read back and checked (one line per row, the done images' URLs in place).

    python -m bench.finalise [--images N] [--baseline-images N] [--settlers N]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from local_profile.recipes import PROJECT, Stack, create_buckets
from shared.domain.blob_layout import upload_path
from shared.domain.model import ImageState, RequestRecord, RequestStatus, image_id, new_request_id
from shared.domain.tally import shard_count, shard_of, shard_totals

FINALISE_HEADING = "## Finalising the largest request"
TARGET_PEAK_MB = 256
IMAGES = 100_000
BASELINE_IMAGES = 1_000
URLS_PER_ROW = 5
SETTLERS = 8
FAILED_EVERY = 10  # every tenth image failed: the CSV has empty slots too
WRITERS = 8  # threads writing the image documents (500 per commit)


@dataclass(frozen=True)
class Finalisation:
    images: int
    seconds: float  # wall, from the settle events to the last of them returning
    cpu_seconds: float
    rss_before_mb: float  # after building services, before finalising
    peak_mb: float  # VmHWM after finalising
    renders: int  # output CSVs written (the render claim should make it one)
    finalised: int  # calls that made the transition to completed (exactly one)
    settlers: int


@dataclass(frozen=True)
class FinaliseReport:
    large: Finalisation
    baseline: Finalisation
    seed_seconds: float  # writing the large request's documents, for scale
    load: float  # the machine's load average over the last minute, at the end


def bench_env() -> dict[str, str]:
    return {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "UPLOADS_BUCKET": "bench-uploads",
        "OUTPUTS_BUCKET": "bench-outputs",
        # What the `finalize` function runs with. No request here has a webhook, so nothing
        # is queued: the Cloud Tasks client is never built and this address never called.
        "TASK_BACKEND": "cloudtasks",
        "CLOUD_TASKS_EMULATOR_HOST": "127.0.0.1:9",
        "PROCESS_IMAGE_URL": "http://127.0.0.1:9/",
        "FINALIZE_URL": "http://127.0.0.1:9/",
        "LOG_LEVEL": "WARNING",
    }


def catalogue_csv(rows: int, per_row: int) -> bytes:
    lines = ["Serial Number,Product Name,Input Image Urls"]
    for row in range(rows):
        urls = ",".join(
            f"https://images.example.com/catalogue/{row:06d}/{n}.jpg" for n in range(per_row)
        )
        lines.append(f'SKU-{row:06d},Product {row},"{urls}"')
    return ("\r\n".join(lines) + "\r\n").encode()


def _image_documents(request_id: str, rows: int, per_row: int) -> Iterator[tuple[str, dict]]:
    """Each image as the store keeps it once settled, in input order."""
    shards = shard_count(rows * per_row)
    now = datetime.now(UTC)
    ordinal = 0
    for row in range(rows):
        serial = f"SKU-{row:06d}"
        for position in range(per_row):
            slot = image_id(row, position)
            data: dict[str, Any] = {
                "request_id": request_id,
                "image_id": slot,
                "row": row,
                "position": position,
                "serial": serial,
                "input_url": f"https://images.example.com/catalogue/{row:06d}/{position}.jpg",
                "shard": shard_of(ordinal, shards),
                "same_as": None,
                "attempts": 1,
                "created_at": now,
                "updated_at": now,
            }
            if ordinal % FAILED_EVERY == FAILED_EVERY - 1:
                data |= {
                    "state": ImageState.FAILED.value,
                    "error_code": "not_found",
                    "error_message": "the image's host answered 404 Not Found",
                }
            else:
                path = f"outputs/{request_id}/{serial}-{position + 1}.jpg"
                data |= {
                    "state": ImageState.DONE.value,
                    "output_url": f"https://storage.googleapis.com/bench-outputs/{path}",
                    "output_path": path,
                    "source_format": "JPEG",
                    "source_bytes": 180_000,
                    "width": 1200,
                    "height": 900,
                    "source_quality": 85,
                    "output_quality": 43,
                    "output_format": "JPEG",
                    "output_bytes": 60_000,
                }
            ordinal += 1
            yield slot, data


def _chunks(items: Iterable[tuple[str, dict]], size: int) -> Iterator[list[tuple[str, dict]]]:
    chunk: list[tuple[str, dict]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def seed_settled_request(env: dict[str, str], images: int) -> str:
    """A request of `images` images, every one settled and counted, as the finaliser finds it
    when its last tally settles. Written directly: the request and its tallies through the
    store (as the upload writes them), then the images and the tallies' counts."""
    from google.cloud import firestore

    from shared.adapters.gcp.firestore_store import IMAGES as IMAGES_COLLECTION
    from shared.adapters.gcp.firestore_store import REQUESTS, TALLY
    from shared.bootstrap import build_services
    from shared.config import Settings

    rows = images // URLS_PER_ROW
    assert rows * URLS_PER_ROW == images, f"{images} is not a multiple of {URLS_PER_ROW}"
    services = build_services(Settings.from_env(env))
    request_id = new_request_id()
    now = datetime.now(UTC)
    services.blobs.put_upload(
        upload_path(request_id), catalogue_csv(rows, URLS_PER_ROW), "text/csv"
    )
    services.requests.create(
        RequestRecord(
            request_id=request_id,
            status=RequestStatus.IN_PROGRESS,
            total_images=images,
            total_rows=rows,
            input_path=upload_path(request_id),
            created_at=now,
            updated_at=now,
            tally_shards=shard_count(images),
        )
    )
    db = firestore.Client(project=env["GOOGLE_CLOUD_PROJECT"])
    request = db.collection(REQUESTS).document(request_id)
    collection = request.collection(IMAGES_COLLECTION)

    def write(chunk: list[tuple[str, dict]]) -> None:
        batch = db.batch()
        for slot, data in chunk:
            batch.set(collection.document(slot), data)
        batch.commit()

    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(write, _chunks(_image_documents(request_id, rows, URLS_PER_ROW), 500)))
    # Every tally counted down to zero, with its done and failed images.
    shards = shard_count(images)
    done = [0] * shards
    failed = [0] * shards
    for ordinal in range(images):
        shard = shard_of(ordinal, shards)
        if ordinal % FAILED_EVERY == FAILED_EVERY - 1:
            failed[shard] += 1
        else:
            done[shard] += 1
    batch = db.batch()
    for shard, total in enumerate(shard_totals(images)):
        assert done[shard] + failed[shard] == total
        batch.update(
            request.collection(TALLY).document(str(shard)),
            {"left": 0, "done": done[shard], "failed": failed[shard], "updated_at": now},
        )
    batch.commit()
    return request_id


# The child: one `finalize` instance receiving `settlers` settle events at once.


def _vm(field: str) -> float:
    """A figure of /proc/self/status in MB (VmRSS: now; VmHWM: the high-water mark)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} is not in /proc/self/status")


class _CountedRenders:
    """The blob store, counting the output CSVs written (a render ends in one)."""

    def __init__(self, blobs: Any) -> None:
        self._blobs = blobs
        self.renders = 0
        self._lock = threading.Lock()

    def put_output_stream(self, path: str, chunks: Iterable[bytes], content_type: str) -> str:
        with self._lock:
            self.renders += 1
        url: str = self._blobs.put_output_stream(path, chunks, content_type)
        return url

    def __getattr__(self, name: str) -> Any:
        return getattr(self._blobs, name)


def child(request_id: str, settlers: int) -> dict[str, float | int]:
    from shared.bootstrap import build_services
    from shared.usecases.finalize_request import on_shard_settled

    services = build_services()
    # One round trip to each emulator first, so that the baseline includes the gRPC channel
    # and the HTTP session every finaliser has open before its work.
    request = services.requests.get(request_id)
    assert request is not None and request.status is RequestStatus.IN_PROGRESS
    services.blobs.url_of("warm-up")
    rss_before = _vm("VmRSS")
    counted = _CountedRenders(services.blobs)
    services = replace(services, blobs=counted)
    barrier = threading.Barrier(settlers)

    def settle(_: int) -> bool:
        barrier.wait()
        return on_shard_settled(services, request_id)

    cpu = time.process_time()
    started = time.perf_counter()
    with ThreadPoolExecutor(settlers) as pool:
        results = list(pool.map(settle, range(settlers)))
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "rss_before_mb": rss_before,
        "peak_mb": _vm("VmHWM"),
        "renders": counted.renders,
        "finalised": sum(results),
    }


def finalise_in_child(
    env: dict[str, str], request_id: str, images: int, settlers: int
) -> Finalisation:
    from local_profile.processes import ROOT

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.finalise",
            "--child",
            request_id,
            "--settlers",
            str(settlers),
        ],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if run.returncode != 0:
        raise RuntimeError(f"the finaliser failed:\n{run.stderr[-4000:]}")
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    return Finalisation(images=images, settlers=settlers, **figures)


def check_output(env: dict[str, str], request_id: str, images: int) -> None:
    """The request completed with the right counts, and its CSV has every row and URL."""
    from shared.bootstrap import build_services
    from shared.config import Settings

    services = build_services(Settings.from_env(env))
    request = services.requests.get(request_id)
    assert request is not None and request.status is RequestStatus.COMPLETED, request
    failed = images // FAILED_EVERY
    assert request.final_progress is not None
    assert (request.final_progress.done, request.final_progress.failed) == (
        images - failed,
        failed,
    ), request.final_progress
    assert request.output_path is not None
    blob = services.blobs._outputs.blob(request.output_path)  # type: ignore[attr-defined]
    table = list(csv.reader(io.StringIO(blob.download_as_text())))
    assert len(table) == images // URLS_PER_ROW + 1, len(table)
    slots = [slot for row in table[1:] for slot in row[-1].split(",")]
    assert len(slots) == images and sum(1 for s in slots if not s) == failed


def finalise_benchmark(
    work: Path,
    images: int = IMAGES,
    baseline_images: int = BASELINE_IMAGES,
    settlers: int = SETTLERS,
) -> FinaliseReport:
    stack = Stack(work / "finalise", bench_env())
    try:
        stack.start_firestore()
        stack.start_storage()
        create_buckets(stack.env)
        env = dict(stack.env)
        os.environ["FIRESTORE_EMULATOR_HOST"] = env["FIRESTORE_EMULATOR_HOST"]
        os.environ["STORAGE_EMULATOR_HOST"] = env["STORAGE_EMULATOR_HOST"]
        small = seed_settled_request(env, baseline_images)
        started = time.perf_counter()
        large = seed_settled_request(env, images)
        seeded = time.perf_counter() - started
        baseline = finalise_in_child(env, small, baseline_images, settlers)
        check_output(env, small, baseline_images)
        measured = finalise_in_child(env, large, images, settlers)
        check_output(env, large, images)
    finally:
        stack.stop_all()
    return FinaliseReport(
        large=measured, baseline=baseline, seed_seconds=seeded, load=os.getloadavg()[0]
    )


def render_finalise_section(report: FinaliseReport) -> str:
    large, base = report.large, report.baseline
    growth = large.peak_mb - large.rss_before_mb
    base_growth = base.peak_mb - base.rss_before_mb
    rows = [
        "| Request | Settle events at once | Renders | Finalised | Time, wall | Time, CPU "
        "| RSS before finalising | Peak RSS (VmHWM) | Peak minus before |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in (base, large):
        rows.append(
            f"| {f.images:,} images | {f.settlers} | {f.renders} | {f.finalised} "
            f"| {f.seconds:.2f} s | {f.cpu_seconds:.2f} s | {f.rss_before_mb:.0f} MB "
            f"| {f.peak_mb:.0f} MB | {f.peak_mb - f.rss_before_mb:.0f} MB |"
        )
    met_peak = large.peak_mb < TARGET_PEAK_MB
    met_once = large.renders == 1 and large.finalised == 1
    targets = [
        "| Target | Measured | |",
        "| --- | --- | --- |",
        f"| peak under {TARGET_PEAK_MB} MB at {large.images:,} images | {large.peak_mb:.0f} MB "
        f"| {'met' if met_peak else 'missed'} |",
        f"| one render, one transition, from {large.settlers} settle events at once "
        f"| {large.renders} render(s), {large.finalised} transition(s) "
        f"| {'met' if met_once else 'missed'} |",
    ]
    return (
        "\n".join(rows)
        + "\n\n"
        + "\n".join(targets)
        + "\n\n"
        + f"At {large.images:,} images the finaliser's memory grew by {growth:.0f} MB over its "
        f"baseline, against {base_growth:.0f} MB at {base.images:,} images: "
        f"{large.images // base.images}x the images, "
        f"{(growth / base_growth) if base_growth > 0 else float('inf'):.1f}x the growth. "
        f"Its time is {large.seconds / base.seconds:.0f}x the small request's "
        f"({large.seconds / large.images * 1e6:.0f} us an image). Load average at the end: "
        f"{report.load:.1f} on {os.cpu_count()} cores."
    )


def finalise_markdown(report: FinaliseReport) -> str:
    large = report.large
    return (
        f"{render_finalise_section(report)}\n\n"
        f"How it is measured (`python -m bench.run --only finalise`). A request of "
        f"{large.images:,} images ({large.images // URLS_PER_ROW:,} rows x {URLS_PER_ROW} URLs, "
        f"every {FAILED_EVERY}th failed) is written straight into the Firestore and Storage "
        f"emulators: its CSV, the request and its tallies as the upload writes them, then every "
        f"image document settled and every tally counted down to zero ({report.seed_seconds:.0f} s "
        "of writes, not counted). A child process then does what a `finalize` instance does: it "
        f"builds its services, reads the request once, and calls the finaliser from "
        f"{large.settlers} threads released together, as {large.settlers} settle events arriving "
        "at once. The baseline RSS is the child's after building its services and that first "
        "read; the peak is its high-water mark (VmHWM) after the finaliser returned. Renders are "
        "the output CSVs written; finalised, the calls that moved the request to `completed`. "
        "The request's counts and every row and slot of its output CSV are checked afterwards. "
        "The smaller request, finalised the same way in its own child in the same run, is the "
        "baseline for the growth. (Before the finaliser read the images by id it paged through "
        "them with a query, which the emulator answers by scanning the whole collection: the "
        "same 100,000 took 334 s, longer than the render's 300 s lease.)\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=IMAGES)
    parser.add_argument("--baseline-images", type=int, default=BASELINE_IMAGES)
    parser.add_argument("--settlers", type=int, default=SETTLERS)
    parser.add_argument("--child", metavar="REQUEST_ID", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # The services' start-up warnings (no webhook secret, open access) say nothing here.
    logging.getLogger("shared.bootstrap").setLevel(logging.ERROR)
    if args.child:
        print(json.dumps(child(args.child, args.settlers)))
        return
    with tempfile.TemporaryDirectory(prefix="imgsvc-finalise-") as tmp:
        report = finalise_benchmark(Path(tmp), args.images, args.baseline_images, args.settlers)
    print(render_finalise_section(report))


if __name__ == "__main__":
    main()
