"""Repeated images done once (issue 10), measured on the local profile against a baseline of the
same size in the same run.

Two catalogues of 30 rows x 2 URLs, every image a photo-like 2000x1500 q90 JPEG (so that every
compression costs about the same, and CPU and time can be read beside the counts):

- the baseline: 60 distinct URLs, 60 distinct pictures;
- repeated: the same rows, where 18 slots (30%) name an image an earlier slot names: one
  picture on every third row (a brand's banner: 1 + 9 repeats), and 9 rows whose product photo
  is the previous row's (variants), written as the same URL, with a fragment, or with the
  scheme in capitals and an escaped unreserved character (the same URL once normalised); and
  3 slots (5%) are mirror URLs serving the bytes of an earlier row's photo: fetched and
  compressed, but not stored again. Every other slot has the bytes of the baseline's slot.

Each request is timed from POST /upload to the completion the service recorded, as in the
pipeline benchmark, on a stack with the worker and the ticker (a copy's fallback look waits
in delayed work, which the ticker releases), fetching from a loopback image host with
50 ms latency. Counted per request:

- fetches: GET requests the image host answered;
- outputs stored: objects under the request's folder of the outputs bucket (the CSV aside),
  listed in the Storage emulator;
- compressions: distinct outputs among the slots' recorded outcomes (a copied slot names the
  output of the slot it copied), plus the compressions a slot threw away because another slot
  had recorded the same bytes' output (the worker logs each). Each kept compression writes one
  object under a name fixed by its slot, so the kept ones equal the objects stored unless an
  attempt was repeated: the attempts beyond the first are counted too (a repeated attempt may
  have compressed again);
- worker CPU: user + system seconds of the worker's processes (the Celery master and its pool)
  while the request ran, the work itself measured outside the service's own bookkeeping.

    python -m bench.same_image [--runs N]   (prints its section; `make bench` writes it)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import requests

from bench.pipeline import HEADER, bench_env
from local_profile import sample_images
from local_profile.image_host import ImageHost
from local_profile.recipes import Stack, create_buckets
from shared.usecases.process_image import COMPRESSED_AGAIN

SAME_IMAGE_HEADING = "## Repeated images done once (local profile)"

ROWS = 30
URLS_PER_ROW = 2
WIDTH, HEIGHT, QUALITY = 2000, 1500, 90
LATENCY = 0.05
RUNS = 5
BASELINE = "every URL distinct"
REPEATED = "30% repeated URLs, 5% mirrored bytes"
# Rows (from 0) whose second image is the brand's picture, the first of them being its original.
BRAND_ROWS = range(0, ROWS, 3)
# Rows whose product photo is the previous row's (a variant), and how each writes its URL.
VARIANT_ROWS = range(2, 29, 3)  # 9 rows
# Mirrors: (row, the row whose product photo's bytes its second URL serves).
MIRRORS = ((7, 3), (16, 12), (25, 21))


@dataclass(frozen=True)
class Catalogue:
    name: str
    rows: list[list[str]]  # URL paths as written, per row
    files: dict[str, int]  # served path -> which picture (an index into the pictures)
    fetches: int  # expected: distinct URLs once normalised
    compressions: int  # expected: the same (each fetch is compressed)
    stored: int  # expected: distinct pictures


def slot(row: int, position: int) -> int:
    return row * URLS_PER_ROW + position


def baseline_catalogue() -> Catalogue:
    rows = [[f"/b/{slot(r, p)}.jpg" for p in range(URLS_PER_ROW)] for r in range(ROWS)]
    files = {path: slot(r, p) for r, row in enumerate(rows) for p, path in enumerate(row)}
    return Catalogue(BASELINE, rows, files, len(files), len(files), len(files))


def repeated_catalogue() -> Catalogue:
    """Paths start with "/" and may carry a "{scheme}" to fill in, see `written`."""
    rows = [[f"/r/{slot(r, p)}.jpg" for p in range(URLS_PER_ROW)] for r in range(ROWS)]
    files = {path: slot(r, p) for r, row in enumerate(rows) for p, path in enumerate(row)}
    brand = rows[BRAND_ROWS[0]][1]
    for r in BRAND_ROWS[1:]:
        del files[rows[r][1]]
        rows[r][1] = brand
    for k, r in enumerate(VARIANT_ROWS):
        del files[rows[r][0]]
        original = rows[r - 1][0]
        rows[r][0] = [original, f"{original}#variant", "CAPS" + original.replace("/r/", "/%72/")][
            k % 3
        ]
    for r, source in MIRRORS:
        del files[rows[r][1]]
        rows[r][1] = f"/mirror/{r}.jpg"
        files[rows[r][1]] = files[rows[source][0]]
    return Catalogue(REPEATED, rows, files, len(files), len(files), len(set(files.values())))


def written(base_url: str, path: str) -> str:
    if path.startswith("CAPS"):
        return base_url.replace("http://", "HTTP://") + path.removeprefix("CAPS")
    return base_url + path


def catalogue_csv(catalogue: Catalogue, base_url: str, run: str) -> bytes:
    lines = [
        f'{run}-{r + 1},Product {r + 1},"' + ",".join(written(base_url, p) for p in row) + '"'
        for r, row in enumerate(catalogue.rows)
    ]
    return (HEADER + "\r\n".join(lines) + "\r\n").encode()


def start_stack(run_dir: Path) -> Stack:
    """The local profile as `make up` starts it (worker and ticker), on free ports."""
    # INFO: the worker logs each compression whose output was not kept, and this counts them.
    stack = Stack(run_dir, bench_env() | {"LOG_LEVEL": "INFO"})
    try:
        stack.start_firestore()
        stack.start_storage()
        stack.start_redis()
        create_buckets(stack.env)
        stack.start_worker()
        stack.start_ticker()
        stack.start_gateway()
    except BaseException:
        stack.stop_all()
        raise
    return stack


def group_cpu_seconds(group: int) -> float:
    """User + system CPU of every process in a process group, with their waited-for children
    (a pool process that was replaced still counts through its parent)."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == group:  # pgrp
            ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Outcome:
    wall: float
    fetches: int
    compressions: int
    stored: int
    extra_attempts: int
    cpu: float
    copy_lags: list[float]  # seconds from an original's outcome to each copy's


