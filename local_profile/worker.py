"""The Celery task: the local stand-in for Cloud Tasks' targets and the Firestore trigger.

Every queued message arrives as the one task `imgsvc.run`, which decodes it and hands it to
the task handler (`shared.entrypoints.tasks`) that Cloud Tasks' targets use too, and turns
RetryLater into a delayed re-queue. No beat runs in the worker: releasing delayed work and
sweeping are the ticker's (`local_profile/ticker.py`), a process of its own, so that the death
of the worker's children cannot take them along. Start with:
celery -A local_profile.worker worker -Q control,images
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from celery.signals import after_setup_logger, task_prerun, worker_process_init, worker_ready

from shared.adapters.local.celery_queue import TASK_RUN, CeleryTaskQueue, make_celery
from shared.bootstrap import build_services
from shared.config import Settings
from shared.domain.errors import RetryLater
from shared.domain.messages import MalformedMessage, from_payload
from shared.entrypoints.tasks import handle
from shared.usecases.services import Services

log = logging.getLogger(__name__)

settings = Settings.from_env()
app = make_celery(settings)

# Infrastructure hiccups (the emulator restarting, Redis blinking) are retried by Celery;
# the use cases themselves are idempotent, so running one again is always safe.
RETRY = {
    "autoretry_for": (Exception,),
    # A message no kind reads is a bug; retrying it would only repeat the error.
    "dont_autoretry_for": (MalformedMessage,),
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 30,
}

_services: Services | None = None


def services() -> Services:
    # Built lazily in each worker process: gRPC channels opened before the fork would hang.
    global _services  # noqa: PLW0603
    if _services is None:
        _services = build_services(settings)
    return _services


def _queue() -> CeleryTaskQueue:
    queue = services().queue
    assert isinstance(queue, CeleryTaskQueue)
    return queue


@worker_process_init.connect
def _build_services_in_child(**_: Any) -> None:
    # Connect before the first task arrives, so the first image does not pay for it.
    global _services  # noqa: PLW0603
    _services = None
    services()


@after_setup_logger.connect
def _quiet_per_task_lines(**_: Any) -> None:
    for name in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(name).setLevel(logging.WARNING)


@worker_ready.connect
def _announce_ready(**_: Any) -> None:
    ready_file = os.environ.get("IMGSVC_READY_FILE")
    if ready_file:
        Path(ready_file).write_text(str(os.getpid()))


@task_prerun.connect
def _note_progress(**_: Any) -> None:
    # What the worker's health probe reads: a worker that is alive but takes nothing from
    # non-empty queues (seen after a broker restart) is restarted by its supervisor.
    _queue().task_began()


@app.task(name=TASK_RUN, bind=True, **RETRY)
def run_task(self: Any, payload: dict[str, Any]) -> None:
    message = from_payload(payload)
    # Redis hands a task out again when its worker died holding it; kombu marks it so.
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    try:
        handle(services(), message, redelivered=redelivered)
    except RetryLater as later:
        log.info(
            "%s %s: retry in %.0fs (%s)",
            message.KIND,
            message.dedup_key() or "",
            later.after_seconds,
            later.reason,
        )
        services().queue.send([message], delay_seconds=later.after_seconds)
