"""The local worker's pool processes under load: one slow to come up is waited for, not killed.

A pool process builds its services before it tells the main process it is up. Celery kills
one that has not said so within `worker_proc_alive_timeout` (4 s by default) and starts
another, which a loaded machine kills the same way: the fault drill saw twenty replacements
killed in a row after the pool was SIGKILLed, and with every start that slow the pool would
never come back (nor after the supervisor's restart, for the same reason).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from local_profile.processes import stop_group
from local_profile.recipes import Stack
from shared.adapters.local.celery_queue import QUEUE_CONTROL, make_celery
from shared.config import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SLOW_START = 6.0  # above Celery's default of 4 s


def ran(client: redis.Redis, key: str, timeout: float) -> int | None:
    """The pid of the pool process that ran the probe `key`, once it has."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = client.get(key)
        if pid is not None:
            return int(pid)
        time.sleep(0.2)
    return None


def test_a_pool_process_slow_to_start_is_waited_for_and_runs_tasks(
    backing: Stack, tmp_path: Path
) -> None:
    url = backing.env["REDIS_URL"].rsplit("/", 1)[0] + "/8"
    client = redis.Redis.from_url(url)
    client.flushdb()
    log = tmp_path / "worker.log"
    env = {
        **os.environ,
        "REDIS_URL": url,
        "SLOW_START_SECONDS": str(SLOW_START),
        "PYTHONPATH": str(ROOT),
    }
    with open(log, "wb") as out:
        argv = [
            sys.executable, "-m", "celery", "-A", "tests.integration.slow_start_app",
            "worker", "-c", "1", "-Q", QUEUE_CONTROL, "--without-gossip",
            "--without-mingle", "--loglevel", "INFO",
        ]  # fmt: skip
        worker = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    app = make_celery(Settings(redis_url=url))
    try:
        app.send_task("probe", args=["first"], queue=QUEUE_CONTROL)
        first = ran(client, "first", 60)
        assert first is not None, log.read_text(errors="replace")[-2000:]
        # The pool process dies; the main process starts another, which is slow to come up.
        os.kill(first, signal.SIGKILL)
        app.send_task("probe", args=["second"], queue=QUEUE_CONTROL)
        second = ran(client, "second", 60)
    finally:
        stop_group(worker.pid, signal.SIGTERM, 10)
        client.flushdb()
    text = log.read_text(errors="replace")
    assert "Timed out waiting for UP message" not in text, text[-2000:]
    assert second is not None and second != first, text[-2000:]