def run_request(
    stack: Stack, host: ImageHost, catalogue: Catalogue, run: str, slots: int
) -> Outcome:
    gateway = stack.services["gateway"].url
    worker = stack.services["worker"].pid
    csv_bytes = catalogue_csv(catalogue, host.base_url, run)
    hits_before = sum(host.hits.values())
    cpu_before = group_cpu_seconds(worker)
    started = time.time()
    answer = requests.post(
        f"{gateway}/upload", files={"file": ("c.csv", csv_bytes, "text/csv")}, timeout=60
    )
    request_id = answer.json()["request_id"]
    # Poll gently (each poll is a few emulator reads) and take the completion time the service
    # recorded, on the same clock.
    while True:
        status = requests.get(f"{gateway}/status/{request_id}", timeout=10).json()
        if status["status"] != "in progress":
            break
        time.sleep(0.25)
    cpu = group_cpu_seconds(worker) - cpu_before
    assert status["progress"]["done"] == slots, status
    completed = datetime.fromisoformat(status["completed_at"].replace("Z", "+00:00"))
    images = requests.get(
        f"{gateway}/status/{request_id}", params={"details": "1", "page_size": "500"}, timeout=30
    ).json()["images"]
    assert len(images) == slots, len(images)
    settled = {
        i["id"]: datetime.fromisoformat(i["updated_at"].replace("Z", "+00:00")) for i in images
    }
    return Outcome(
        wall=completed.timestamp() - started,
        fetches=sum(host.hits.values()) - hits_before,
        compressions=len({i["output_url"] for i in images}) + compressed_again(stack, request_id),
        stored=len(stored_outputs(stack, request_id)),
        extra_attempts=sum(max(0, i["attempts"] - 1) for i in images),
        cpu=cpu,
        copy_lags=[
            (settled[i["id"]] - settled[i["same_as"]]).total_seconds()
            for i in images
            if i["same_as"]
        ],
    )


