"""The faults, each a scenario a user could live through: submit, suffer the fault at a moment
the scenario does not pick for convenience (a random point of the processing, or when the
system itself reaches a step: the receiver getting a POST, a retry being queued), and gather
what the user then sees (Lab.settle). checks.py judges it; the tests assert it, the drill
(bench/faults.py) measures it. Scenarios add what they alone expect to `Outcome.problems`.

Which profile each applies to, and why not the other:
- the worker's pool processes and its main process are the local profile's; in the cloud the
  process that dies mid-request is the `process_image` instance (functions-framework's
  gunicorn master and worker), which Cloud Run would replace: that is the cloud's
  `image_workers_killed`. There is no cloud counterpart of the worker's main process;
- the broker is Redis locally and the Cloud Tasks emulator in the cloud. gcloud-tasks-emulator
  (read, and run here) keeps its queues in memory, so a restart loses every queued and
  scheduled task; it starts again on the same port at once; it dispatches one task at a time
  per queue, with no timeout, and puts a dispatch that failed (any 4xx or 5xx, a refused or
  reset connection) at the back of its queue, retried at once and forever (no backoff);
- every other fault applies to both as it stands.

What was found about the processes a fault hits:
- Celery's pool processes die with their main process: celery.concurrency.prefork's
  process_initializer asks the kernel for SIGKILL on the parent's death (PR_SET_PDEATHSIG).
  `worker_main_killed` checks that none lives on as an orphan. The tasks they held stay
  unacknowledged in Redis until CELERY_VISIBILITY_TIMEOUT, unless the sweeper re-drives
  them first.
- A pool process killed alone is replaced by the main process, and its task, acknowledged
  late and rejected on a lost worker, is handed out again at once (marked redelivered).
- "Storage unreachable" is the emulator stopped (SIGSTOP of its process group, SIGCONT after):
  connections are accepted by the kernel and never answered, as a stalled server or a black
  hole would. Killing and restarting it would lose the uploaded CSVs: the stacks run it
  `--in-memory`, and its on-disk mode rewrites one JSON index of every object on each write,
  not atomically, so a kill can leave a store that no longer loads.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from local_profile import sample_images
from tests.e2e.faults.lab import Lab, Outcome
from tests.e2e.faults.poison import MARKER
from tests.e2e.faults.servers import HostileHost

# Enough images, slowly enough served, that a fault at a random point of the processing
# lands in its middle on either profile (the Cloud Tasks emulator dispatches one at a time).
BATCH = 16
LATENCY = 0.5


@cache
def photo(seed: int) -> bytes:
    return sample_images.photo_jpeg(320, 240, 85, seed=seed)


def _batch_host(lab: Lab) -> HostileHost:
    files = {f"/photo-{i}.jpg": photo(i) for i in range(BATCH)}
    return HostileHost(files, host=lab.loopback(), latency=LATENCY)


def _one_per_row(host: HostileHost) -> list[list[str]]:
    return [[host.url(path)] for path in sorted(host.files)]


def _at_random_point(lab: Lab, rng: random.Random, request_id: str) -> int:
    """Wait for a random point of the request's processing: some images settled, most not."""
    settled = rng.randint(1, BATCH // 2)
    lab.wait_settled(request_id, settled)
    time.sleep(rng.uniform(0.0, LATENCY))
    return settled


def _expect_in_progress(lab: Lab, outcome: Outcome, request_id: str, was: str) -> None:
    if was != "in progress":
        outcome.problems.append(f"the fault missed the request: it was already {was}")


def _expect_all_done(outcome: Outcome) -> None:
    for request_id, images in outcome.images.items():
        not_done = [(i["id"], i["state"], i["error"]) for i in images if i["state"] != "done"]
        if not_done:
            outcome.problems.append(f"{request_id}: images not done: {not_done}")


def image_workers_killed(lab: Lab, rng: random.Random) -> Outcome:
    with _batch_host(lab) as host:
        request_id = lab.submit(_one_per_row(host))
        settled = _at_random_point(lab, rng, request_id)
        killed = lab.kill_image_workers()
        fault_end = time.time()
        was = lab.status(request_id)["status"]
        outcome = lab.settle("image_workers_killed", [request_id], fault_end)
    outcome.notes.append(f"SIGKILLed {len(killed)} processes after {settled} images settled")
    _expect_in_progress(lab, outcome, request_id, was)
    _expect_all_done(outcome)
    return outcome


def image_workers_killed_while_storing(lab: Lab, rng: random.Random) -> Outcome:
    """The processes die while their outputs are being stored, between compressing and
    recording: nothing of theirs may hold up the image's next attempt (once, each held a
    claim on its bytes whose lease the next attempt waited out)."""
    with _batch_host(lab) as host:
        request_id = lab.submit(_one_per_row(host))
        settled = _at_random_point(lab, rng, request_id)
        lab.stop_storage()
        try:
            # The images being fetched now reach their store step and wait there.
            time.sleep(LATENCY + rng.uniform(0.5, 1.5))
            killed = lab.kill_image_workers()
        finally:
            lab.resume_storage()
        fault_end = time.time()
        was = lab.status(request_id)["status"]
        outcome = lab.settle("image_workers_killed_while_storing", [request_id], fault_end)
    outcome.notes.append(
        f"Storage stopped after {settled} images settled, then {len(killed)} processes "
        "SIGKILLed while they stored their outputs"
    )
    _expect_in_progress(lab, outcome, request_id, was)
    _expect_all_done(outcome)
    return outcome


def worker_main_killed(lab: Lab, rng: random.Random) -> Outcome:
    with _batch_host(lab) as host:
        request_id = lab.submit(_one_per_row(host))
        settled = _at_random_point(lab, rng, request_id)
        started = time.time()
        pool, survivors = lab.kill_worker_main()
        was = lab.status(request_id)["status"]
        outcome = lab.settle("worker_main_killed", [request_id], started)
    # Celery's pool processes ask the kernel for SIGKILL when their parent dies
    # (prctl PR_SET_PDEATHSIG in celery.concurrency.prefork.process_initializer): none may
    # live on as an orphan, still working outside its supervisor's reach.
    if survivors:
        outcome.problems.append(f"pool processes {survivors} outlived their main process")
    outcome.notes.append(
        f"main SIGKILLed after {settled} images settled; its {len(pool)} pool processes died "
        "with it; the supervisor started another worker"
    )
    _expect_in_progress(lab, outcome, request_id, was)
    _expect_all_done(outcome)
    return outcome


def broker_restarted_empty(lab: Lab, rng: random.Random) -> Outcome:
    with _batch_host(lab) as host:
        request_id = lab.submit(_one_per_row(host))
        settled = _at_random_point(lab, rng, request_id)
        lab.restart_queue_empty()
        fault_end = time.time()
        was = lab.status(request_id)["status"]
        outcome = lab.settle("broker_restarted_empty", [request_id], fault_end)
    outcome.notes.append(f"restarted empty after {settled} images settled")
    _expect_in_progress(lab, outcome, request_id, was)
    _expect_all_done(outcome)
    return outcome


def _small_request(lab: Lab, host: HostileHost, script: tuple[str, ...]) -> str:
    return lab.submit([[host.url(path)] for path in sorted(host.files)], script)


def _small_host(lab: Lab) -> HostileHost:
    return HostileHost({f"/small-{i}.jpg": photo(100 + i) for i in range(2)}, host=lab.loopback())


def broker_restarted_with_webhook_retry_waiting(lab: Lab, rng: random.Random) -> Outcome:
    with _small_host(lab) as host:
        request_id = _small_request(lab, host, ("503",))
        # The moment: the receiver has answered 503 and the retry waits in the queue.
        deadline = time.monotonic() + lab.pace.patience
        while not lab.webhook_retry_waiting(request_id):
            assert time.monotonic() < deadline, "the webhook retry was never queued"
            time.sleep(0.02)
        lab.restart_queue_empty()
        fault_end = time.time()
        outcome = lab.settle("broker_restarted_with_webhook_retry_waiting", [request_id], fault_end)
    outcome.notes.append("restarted empty while the retry after a 503 waited in it")
    _expect_all_done(outcome)
    return outcome


def webhook_sender_killed(lab: Lab, rng: random.Random) -> Outcome:
    with _small_host(lab) as host:
        request_id = _small_request(lab, host, ("hold",))
        held = lab.receiver.wait_arrival(lab.webhook_urls[request_id], 1, lab.pace.patience)
        killed = lab.kill_sender(held)
        held.sender_killed = True
        held.release.set()  # our 200 goes to a dead socket: nobody may count it
        fault_end = time.time()
        outcome = lab.settle("webhook_sender_killed", [request_id], fault_end)
    outcome.notes.append(f"SIGKILLed the sender (pid {killed}) while the receiver held its POST")
    if len(outcome.arrivals[request_id]) < 2:
        outcome.problems.append("the message was not sent again after its sender died")
    _expect_all_done(outcome)
    return outcome


def webhook_receiver_flaky(lab: Lab, rng: random.Random) -> Outcome:
    script = lab.pace.receiver_script
    with _small_host(lab) as host:
        request_id = _small_request(lab, host, script)
        outcome = lab.settle("webhook_receiver_flaky", [request_id], None)
    # The fault ends when the receiver's last failure is over: its last 503, or the sender's
    # timeout on its last hang.
    failures = [a for a in outcome.arrivals[request_id] if a.action != "ok"]
    timeout = lab.settings.webhook_timeout
    outcome.fault_end = max(a.at + (timeout if a.action == "hang" else 0) for a in failures)
    outcome.notes.append(f"the receiver answered {', '.join(script)}, then 200")
    if len(failures) != len(script):
        outcome.problems.append(f"{len(failures)} failed POSTs, the script had {len(script)}")
    _expect_all_done(outcome)
    return outcome


def storage_unreachable(lab: Lab, rng: random.Random) -> Outcome:
    with _batch_host(lab) as host:
        request_id = lab.submit(_one_per_row(host))
        settled = _at_random_point(lab, rng, request_id)
        later: list[str] = []
        lab.stop_storage()
        try:
            # A client uploading while Storage is away: its upload waits, then is accepted.
            upload = threading.Thread(target=lambda: later.append(lab.submit(_one_per_row(host))))
            upload.start()
            time.sleep(lab.pace.storage_outage)
        finally:
            lab.resume_storage()
        fault_end = time.time()
        upload.join(timeout=lab.pace.patience)
        if not later:
            raise AssertionError("the upload made during the outage was not accepted")
        outcome = lab.settle("storage_unreachable", [request_id, *later], fault_end)
    outcome.notes.append(
        f"Storage stopped (SIGSTOP) for {lab.pace.storage_outage:g}s after {settled} images "
        "settled, one upload made meanwhile"
    )
    _expect_all_done(outcome)
    return outcome


def image_hosts_hostile(lab: Lab, rng: random.Random) -> Outcome:
    behaviours: dict[str, list[str]] = {}
    for kind in ("hang", "trickle", "reset"):
        for n in range(2):
            behaviours[f"/{kind}-{n}.jpg"] = [kind] * rng.randint(1, 2)
    behaviours["/reset-always.jpg"] = ["reset"] * 1000
    files = {path: photo(200 + i) for i, path in enumerate([*behaviours, "/fine.jpg"])}
    with HostileHost(files, behaviours, host=lab.loopback(), hang=lab.pace.hang) as host:
        rows = [[host.url(p)] for p in sorted(behaviours) if p != "/reset-always.jpg"]
        # A failed image between two good ones leaves its slot empty, in place.
        rows.append([host.url("/fine.jpg"), host.url("/reset-always.jpg"), host.url("/fine.jpg")])
        request_id = lab.submit(rows)
        outcome = lab.settle("image_hosts_hostile", [request_id], None)
        outcome.fault_end = max(host.bad_until.values())
    attempts = lab.settings.image_max_attempts
    for image in outcome.images[request_id]:
        if image["input_url"].endswith("/reset-always.jpg"):
            error = image["error"] or {}
            gave_up = f"gave up after {attempts} attempts"
            if image["state"] != "failed" or gave_up not in (error.get("message") or ""):
                outcome.problems.append(f"the always-resetting image ended {image}")
        elif image["state"] != "done":
            outcome.problems.append(f"{image['input_url']} ended {image['state']}: {image}")
    outcome.notes.append(
        "hosts that hang, trickle or reset for their first 1-2 answers, one that always resets"
    )
    return outcome


def poison_image(lab: Lab, rng: random.Random) -> Outcome:
    files = {f"/good-{i}.jpg": photo(300 + i) for i in range(4)}
    poison = f"{MARKER}crash.jpg"
    files[poison] = photo(399)
    with HostileHost(files, host=lab.loopback()) as host:
        rows = [[host.url(p)] for p in sorted(files) if p != poison]
        rows.insert(rng.randint(0, len(rows)), [host.url(poison)])
        request_id = lab.submit(rows)
        outcome = lab.settle("poison_image", [request_id], None)
        # The fault never ends; measured from the last crash, the last fetch of the image.
        outcome.fault_end = host.last_hit[poison]
        crashes = host.hits[poison]
    attempts = lab.settings.image_max_attempts
    expected = f"gave up after {attempts} attempts; the worker died while processing it"
    for image in outcome.images[request_id]:
        if MARKER in image["input_url"]:
            error = image["error"] or {}
            if (
                image["state"] != "failed"
                or error.get("code") != "worker_lost"
                or not (error.get("message") or "").startswith(expected)
                or image["attempts"] != attempts
            ):
                outcome.problems.append(f"the poison image ended {image}")
        elif image["state"] != "done":
            outcome.problems.append(f"{image['input_url']} ended {image['state']}: {image}")
    outcome.notes.append(f"the image killed its process {crashes} times")
    return outcome


@dataclass(frozen=True)
class Scenario:
    key: str
    # How the drill's table names the fault, per profile.
    fault: dict[str, str]
    run: Callable[[Lab, random.Random], Outcome]

    @property
    def profiles(self) -> tuple[str, ...]:
        return tuple(self.fault)


SCENARIOS = [
    Scenario(
        "image_workers_killed",
        {
            "local": "every worker pool process SIGKILLed mid-request",
            "cloud": "the process_image instance SIGKILLed mid-request",
        },
        image_workers_killed,
    ),
    Scenario(
        "image_workers_killed_while_storing",
        {
            "local": "every worker pool process SIGKILLed while storing its output",
            "cloud": "the process_image instance SIGKILLed while storing its output",
        },
        image_workers_killed_while_storing,
    ),
    Scenario(
        "worker_main_killed",
        {"local": "the worker's main process SIGKILLed mid-request"},
        worker_main_killed,
    ),
    Scenario(
        "broker_restarted_empty",
        {
            "local": "Redis restarted empty mid-request",
            "cloud": "the Cloud Tasks emulator restarted empty mid-request",
        },
        broker_restarted_empty,
    ),
    Scenario(
        "broker_restarted_with_webhook_retry_waiting",
        {
            "local": "Redis restarted empty while a webhook retry waits in it",
            "cloud": "the Cloud Tasks emulator restarted empty while a webhook retry waits in it",
        },
        broker_restarted_with_webhook_retry_waiting,
    ),
    Scenario(
        "webhook_sender_killed",
        {
            "local": "the webhook's sender SIGKILLed during its POST",
            "cloud": "the webhook's sender SIGKILLed during its POST",
        },
        webhook_sender_killed,
    ),
    Scenario(
        "webhook_receiver_flaky",
        {
            "local": "the receiver answers 503s, then times out, then 200",
            "cloud": "the receiver answers 503s, then times out, then 200",
        },
        webhook_receiver_flaky,
    ),
    Scenario(
        "storage_unreachable",
        {
            "local": "the Storage emulator stopped for some seconds",
            "cloud": "the Storage emulator stopped for some seconds",
        },
        storage_unreachable,
    ),
    Scenario(
        "image_hosts_hostile",
        {
            "local": "image hosts that hang, trickle or reset mid-body",
            "cloud": "image hosts that hang, trickle or reset mid-body",
        },
        image_hosts_hostile,
    ),
    Scenario(
        "poison_image",
        {
            "local": "an image that kills its worker process on every attempt",
            "cloud": "an image that kills its instance's process on every attempt",
        },
        poison_image,
    ),
]


def for_profile(profile: str) -> list[Scenario]:
    return [s for s in SCENARIOS if profile in s.profiles]
