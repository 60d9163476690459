"""Health probes for `local_profile/supervise.py`: why a live process is not doing its job."""

from __future__ import annotations

import time

import redis

from shared.adapters.local.celery_queue import LAST_TASK_KEY, QUEUES
from shared.config import Settings


def worker_consuming(settings: Settings) -> str | None:
    """A Celery worker with tasks waiting for it that has begun none for a while is stuck:
    every task ends within a fetch's deadline and a compression, so with work queued some
    process begins a task at least that often."""
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
    waiting = sum(int(client.llen(queue)) for queue in QUEUES)
    if waiting == 0:
        return None
    raw = client.get(LAST_TASK_KEY)
    last = float(raw) if raw is not None else None
    idle = time.time() - last if last is not None else None
    if idle is None or idle > settings.worker_stuck_after:
        since = "ever" if idle is None else f"{idle:.0f}s"
        return f"{waiting} tasks waiting, none begun for {since}"
    return None
