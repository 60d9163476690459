"""Celery tasks: the local stand-ins for Cloud Tasks targets and the Firestore trigger.

Each task decodes its arguments, calls one use case, and turns RetryLater into a delayed
re-queue. Start with: celery -A local_profile.worker worker -B -Q control,images
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from celery.signals import after_setup_logger, worker_process_init, worker_ready

from shared.adapters.local.celery_queue import (
    QUEUE_IMAGES,
    TASK_MATERIALIZE,
    TASK_PROCESS,
    TASK_RECOVER,
    TASK_RELEASE,
    TASK_SETTLED,
    TASK_WEBHOOK,
    CeleryTaskQueue,
    make_celery,
)
from shared.bootstrap import build_services
from shared.config import Settings, parse_duration
from shared.domain.errors import RetryLater
from shared.domain.task_payloads import slice_from_payload
from shared.usecases.deliver_webhook import deliver_webhook
from shared.usecases.finalize_request import on_image_settled
from shared.usecases.process_image import materialize_slice, process_image
from shared.usecases.recover_stalled import recover_stalled
from shared.usecases.services import Services

log = logging.getLogger(__name__)

settings = Settings.from_env()
VISIBILITY_TIMEOUT = parse_duration(os.environ.get("CELERY_VISIBILITY_TIMEOUT", "300"))
# A request with no progress for this long, while no image task is waiting, is taken up again.
STALL_AFTER = parse_duration(os.environ.get("STALL_AFTER", str(2 * VISIBILITY_TIMEOUT)))
app = make_celery(
    settings.redis_url,
    visibility_timeout=VISIBILITY_TIMEOUT,
    restore_interval=parse_duration(os.environ.get("CELERY_RESTORE_INTERVAL", "10")),
    recovery_interval=parse_duration(os.environ.get("RECOVERY_INTERVAL", "60")),
)

# Infrastructure hiccups (the emulator restarting, Redis blinking) are retried by Celery;
# the use cases themselves are idempotent, so running one again is always safe.
RETRY = {
    "autoretry_for": (Exception,),
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
    # The beat releases delayed tasks every second; one line per task would drown the log.
    for name in ("celery.app.trace", "celery.worker.strategy", "celery.beat"):
        logging.getLogger(name).setLevel(logging.WARNING)


@worker_ready.connect
def _announce_ready(**_: Any) -> None:
    ready_file = os.environ.get("IMGSVC_READY_FILE")
    if ready_file:
        Path(ready_file).write_text(str(os.getpid()))


@app.task(name=TASK_MATERIALIZE, **RETRY)
def materialize_slice_task(payload: dict[str, Any]) -> None:
    materialize_slice(services(), slice_from_payload(payload))


@app.task(name=TASK_PROCESS, bind=True, **RETRY)
def process_image_task(self: Any, request_id: str, image_id: str) -> None:
    # Redis hands a task out again when its worker died holding it; kombu marks it so.
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    try:
        process_image(services(), request_id, image_id, redelivered=redelivered)
    except RetryLater as later:
        log.info(
            "image %s/%s: retry in %.0fs (%s)",
            request_id,
            image_id,
            later.after_seconds,
            later.reason,
        )
        _queue().later(TASK_PROCESS, [request_id, image_id], QUEUE_IMAGES, later.after_seconds)


@app.task(name=TASK_SETTLED, **RETRY)
def image_settled_task(request_id: str, image_id: str) -> None:
    on_image_settled(services(), request_id, image_id)


@app.task(name=TASK_WEBHOOK, **RETRY)
def deliver_webhook_task(request_id: str) -> None:
    deliver_webhook(services(), request_id)


@app.task(name=TASK_RELEASE)
def release_due_task() -> None:
    _queue().release_due()


@app.task(name=TASK_RECOVER)
def recover_stalled_task() -> None:
    # While image tasks are waiting, a quiet request is queued, not stalled.
    if _queue().backlog() == 0:
        recover_stalled(services(), stalled_after=STALL_AFTER)
