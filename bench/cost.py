"""The cost of one image in the cloud (issue 12), counted on the emulated cloud profile.

The four staged functions run as `make up PROFILE=cloud` runs them (Cloud Tasks emulated,
the Eventarc and Cloud Scheduler stand-ins, the Hosting stand-in in front), each behind the
taps of bench/wire.py, which count on the wire what it asks of Firestore, Cloud Tasks and
Cloud Storage, and how often it is invoked, and for what. The service itself counts nothing.

A request of 1,000 images (200 products x 5 photos, every one a distinct small JPEG served
from loopback: the usual path, fetched, compressed, stored) with a webhook is uploaded, and a
client polls its status every second, as the request page does, until it completes and its
webhook has arrived. Everything every function did in between, divided by 1,000, is the cost
of one image. Then:

- the status poll: a finished request polled 10 times, and requests of 100,000 images written
  straight into Firestore (running: half their images counted; then finished) polled 10 times
  each, so that a poll's cost can be compared across sizes;
- one idle sweep (two a minute in production: Cloud Scheduler's job and the one it asks for
  half a minute later), counted alone.

What Eventarc would deliver to `finalize` is counted too: one event per write of a tally
document (the trigger fires on every write). The stand-in, a Firestore listener, may fold
quick writes of one document into one event, so it can deliver fewer than production would.

    python -m bench.cost [--images N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from bench.wire import GrpcTap, HttpTap, invocation_kind, snapshot_all, storage_kind
from local_profile import sample_images
from local_profile.image_host import ImageHost
from local_profile.processes import free_port
from local_profile.recipes import (
    LOOPBACK_NETWORKS,
    Stack,
    create_buckets,
    new_webhook_secret,
)
from scripts.stage_functions import FUNCTIONS
from shared.domain.blob_layout import upload_path
from shared.domain.model import RequestRecord, RequestStatus, new_request_id
from shared.domain.tally import TALLY_SHARDS, shard_count

COST_HEADING = "## The cost of one image (emulated cloud profile)"
IMAGES = 1_000
PER_ROW = 5
LARGE = 100_000
POLLS = 10
HEADER = "Serial Number,Product Name,Input Image Urls\r\n"
# Targets of issue 12, per image on the usual path.
MAX_IMAGE_WRITES = 2.0
MAX_FINALIZE = 2.0

# The functions an image goes through; `status` is counted per poll.
PIPELINE = [name for name in FUNCTIONS if name != "status"]
# The figures of each function's counts that the tables show, in order.
COLUMNS = [
    ("invocations", "Invocations"),
    ("read", "Document reads"),
    ("write", "Document writes"),
    ("query", "Queries"),
    ("aggregation read", "Aggregation reads"),
    ("task", "Cloud Tasks created"),
    ("storage write", "Storage writes"),
    ("storage read", "Storage reads"),
]


@dataclass
class CountedCloud(Stack):
    """The emulated cloud profile with every function behind taps: its Firestore and Cloud
    Tasks clients talk to a GrpcTap, its Storage client to an HttpTap, and the port everyone
    else calls it on is an HttpTap in front of it."""

    grpc_taps: dict[str, GrpcTap] = field(default_factory=dict)
    storage_taps: dict[str, HttpTap] = field(default_factory=dict)
    fronts: dict[str, HttpTap] = field(default_factory=dict)

    def start_function(self, name: str, port: int, staged: Path, env: Any, *more: Any) -> str:
        tap = GrpcTap(self.env["FIRESTORE_EMULATOR_HOST"], self.env["CLOUD_TASKS_EMULATOR_HOST"])
        storage = HttpTap(self.env["STORAGE_EMULATOR_HOST"], storage_kind)
        self.grpc_taps[name], self.storage_taps[name] = tap, storage
        tapped = {
            **env,
            "FIRESTORE_EMULATOR_HOST": tap.address,
            "CLOUD_TASKS_EMULATOR_HOST": tap.address,
            "STORAGE_EMULATOR_HOST": storage.url,
        }
        inner = super().start_function(name, free_port(), staged, tapped, *more)
        self.fronts[name] = HttpTap(inner, invocation_kind, port=port)
        return f"http://127.0.0.1:{port}/"

    def counts(self) -> dict[str, Counter[str]]:
        """Everything each function did so far, one Counter per function."""
        grpc, storage, front = (
            snapshot_all(self.grpc_taps),
            snapshot_all(self.storage_taps),
            snapshot_all(self.fronts),
        )
        merged = {}
        for name in FUNCTIONS:
            counter = grpc[name] + storage[name]
            counter.update({f"invoked {k}": v for k, v in front[name].items()})
            counter["invocations"] = sum(
                v for k, v in front[name].items() if not k.endswith(("xx", "unreachable", " ms"))
            )
            merged[name] = counter
        return merged

    def stop_taps(self) -> None:
        for tap in [*self.fronts.values(), *self.storage_taps.values(), *self.grpc_taps.values()]:
            tap.stop()


def _minus(after: dict[str, Counter[str]], before: dict[str, Counter[str]]) -> dict[str, Counter]:
    return {name: after[name] - before[name] for name in after}


def _settled(stack: CountedCloud, quiet: float = 4.0, timeout: float = 120.0) -> None:
    """Wait until no function has been called and no call made for `quiet` seconds: the
    trailing events and the webhook's delivery are counted too."""
    deadline = time.monotonic() + timeout
    last = stack.counts()
    still = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = stack.counts()
        if now != last:
            last, still = now, time.monotonic()
        elif time.monotonic() - still >= quiet:
            return