def compressed_again(stack: Stack, request_id: str) -> int:
    """Compressions whose output was not kept: a slot compressed bytes whose output another
    slot had recorded, and copied that output instead (the worker logs each)."""
    said = COMPRESSED_AGAIN.split("%s/%s")[1]
    log = Path(stack.services["worker"].log).read_text(errors="replace")
    return sum(1 for line in log.splitlines() if request_id in line and said in line)


def stored_outputs(stack: Stack, request_id: str) -> list[str]:
    """Names of the output images stored for a request, as the Storage emulator lists them."""
    url = f"{stack.services['storage'].url}/storage/v1/b/{stack.env['OUTPUTS_BUCKET']}/o"
    names: list[str] = []
    params = {"prefix": f"outputs/{request_id}/"}
    while True:
        page = requests.get(url, params=params, timeout=30).json()
        names += [item["name"] for item in page.get("items", [])]
        if not page.get("nextPageToken"):
            break
        params["pageToken"] = page["nextPageToken"]
    return [n for n in names if not n.endswith("/output.csv")]


@dataclass
class SameImageReport:
    slots: int
    runs: int
    expected: dict[str, Catalogue]
    outcomes: dict[str, list[Outcome]]
    load: tuple[float, float, float]

    def median(self, name: str, figure: Callable[[Outcome], float]) -> float:
        return statistics.median(figure(o) for o in self.outcomes[name])


def same_image_benchmark(run_dir: Path, runs: int = RUNS) -> SameImageReport:
    catalogues = {c.name: c for c in (baseline_catalogue(), repeated_catalogue())}
    slots = ROWS * URLS_PER_ROW
    pictures = [sample_images.photo_jpeg(WIDTH, HEIGHT, QUALITY, seed=i) for i in range(slots)]
    files = {
        path: (pictures[index], "image/jpeg")
        for c in catalogues.values()
        for path, index in c.files.items()
    }
    outcomes: dict[str, list[Outcome]] = {name: [] for name in catalogues}
    stack = start_stack(run_dir / "same-image")
    try:
        with ImageHost(files, latency=LATENCY) as host:
            # One pair to warm the emulators' JIT and the worker's connections, not counted;
            # then the two take turns, each going first every other time, so that a drift in
            # the machine's load falls on both.
            for turn in range(runs + 1):
                order = list(catalogues.values())
                if turn % 2:
                    order.reverse()
                for catalogue in order:
                    tag = f"{turn}{catalogue.name[0]}"
                    outcome = run_request(stack, host, catalogue, tag, slots)
                    print(
                        f"  {catalogue.name}, run {turn}: {outcome.wall:.2f} s, "
                        f"{outcome.fetches} fetches, {outcome.stored} stored",
                        flush=True,
                    )
                    if turn:
                        outcomes[catalogue.name].append(outcome)
    finally:
        stack.stop_all()
    return SameImageReport(slots, runs, catalogues, outcomes, os.getloadavg())


FIGURES: list[tuple[str, Callable[[Outcome], float], str, str]] = [
    ("Fetches (GETs the image host answered)", lambda o: o.fetches, "{:.0f}", "fetches"),
    (
        "Compressions (outputs recorded, and those not kept)",
        lambda o: o.compressions,
        "{:.0f}",
        "compressions",
    ),
    ("Output objects stored", lambda o: o.stored, "{:.0f}", "stored"),
    ("Worker CPU, user + system", lambda o: o.cpu, "{:.2f} s", ""),
    ("Upload to completed", lambda o: o.wall, "{:.2f} s", ""),
]


