"""The bounds docs/decisions.md promises ("The sweeper", "Bounds"), from the default settings.

The promise (issue 8): a request hit by any fault completes within 2 minutes of the fault's
end; its webhook within that plus what the retry schedule makes it wait. After a fault, the
work it interrupted waits on one of these (a sweep, a visibility timeout, a lease its dead
holder never gave back), then one more attempt runs: each wait, made of settings, must leave
that attempt room within the promise. `make bench`'s fault drill (bench/faults.py) measures the
real thing on both profiles; this keeps a default from moving past the promise unnoticed (the
drill found a worker's main process killed taking 154 s while the tasks it held waited out a
300 s visibility timeout). Nothing taken before compressing an image's bytes is among the
waits: their record is created only with the outcome (the fault tests'
`image_workers_killed_while_storing`).

Production sweeps every 30 s too: Cloud Scheduler's job each minute, whose message asks for
one more sweep half a minute later (deploy.sh, checked by tests/test_deploy.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shared.bootstrap import SLOT_LEASE_MARGIN
from shared.config import Settings
from shared.usecases.deliver_webhook import LEASE_MARGIN

PROMISE = 120.0

D = Settings()
IMAGE_ATTEMPT = D.fetch.total_timeout  # a fetch's deadline; compressing a picture is seconds
WEBHOOK_ATTEMPT = D.webhook_timeout

# path -> (the longest it waits before its work can run again, the attempt that follows)
WAITS = {
    # A message lost (a broker restarted empty, a process dead before queueing the next
    # step): the sweeper re-drives the request once it has not moved for STALL_AFTER.
    "a lost message": (D.stall_after + D.sweep_interval, IMAGE_ATTEMPT),
    # A task held by a worker whose main process died: Redis hands it out again once its
    # visibility timeout has passed, at kombu's next look.
    "a task held by a dead worker": (
        D.celery_visibility_timeout + D.celery_restore_interval,
        IMAGE_ATTEMPT,
    ),
    # A fetch slot held by a process killed mid-fetch frees itself when its lease ends.
    "a fetch slot held by a dead process": (
        D.fetch.total_timeout + SLOT_LEASE_MARGIN,
        IMAGE_ATTEMPT,
    ),
    # A webhook retry lost with the broker: queued again once overdue by SWEEP_GRACE.
    "a lost webhook retry, after its due time": (
        D.sweep_grace + D.sweep_interval,
        WEBHOOK_ATTEMPT,
    ),
    # A webhook attempt whose sender died: its claim runs out.
    "a webhook attempt whose sender died": (D.webhook_timeout + LEASE_MARGIN, WEBHOOK_ATTEMPT),
}


@pytest.mark.parametrize("path", sorted(WAITS))
def test_each_recovery_leaves_its_next_attempt_room_within_the_promise(path: str) -> None:
    wait, attempt = WAITS[path]
    assert wait + attempt <= PROMISE, f"{path}: waits {wait:g} s, then up to {attempt:g} s"


def test_production_sweeps_as_often_as_the_bounds_assume() -> None:
    """Cloud Scheduler's job runs each minute; the half-minute follower its message asks for
    keeps both gaps within SWEEP_INTERVAL, which the waits above are made of."""
    deploy = (Path(__file__).resolve().parents[2] / "deploy.sh").read_text()
    body = re.search(r"--message-body='([^']*)'", deploy)
    assert body is not None
    again_in = json.loads(body.group(1))["again_in"]
    assert "--schedule='* * * * *'" in deploy
    assert max(again_in, 60 - again_in) <= D.sweep_interval