def cost_env() -> dict[str, str]:
    return {
        "GOOGLE_CLOUD_PROJECT": "demo-imgsvc-cost",
        "FETCH_ALLOWED_NETWORKS": LOOPBACK_NETWORKS,
        "FETCH_DNS": "off",
        "WEBHOOK_SECRET": new_webhook_secret(),
        "UPLOADS_BUCKET": "cost-uploads",
        "OUTPUTS_BUCKET": "cost-outputs",
        # As deploy.sh's Cloud Scheduler job: a sweep a minute, asking for one more half a
        # minute later (the stand-in posts every two SWEEP_INTERVALs).
        "SWEEP_INTERVAL": "30",
        "LOG_LEVEL": "WARNING",
    }


def distinct_jpegs(count: int) -> list[bytes]:
    """`count` small photos whose bytes all differ (a comment segment numbers each), so that
    none is taken for a copy of another."""
    base = sample_images.photo_jpeg(320, 240, 80, seed=7)
    out = []
    for n in range(count):
        comment = f"photo {n}".encode()
        segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
        out.append(base[:2] + segment + base[2:])
    return out


@dataclass(frozen=True)
class PollCost:
    size: int
    running: Counter[str]  # per poll
    finished: Counter[str]


@dataclass
class CostReport:
    images: int
    seconds: float  # upload to completed
    per_function: dict[str, Counter[str]]  # the whole request, by function
    running_polls: int
    polls: list[PollCost]
    idle_sweep: Counter[str]
    load: float

    def per_image(self, name: str, key: str) -> float:
        return self.per_function[name][key] / self.images

    def total(self, key: str) -> float:
        """Per image, over the pipeline's functions (the status polls are counted per poll:
        how many there are depends on how long the request runs and who watches it)."""
        return sum(self.per_function[name][key] for name in PIPELINE) / self.images


def _divided(counter: Counter[str], n: int) -> Counter[str]:
    return Counter({k: v / n for k, v in counter.items()})  # type: ignore[misc]


def _poll(base: str, request_id: str, times: int) -> list[float]:
    latencies = []
    with requests.Session() as session:
        for _ in range(times):
            started = time.perf_counter()
            answer = session.get(f"{base}/status/{request_id}", timeout=30)
            latencies.append(time.perf_counter() - started)
            assert answer.status_code == 200, answer.text
    return latencies


def _polled(stack: CountedCloud, base: str, request_id: str) -> Counter[str]:
    before = stack.counts()
    _poll(base, request_id, POLLS)
    return _divided(_minus(stack.counts(), before)["status"], POLLS)