def render_same_image_section(report: SameImageReport) -> str:
    base, repeated = report.expected[BASELINE], report.expected[REPEATED]
    lines = [
        f"| Per request of {report.slots} images, median of {report.runs} | {BASELINE} "
        f"| {REPEATED} | Ratio | Expected from the catalogues |",
        "| --- | --- | --- | --- | --- |",
    ]
    for title, figure, unit, expected in FIGURES:
        ours, theirs = report.median(REPEATED, figure), report.median(BASELINE, figure)
        ratio = f"{ours / theirs:.2f}x" if theirs else ""
        hoped = ""
        if expected:
            mine, whole = getattr(repeated, expected), getattr(base, expected)
            hoped = f"{mine} / {whole} = {mine / whole:.2f}x"
        lines.append(
            f"| {title} | {unit.format(theirs)} | {unit.format(ours)} | {ratio} | {hoped} |"
        )
    return "\n".join(lines)


def run_details(report: SameImageReport) -> str:
    extra = {name: sum(o.extra_attempts for o in runs) for name, runs in report.outcomes.items()}
    walls = "; ".join(
        f"{name}: " + ", ".join(f"{o.wall:.2f}" for o in runs) + " s"
        for name, runs in report.outcomes.items()
    )
    lags = sorted(lag for o in report.outcomes[REPEATED] for lag in o.copy_lags)
    within_a_second = sum(lag < 1.0 for lag in lags)
    load = ", ".join(f"{x:.2f}" for x in report.load)
    return (
        f"Each run, upload to completed: {walls}. Attempts beyond the first (each may have "
        f"compressed again), over all runs: {extra[BASELINE]} and {extra[REPEATED]}. A slot "
        f"that repeats a URL recorded its outcome {statistics.median(lags):.2f} s after its "
        f"original's (median over {len(lags)} copies; {within_a_second} within a second, the "
        f"slowest {lags[-1]:.2f} s). Load average (1, 5, 15 min) at the end: {load}."
    )


def same_image_markdown(report: SameImageReport) -> str:
    return f"{render_same_image_section(report)}\n\n{run_details(report)}\n\n{NOTES}\n"


NOTES = """\
How it was measured (`bench/same_image.py`, `python -m bench.run --only same-image`). Two
requests of 30 rows x 2 URLs, every image a photo-like 2000x1500 q90 JPEG served from loopback
with 50 ms latency, on the local profile (Firestore and Storage emulators, Redis, worker,
ticker, gateway), taking turns in the same run after a pair that warms the stack up. The
baseline names 60 distinct pictures. In the other, 18 slots (30%) repeat an earlier slot's URL:
one picture on every third row (a brand's banner) and 9 rows whose product photo is the
previous row's (variants), written as the same URL, with a fragment, or as `HTTP://` with
`/r/` escaped as `/%72/` (the same URL once normalised); 3 more slots (5%) are mirror URLs
serving the bytes of an earlier row's photo, fetched and compressed but not stored again. Its
other slots have the baseline's bytes, so each compression costs the same in both. Fetches are
what the image host served; output objects are listed in the Storage emulator; compressions
are the distinct outputs in the slots' recorded outcomes (a copy names its original's
output) plus those the worker logged as not kept (a mirror's, whose bytes another slot had
recorded); worker CPU is read from /proc for the worker's process group.

Why the CPU saves less than the compressions: a copied slot still costs its task, its reads
and its outcome's commit, and a copy whose original is still running comes back once more when
its original tells it (a `CopyImage` task). The time to completion: a slot that repeats a URL
is queued with the others and, when its original has no outcome yet, waits; the task that
records the original's outcome tells its first 100 repeats at once (the lag above), and only
those beyond them, or a repeat whose message was lost, look again by themselves (every 3 s,
or 30 s for one that will be told). A mirror is compressed like any image, and its outcome's
commit finds its bytes recorded: it copies that output and removes its own object. Before
repeats were told, this request took about twice the baseline's time (1.97x: each copy waited
out a 3 s look)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=RUNS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imgsvc-bench-") as tmp:
        report = same_image_benchmark(Path(tmp), args.runs)
    print(same_image_markdown(report))


if __name__ == "__main__":
    main()
