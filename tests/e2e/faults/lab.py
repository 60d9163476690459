"""A stack of the fault suite's own, for one profile, and the faults it can suffer.

The suite (and the drill) kills and restarts what it runs: its own Redis, Storage emulator,
Cloud Tasks emulator, worker, ticker, gateway and functions, under a Google project and
buckets of its own. Only the Firestore emulator may be borrowed from the test session (no
fault touches it), so killing anything here never disturbs another test.
"""

from __future__ import annotations

import functools
import json
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests

from local_profile.recipes import LOOPBACK_NETWORKS, Stack, create_buckets, new_webhook_secret
from shared.adapters.local.celery_queue import DELAYED_KEY
from shared.config import Settings
from tests.e2e.faults import processes
from tests.e2e.faults.servers import Arrival, Receiver

HERE = Path(__file__).resolve().parent
POISON_WORKER = "tests.e2e.faults.poison_worker"
POISON_FUNCTION = HERE / "poison.py"
PROFILES = ("local", "cloud")

_D = Settings()
# The settings the drill measures: every one that moves a recovery, pinned to its default so
# that nothing in the caller's environment can shorten what is measured.
DEFAULT_SETTINGS = {
    "CELERY_VISIBILITY_TIMEOUT": f"{_D.celery_visibility_timeout:g}",
    "CELERY_RESTORE_INTERVAL": f"{_D.celery_restore_interval:g}",
    "STALL_AFTER": f"{_D.stall_after:g}",
    "SWEEP_INTERVAL": f"{_D.sweep_interval:g}",
    "SWEEP_GRACE": f"{_D.sweep_grace:g}",
    "WEBHOOK_RETRY_SCHEDULE": ",".join(f"{s:g}" for s in _D.webhook_retry_schedule),
    "WEBHOOK_TIMEOUT": f"{_D.webhook_timeout:g}",
    "FETCH_TOTAL_TIMEOUT": f"{_D.fetch.total_timeout:g}",
    "FETCH_CONNECT_TIMEOUT": f"{_D.fetch.connect_timeout:g}",
    "FETCH_RETRIES": str(_D.fetch.retries),
    "FETCH_RETRY_BACKOFF": f"{_D.fetch.retry_backoff:g}",
    "IMAGE_MAX_ATTEMPTS": str(_D.image_max_attempts),
    "WORKER_STUCK_AFTER": f"{_D.worker_stuck_after:g}",
}
# The tests' settings, in the style of tests/conftest.py: every recovery path within seconds.
QUICK_SETTINGS = {
    "CELERY_VISIBILITY_TIMEOUT": "8",
    "CELERY_RESTORE_INTERVAL": "1",
    "STALL_AFTER": "6",
    "SWEEP_INTERVAL": "1",
    "SWEEP_GRACE": "3",
    # The first step leaves a retry waiting long enough for a test to restart the broker
    # under it; the rest are quick.
    "WEBHOOK_RETRY_SCHEDULE": "3s,1s,1s,1s,1s,1s",
    "WEBHOOK_TIMEOUT": "2s",
    "FETCH_TOTAL_TIMEOUT": "3s",
    "FETCH_CONNECT_TIMEOUT": "1s",
    "FETCH_RETRIES": "2",
    "FETCH_RETRY_BACKOFF": "100ms",
    "IMAGE_MAX_ATTEMPTS": "3",
    "WORKER_STUCK_AFTER": "10s",
}


@dataclass(frozen=True)
class Pace:
    """What differs between the tests and the drill: the settings, and how long to wait."""

    name: str
    settings: Mapping[str, str]
    # How long a request may take to end (and its webhook to be accepted) after its fault.
    patience: float
    # How long the Storage emulator stays unreachable.
    storage_outage: float
    # The flaky receiver's script before it answers 200 (the drill's is shorter: each step
    # of the default schedule is minutes to hours).
    receiver_script: tuple[str, ...]
    # How long after a request settles a duplicate webhook would have arrived.
    quiet: float
    worker_concurrency: int | None

    @property
    def hang(self) -> float:
        """How long a hanging host or receiver holds a connection: past every deadline."""
        s = Settings.from_env(dict(self.settings))
        return max(s.fetch.total_timeout, s.webhook_timeout) + 2.0


QUICK = Pace(
    name="quick",
    settings=QUICK_SETTINGS,
    patience=90.0,
    storage_outage=4.0,
    receiver_script=("503", "503", "503", "hang"),
    quiet=2.0,
    worker_concurrency=4,
)
DEFAULTS = Pace(
    name="defaults",
    settings=DEFAULT_SETTINGS,
    patience=900.0,
    storage_outage=20.0,
    receiver_script=("503", "hang"),
    quiet=5.0,
    worker_concurrency=None,
)