def _large_request(env: dict[str, str], images: int) -> tuple[str, Any]:
    """A request of `images` images as the status sees it half-way: its request and tallies
    written as the upload writes them, half of each tally counted."""
    from google.cloud import firestore

    from shared.adapters.gcp.firestore_store import REQUESTS, TALLY
    from shared.bootstrap import build_services
    from shared.config import Settings

    services = build_services(Settings.from_env(env))
    request_id = new_request_id()
    now = datetime.now(UTC)
    services.requests.create(
        RequestRecord(
            request_id=request_id,
            status=RequestStatus.IN_PROGRESS,
            total_images=images,
            total_rows=images // PER_ROW,
            input_path=upload_path(request_id),
            created_at=now,
            updated_at=now,
            tally_shards=shard_count(images),
        )
    )
    db = firestore.Client(project=env["GOOGLE_CLOUD_PROJECT"])
    ref = db.collection(REQUESTS).document(request_id)
    batch = db.batch()
    for snap in ref.collection(TALLY).get():
        total = int(snap.get("total"))
        batch.update(
            snap.reference,
            {"left": total - total // 2, "done": total // 2, "updated_at": now},
        )
    batch.commit()
    return request_id, ref


def _finish(ref: Any, images: int) -> None:
    now = datetime.now(UTC)
    ref.update(
        {
            "status": RequestStatus.COMPLETED.value,
            "completed_at": now,
            "updated_at": now,
            "final_progress": {"total": images, "done": images, "failed": 0},
            "output_path": f"outputs/{ref.id}/output.csv",
        }
    )


def cost_benchmark(work: Path, images: int = IMAGES) -> CostReport:
    env = cost_env()
    os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
    stack = CountedCloud(work / "cost", env)
    photos = distinct_jpegs(images)
    files = {f"/p/{n}.jpg": (data, "image/jpeg") for n, data in enumerate(photos)}
    try:
        stack.start_firestore()
        stack.start_storage()
        create_buckets(stack.env)
        base = stack.start_cloud_profile()
        os.environ["FIRESTORE_EMULATOR_HOST"] = stack.env["FIRESTORE_EMULATOR_HOST"]
        os.environ["STORAGE_EMULATOR_HOST"] = stack.env["STORAGE_EMULATOR_HOST"]
        _settled(stack, quiet=2.0)  # the scheduler's first sweep, at start-up
        with ImageHost(files) as host:
            rows = [
                f'SKU-{r:04d},Product {r},"'
                + ",".join(host.url(f"/p/{r * PER_ROW + n}.jpg") for n in range(PER_ROW))
                + '"'
                for r in range(images // PER_ROW)
            ]
            before = stack.counts()
            started = time.time()
            answer = requests.post(
                f"{base}/upload",
                files={
                    "file": ("catalogue.csv", (HEADER + "\r\n".join(rows)).encode(), "text/csv")
                },
                data={"webhook_url": f"{base}/webhook"},
                timeout=60,
            )
            assert answer.status_code == 202, answer.text
            request_id = answer.json()["request_id"]
            running_polls = 0
            with requests.Session() as session:
                while True:
                    status = session.get(f"{base}/status/{request_id}", timeout=30).json()
                    if status["status"] != "in progress":
                        break
                    running_polls += 1
                    time.sleep(1.0)
            assert status["progress"]["done"] == images, status
            completed = datetime.fromisoformat(status["completed_at"].replace("Z", "+00:00"))
            deadline = time.monotonic() + 60
            while not _webhook_arrived(base, request_id):
                assert time.monotonic() < deadline, "the webhook never arrived"
                time.sleep(0.5)
            _settled(stack)
            whole = _minus(stack.counts(), before)
        finished = _polled(stack, base, request_id)
        # The status polls of the run: all but the last were of a running request.
        polls = [
            PollCost(images, _running_share(whole["status"], finished, running_polls), finished)
        ]
        large_id, large_ref = _large_request(stack.env, LARGE)
        running = _polled(stack, base, large_id)
        _finish(large_ref, LARGE)
        polls.append(PollCost(LARGE, running, _polled(stack, base, large_id)))
        before = stack.counts()
        sweep = requests.post(stack.fronts["process_image"].url, json={"kind": "sweep"}, timeout=60)
        assert sweep.status_code == 200, sweep.text
        idle = _minus(stack.counts(), before)["process_image"]
    finally:
        stack.stop_all()
        stack.stop_taps()
    return CostReport(
        images=images,
        seconds=completed.timestamp() - started,
        per_function=whole,
        running_polls=running_polls,
        polls=polls,
        idle_sweep=idle,
        load=os.getloadavg()[0],
    )


def _running_share(
    status: Counter[str], finished: Counter[str], running_polls: int
) -> Counter[str]:
    """Per running poll: the run's status counts less its one poll of the finished request."""
    rest = Counter(status)
    rest.subtract(finished)
    return _divided(rest, max(1, running_polls))


def _webhook_arrived(base: str, request_id: str) -> bool:
    received = requests.get(f"{base}/webhook", timeout=10).json()["received"]
    return any(m["webhook_id"] == f"msg_{request_id}" for m in received)


# Rendering.


def _figure(value: float) -> str:
    if value == 0:
        return "0"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _met(met: bool) -> str:
    return "met" if met else "missed"


def render_cost_section(report: CostReport) -> str:
    n = report.images
    lines = [
        "| Per image | " + " | ".join(title for _, title in COLUMNS) + " |",
        "| --- |" + " --- |" * len(COLUMNS),
    ]
    for name in PIPELINE:
        lines.append(
            f"| `{name}` | "
            + " | ".join(_figure(report.per_image(name, key)) for key, _ in COLUMNS)
            + " |"
        )
    lines.append(
        "| **all, per image** | "
        + " | ".join(f"**{_figure(report.total(key))}**" for key, _ in COLUMNS)
        + " |"
    )
    writes = Counter[str]()
    reads = Counter[str]()
    invoked = Counter[str]()
    spent = Counter[str]()
    for name in PIPELINE:
        counter = report.per_function[name]
        for key, value in counter.items():
            if key.startswith("write:"):
                writes[key[6:]] += value
            elif key.startswith("read:"):
                reads[key[5:]] += value
            elif key.startswith("invoked ") and not key.endswith(("xx", "unreachable", " ms")):
                invoked[f"`{name}`: {key[8:]}"] += value
                spent[f"`{name}`: {key[8:]}"] += counter[f"{key} ms"]
    kinds = sorted(set(writes) | set(reads), key=lambda k: -writes[k] - reads[k])
    by_kind = [
        "| Document kind | Writes per image | Reads per image |",
        "| --- | --- | --- |",
        *(
            f"| {kind} | {_figure(writes[kind] / n)} | {_figure(reads[kind] / n)} |"
            for kind in kinds
        ),
    ]
    by_cause = [
        "| Invocation | Per image | Mean time answering, this machine |",
        "| --- | --- | --- |",
        *(
            f"| {what} | {_figure(count / n)} | {spent[what] / count:.0f} ms |"
            for what, count in sorted(invoked.items())
        ),
    ]
    eventarc = writes["tally"] / n
    webhook_tasks = report.per_function["finalize"]["invoked task deliver_webhook"] / n
    finalize_in_production = eventarc + webhook_tasks
    image_writes = writes["images"] / n
    poll_rows = [
        "| Request | Poll of a running request: reads | queries | Poll of a finished request: "
        "reads | queries |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {p.size:,} images | {_figure(p.running['read'])} | {_figure(p.running['query'])} "
            f"| {_figure(p.finished['read'])} | {_figure(p.finished['query'])} |"
            for p in report.polls
        ),
    ]
    small, large = report.polls[0], report.polls[-1]
    finished_flat = large.finished["read"] <= small.finished["read"]
    # The request and its tallies: at most 1 + TALLY_SHARDS at any size (a small request has
    # fewer tallies, so not the same figure at both sizes), where the counts it replaced grew
    # with the request.
    running_flat = max(large.running["read"], small.running["read"]) <= 1 + TALLY_SHARDS
    targets = [
        "| Target | Measured | |",
        "| --- | --- | --- |",
        f"| at most {MAX_IMAGE_WRITES:.0f} image-document writes per image | "
        f"{image_writes:.3f} | {'met' if image_writes <= MAX_IMAGE_WRITES else 'missed'} |",
        f"| at most {MAX_FINALIZE:.0f} `finalize` invocations per image (as Eventarc delivers: "
        f"one per tally write, plus webhook tasks) | {finalize_in_production:.3f} "
        f"| {'met' if finalize_in_production <= MAX_FINALIZE else 'missed'} |",
        f"| a poll of a finished request costs the same at any size | "
        f"{_figure(small.finished['read'])} read(s) at {small.size:,}, "
        f"{_figure(large.finished['read'])} at {large.size:,} | {_met(finished_flat)} |",
        f"| a poll of a running request grows no faster than before (bounded: the request "
        f"and at most {TALLY_SHARDS} tallies) | "
        f"{_figure(small.running['read'])} reads at {small.size:,}, "
        f"{_figure(large.running['read'])} at {large.size:,} | {_met(running_flat)} |",
    ]
    idle = report.idle_sweep
    return (
        "\n".join(lines)
        + "\n\n"
        + "\n".join(targets)
        + "\n\nDocuments written and read per image, by kind (the pipeline's functions):\n\n"
        + "\n".join(by_kind)
        + "\n\nInvocations, by what they were for:\n\n"
        + "\n".join(by_cause)
        + "\n\n"
        + f"`finalize` as production would see it: {eventarc:.3f} Firestore events per image "
        f"(one per tally write: Eventarc fires on every write; the stand-in delivered "
        f"{report.per_function['finalize']['invoked firestore event'] / n:.3f}, folding quick "
        f"writes of one tally) and {webhook_tasks:.3f} webhook tasks.\n\n"
        f"The status poll, per poll (the run above was polled {report.running_polls + 1} times, "
        "once a second):\n\n"
        + "\n".join(poll_rows)
        + "\n\n"
        + f"An idle sweep (twice a minute whatever the traffic: Cloud Scheduler's job and the "
        "one it asks for): "
        f"{_figure(idle['read'])} document read(s), {_figure(idle['query'])} query, "
        f"{_figure(idle['write'])} writes. The {n:,} images took {report.seconds:.0f} s from "
        f"upload to completed (load average {report.load:.1f} on {os.cpu_count()} cores)."
    )


def cost_markdown(report: CostReport) -> str:
    return (
        f"{render_cost_section(report)}\n\n"
        "How it is counted (`python -m bench.run --only cost`, bench/cost.py and "
        "bench/wire.py). The service counts nothing itself: the four staged functions run on "
        "the emulated cloud profile, and each is given the address of a tap instead of each "
        "emulator's, and is called through a tap on the port the others know it by. The taps "
        "pass every call through unchanged and count it on the way: a gRPC tap decodes each "
        "Firestore RPC with the public protobuf types and counts what Firestore bills "
        "(documents returned by gets and queries, a query that returns nothing counting one; "
        "each write of a commit that went through, by the kind of document; an aggregation a "
        "read per 1,000 index entries) and each Cloud Task created; HTTP taps count Cloud "
        "Storage requests and invocations, by the message or event they carry. The request is "
        f"{report.images:,} distinct small JPEGs in rows of {PER_ROW}, with a webhook, polled "
        "every second until completed; counts run from the upload to the webhook's arrival "
        "and the last trailing event. A status poll is counted alone, 10 times, on that "
        "request once finished and on a request of 100,000 images written straight into "
        "Firestore, half counted, then finished. Sweeps ran twice a minute, as in production "
        "(the job each minute and the one it asks for), and are in `process_image`'s figures.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=IMAGES)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imgsvc-cost-") as tmp:
        report = cost_benchmark(Path(tmp), args.images)
    print(render_cost_section(report))


if __name__ == "__main__":
    main()
