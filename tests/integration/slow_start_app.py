"""A test-only Celery app: the local worker's configuration (shared.adapters.local.celery_queue)
with pool processes that take SLOW_START_SECONDS to come up, as the real worker's do on a
loaded machine (each builds its Firestore and Storage clients and its codec first), and one
task that says which process ran it."""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery.signals import worker_process_init

from shared.adapters.local.celery_queue import make_celery
from shared.config import Settings

settings = Settings.from_env()
app = make_celery(settings)


@worker_process_init.connect
def _start_slowly(**_: Any) -> None:
    time.sleep(float(os.environ["SLOW_START_SECONDS"]))


@app.task(name="probe")
def probe(key: str) -> None:
    redis.Redis.from_url(settings.redis_url).set(key, os.getpid())
