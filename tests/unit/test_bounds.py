"""The bounds docs/decisions.md promises ("The sweeper", "Bounds"), from the default settings.

The promise (issue 8): a request hit by any fault completes within 2 minutes of the fault's
end; its webhook within that plus what the retry schedule makes it wait. Each recovery path
has a worst case made of settings; with the defaults each must fit. `make bench`'s fault drill
(bench/faults.py) measures the real thing on both profiles; this keeps a default from being
moved past the promise unnoticed (the drill found a worker's main process killed taking
154 s while a dead worker's tasks waited out a visibility timeout of 300 s).
"""

from __future__ import annotations

import pytest

from shared.bootstrap import SLOT_LEASE_MARGIN
from shared.config import Settings

PROMISE = 120.0
SCHEDULER_EVERY = 60.0  # production's Cloud Scheduler job (deploy.sh)

DEFAULTS = Settings()

WORST_CASES = {
    # A message lost (a broker restarted empty, a process dead before queueing the next
    # step): the sweeper re-drives the request once it has not moved for STALL_AFTER.
    "a lost message, locally": DEFAULTS.stall_after + DEFAULTS.sweep_interval,
    "a lost message, in production": DEFAULTS.stall_after + SCHEDULER_EVERY,
    # A task held by a worker whose main process died: Redis hands it out again once its
    # visibility timeout has passed, at the next restore.
    "a task held by a dead worker": (
        DEFAULTS.celery_visibility_timeout + DEFAULTS.celery_restore_interval
    ),
    # A fetch slot held by a process killed mid-fetch frees itself when its lease ends.
    "a fetch slot held by a dead process": DEFAULTS.fetch.total_timeout + SLOT_LEASE_MARGIN,
    # A webhook retry lost with the broker: queued again once overdue by SWEEP_GRACE.
    "a lost webhook retry, after its due time": DEFAULTS.sweep_grace + DEFAULTS.sweep_interval,
}


@pytest.mark.parametrize("path", sorted(WORST_CASES))
def test_each_recovery_path_fits_the_promise_with_the_default_settings(path: str) -> None:
    assert WORST_CASES[path] <= PROMISE, f"{path}: {WORST_CASES[path]:g} s"