def lab_env(profile: str, pace: Pace) -> dict[str, str]:
    return {
        "GOOGLE_CLOUD_PROJECT": f"demo-imgsvc-faults-{profile}",
        "UPLOADS_BUCKET": f"faults-{profile}-uploads",
        "OUTPUTS_BUCKET": f"faults-{profile}-outputs",
        "TASK_BACKEND": "celery",  # the cloud profile's functions get cloudtasks
        "FETCH_ALLOWED_NETWORKS": LOOPBACK_NETWORKS,
        "FETCH_DNS": "off",
        "WEBHOOK_SECRET": new_webhook_secret(),
        "LOG_LEVEL": "INFO",
        **pace.settings,
    }


class Watcher:
    """Reads the status details of the requests it follows, twice a second, as a user's page
    would, and keeps what it saw: an image's first outcome (state, output, error) must never
    change afterwards, and the count of settled images must never go backwards."""

    def __init__(self, base_url: str, interval: float = 0.5) -> None:
        self.base_url = base_url
        self.interval = interval
        self.first: dict[tuple[str, str], tuple[str, str | None, str | None]] = {}
        self.violations: dict[str, list[str]] = {}
        self.reads: dict[str, int] = {}
        self._settled: dict[str, int] = {}
        self._following: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def follow(self, request_id: str) -> None:
        with self._lock:
            self._following.add(request_id)
            self.violations.setdefault(request_id, [])

    def stop_following(self, request_id: str) -> list[str]:
        self.look(request_id)  # once more, at the end
        with self._lock:
            self._following.discard(request_id)
            return list(self.violations.get(request_id, []))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.wait(self.interval):
            with self._lock:
                following = sorted(self._following)
            for request_id in following:
                self.look(request_id, session)

    def look(self, request_id: str, session: Any = requests) -> None:
        try:
            answer = session.get(
                f"{self.base_url}/status/{request_id}",
                params={"details": "1", "page_size": "500"},
                timeout=10,
            )
        except requests.RequestException:
            return  # a stalled emulator behind the status API: the next look will tell
        if answer.status_code != 200:
            return
        body = answer.json()
        with self._lock:
            self.reads[request_id] = self.reads.get(request_id, 0) + 1
            problems = self.violations.setdefault(request_id, [])
            progress = body["progress"]
            settled = progress["done"] + progress["failed"]
            if settled < self._settled.get(request_id, 0):
                problems.append(
                    f"progress went backwards: {self._settled[request_id]} -> {settled} settled"
                )
            self._settled[request_id] = max(settled, self._settled.get(request_id, 0))
            for image in body.get("images", []):
                if image["state"] == "pending":
                    continue
                seen = (
                    image["state"],
                    image["output_url"],
                    (image["error"] or {}).get("code"),
                )
                key = (request_id, image["id"])
                first = self.first.setdefault(key, seen)
                if first != seen:
                    problems.append(f"image {image['id']} was {first}, is now {seen}")


@dataclass
class Outcome:
    """What a user can see of the requests of one scenario once it is over."""

    scenario: str
    profile: str
    settings: Settings
    request_ids: list[str]
    # When the fault ended (time.time()); None for one that never ends (the poison image).
    fault_end: float | None
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    images: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    webhooks: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    csv_rows: dict[str, list[list[str]]] = field(default_factory=dict)
    arrivals: dict[str, list[Arrival]] = field(default_factory=dict)
    watched: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # What the scenario itself expected and did not see (beside checks.py's invariants).
    problems: list[str] = field(default_factory=list)


HEADER = "Serial Number,Product Name,Input Image Urls\n"


class Lab:
    """One profile's stack of the fault suite's own, its receiver and its watcher."""

    def __init__(self, profile: str, stack: Stack, pace: Pace, receiver: Receiver) -> None:
        self.profile = profile
        self.stack = stack
        self.pace = pace
        self.receiver = receiver
        self.settings = Settings.from_env(stack.env)
        self.watcher = Watcher(stack.base_url)
        self.webhook_urls: dict[str, str] = {}
        self._hosts = 1

    def loopback(self) -> str:
        """A loopback address no other scenario's image host uses: fetch slots are counted
        per host (FETCH_MAX_PER_HOST), and a worker killed mid-fetch keeps its slot until
        the slot's lease ends, which must not slow the next scenario down."""
        self._hosts += 1
        return f"127.0.0.{self._hosts}"

    @classmethod
    def start(
        cls, profile: str, run_dir: Path, pace: Pace, firestore_host: str | None = None
    ) -> Lab:
        """`firestore_host`: a Firestore emulator to borrow (the test session's); without it
        the lab starts its own."""
        if profile not in PROFILES:
            raise ValueError(f"profile is one of {PROFILES}, not {profile!r}")
        stack = Stack(run_dir, lab_env(profile, pace))
        receiver = Receiver(stack.env["WEBHOOK_SECRET"], hang=pace.hang).__enter__()
        try:
            if firestore_host:
                stack.env["FIRESTORE_EMULATOR_HOST"] = firestore_host
            else:
                stack.start_firestore()
            stack.start_storage()
            create_buckets(stack.env)
            if profile == "local":
                stack.start_redis()
                stack.start_worker(pace.worker_concurrency, app=POISON_WORKER)
                stack.start_ticker()
                stack.start_gateway()
            else:
                stack.start_cloud_profile(sources={"process_image": POISON_FUNCTION})
        except BaseException:
            stack.stop_all()
            receiver.__exit__(None, None, None)
            raise
        return cls(profile, stack, pace, receiver)

    def close(self) -> None:
        self.watcher.close()
        # A fault that failed half-way must not leave the Storage emulator stopped.
        if "storage" in self.stack.services:
            processes.signal_group(self.stack, "storage", signal.SIGCONT)
        self.stack.stop_all()
        self.receiver.__exit__(None, None, None)

    @property
    def base_url(self) -> str:
        return self.stack.base_url

    # Requests, as a client makes and follows them.

    def submit(self, rows: Sequence[Sequence[str]], script: Sequence[str] = ()) -> str:
        """Upload a CSV with one row per entry of `rows` (its image URLs) and a webhook URL
        of the receiver's that follows `script`; the watcher follows the request."""
        lines = [f'{n},Item {n},"{",".join(urls)}"' for n, urls in enumerate(rows, start=1)]
        url = self.receiver.url(script)
        answer = requests.post(
            f"{self.base_url}/upload",
            files={"file": ("products.csv", (HEADER + "\n".join(lines)).encode(), "text/csv")},
            data={"webhook_url": url},
            timeout=self.pace.storage_outage + 60,
        )
        assert answer.status_code == 202, answer.text
        request_id: str = answer.json()["request_id"]
        self.watcher.follow(request_id)
        self.webhook_urls[request_id] = url
        return request_id

    def status(self, request_id: str) -> dict[str, Any]:
        answer = requests.get(f"{self.base_url}/status/{request_id}", timeout=30)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def wait_settled(self, request_id: str, count: int) -> dict[str, Any]:
        """Wait until `count` of the request's images have an outcome (the moment a fault is
        injected at is the system's own progress, not a time the test picks)."""
        deadline = time.monotonic() + self.pace.patience
        while time.monotonic() < deadline:
            status = self.status(request_id)
            progress = status["progress"]
            if progress["done"] + progress["failed"] >= count:
                return status
            time.sleep(0.05)
        raise AssertionError(f"{request_id}: fewer than {count} images settled in time")

    def settle(self, scenario: str, request_ids: list[str], fault_end: float | None) -> Outcome:
        """Wait for every request to end and its webhook to be accepted (or given up), then
        gather what a user sees of them."""
        deadline = time.monotonic() + self.pace.patience
        outcome = Outcome(scenario, self.profile, self.settings, list(request_ids), fault_end)
        for request_id in request_ids:
            while True:
                status = self.status(request_id)
                if status["status"] != "in progress":
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"{request_id} still in progress: {status}")
                time.sleep(0.2)
            outcome.statuses[request_id] = status
        for request_id in request_ids:
            while not any(a.accepted for a in self.receiver.for_request(request_id)):
                webhook = self.details(request_id)["webhook"]
                if webhook is not None and webhook["state"] != "pending":
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"{request_id}: no webhook accepted, {webhook}")
                time.sleep(0.2)
        time.sleep(self.pace.quiet)  # a duplicate would have arrived by now
        for request_id in request_ids:
            details = self.details(request_id)
            outcome.images[request_id] = details["images"]
            outcome.webhooks[request_id] = details["webhook"]
            # Every POST to the request's webhook URL, whatever webhook-id it carried.
            webhook = details["webhook"]
            outcome.arrivals[request_id] = (
                self.receiver.at_url(webhook["url"])
                if webhook
                else self.receiver.for_request(request_id)
            )
            outcome.watched[request_id] = self.watcher.stop_following(request_id)
            csv_url = outcome.statuses[request_id].get("csv_url")
            if csv_url:
                outcome.csv_rows[request_id] = read_csv(csv_url)
        return outcome

    def details(self, request_id: str) -> dict[str, Any]:
        """Every image (following the pages) and the webhook delivery."""
        images: list[dict[str, Any]] = []
        token = None
        while True:
            params = {"details": "1", "page_size": "500"}
            if token:
                params["page_token"] = token
            answer = requests.get(f"{self.base_url}/status/{request_id}", params=params, timeout=30)
            assert answer.status_code == 200, answer.text
            body: dict[str, Any] = answer.json()
            images += body["images"]
            token = body["next_page_token"]
            if not token:
                body["images"] = images
                return body

    # Faults.

    def kill_image_workers(self) -> list[int]:
        """What processes the images dies at once. Locally: every process the worker's main
        process forked (its pool), which the main process replaces. In the cloud: the
        process_image instance (functions-framework's gunicorn, master and worker), which
        its supervisor replaces as Cloud Run would."""
        if self.profile == "local":
            doomed = processes.descendants(self.stack.child_pid("worker"))
        else:
            instance = self.stack.child_pid("fn-process_image")
            doomed = [instance, *processes.descendants(instance)]
        killed = processes.kill(self.stack, doomed)
        assert killed, "no process to kill"
        return killed

    def kill_worker_main(self) -> tuple[list[int], list[int]]:
        """SIGKILL the local worker's main process (its supervisor starts another). Returns
        its pool processes, and those of them still alive a few seconds later."""
        main = self.stack.child_pid("worker")
        pool = processes.descendants(main)
        assert processes.kill(self.stack, [main]) == [main]
        survivors = processes.wait_gone(pool, 5.0)
        ready = self.stack.run_dir / "worker.ready"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = ready.read_text().strip() if ready.exists() else ""
            if now and int(now) != main and processes.alive(int(now)):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the worker was not restarted by its supervisor")
        return pool, survivors

    def restart_queue_empty(self) -> None:
        """Kill the broker (locally the suite's Redis; in the cloud the Cloud Tasks emulator)
        and start it again, empty, where it was."""
        if self.profile == "local":
            port = int((self.stack.services["redis"].url or "").rsplit(":", 1)[1].split("/")[0])
            self.stack.stop("redis", sig=signal.SIGKILL)
            self.stack.start_redis(port)
        else:
            port = int(self.stack.env["CLOUD_TASKS_EMULATOR_HOST"].rsplit(":", 1)[1])
            self.stack.stop("tasks", sig=signal.SIGKILL)
            self.stack.start_tasks_emulator(port)

    def webhook_retry_waiting(self, request_id: str) -> bool:
        """Whether the request's next webhook attempt waits in the queue: the local delayed
        set, or a scheduled task of the Cloud Tasks emulator's webhooks queue."""
        if self.profile == "local":
            broker = redis.Redis.from_url(self.stack.env["REDIS_URL"])
            members = [json.loads(m)["payload"] for m in broker.zrange(DELAYED_KEY, 0, -1)]
            return any(
                p.get("kind") == "deliver_webhook" and p.get("request_id") == request_id
                for p in members
            )
        settings = self.settings
        queue = (
            f"projects/{settings.project}/locations/{settings.cloud_tasks_location}"
            f"/queues/{settings.cloud_tasks_webhook_queue}"
        )
        tasks = self._tasks_client().list_tasks(parent=queue)
        return any(request_id.encode() in task.http_request.body for task in tasks)

    @functools.cache  # noqa: B019 (one client per lab, for the lab's life)
    def _tasks_client(self) -> Any:
        from shared.adapters.gcp.cloud_tasks_queue import _client

        return _client(self.settings)

    def stop_storage(self) -> None:
        """The Storage emulator stops answering (SIGSTOP): connections wait unanswered."""
        processes.signal_group(self.stack, "storage", signal.SIGSTOP)

    def resume_storage(self) -> None:
        processes.signal_group(self.stack, "storage", signal.SIGCONT)

    def kill_sender(self, arrival: Arrival) -> list[int]:
        """SIGKILL the process at the other end of a POST the receiver holds open."""
        owners = processes.connection_owners(arrival.sender_port, self.receiver.port)
        killed = processes.kill(self.stack, owners)
        assert killed, f"no process of the stack sends from port {arrival.sender_port}"
        return killed


def read_csv(url: str) -> list[list[str]]:
    import csv
    import io

    answer = requests.get(url, timeout=30)
    assert answer.status_code == 200, url
    return list(csv.reader(io.StringIO(answer.content.decode("utf-8-sig"), newline="")))
