"""Queued work in, one use case called: the handler of every kind of message.

Every queue delivers here: Cloud Tasks through the `process_image` function (JSON over HTTP)
and the `finalize` function (CloudEvents), Celery through `local_profile/worker.py`. A message
is a hint (`shared.domain.messages`): each use case reads Firestore before it acts, so a
duplicate, late or reordered message changes nothing.
"""

from __future__ import annotations

import logging
from typing import Any, assert_never

from shared import logs
from shared.domain.errors import RetryLater
from shared.domain.messages import (
    CopyImage,
    DeliverWebhook,
    MalformedMessage,
    MaterializeSlice,
    Message,
    ProcessImage,
    ShardSettled,
    Sweep,
    from_payload,
)
from shared.entrypoints.http_api import ApiResponse, error, internal_error
from shared.usecases.deliver_webhook import deliver_webhook
from shared.usecases.fan_out import materialize_slice
from shared.usecases.finalize_request import on_shard_settled
from shared.usecases.process_image import process_image
from shared.usecases.services import Services
from shared.usecases.sweep import sweep

log = logging.getLogger(__name__)


@logs.about_work
def handle(services: Services, message: Message, *, redelivered: bool = False) -> dict[str, Any]:
    """Run the use case for `message` and say what came of it. Raises RetryLater when the
    same message should come back later.

    `redelivered` says the platform handed this message out again (its worker may have died
    holding it)."""
    match message:
        case MaterializeSlice(image_slice, round_):
            materialize_slice(services, image_slice, round_=round_)
            return {"materialized": len(image_slice.jobs)}
        case ProcessImage(request_id, image_id, round_):
            # A re-driven image, like a redelivered task, may follow an attempt whose worker
            # died in it: its attempt is counted before the work.
            count_first = redelivered or round_ > 0
            state = process_image(services, request_id, image_id, count_first=count_first)
            return {"state": state.value}
        case CopyImage(request_id, image_id):
            return {"state": process_image(services, request_id, image_id).value}
        case ShardSettled(request_id, _shard):
            return {"finalized": on_shard_settled(services, request_id)}
        case DeliverWebhook(request_id):
            delivered = deliver_webhook(services, request_id)
            return {"webhook": delivered.value if delivered else None}
        case Sweep(again_in):
            report = sweep(services, again_in=again_in)
            return {"looked_at": report.looked_at, "redriven": len(report.redriven)}
        case _:
            assert_never(message)


def run_task(services: Services, payload: object, *, redelivered: bool) -> ApiResponse:
    """A Cloud Tasks task, as the `process_image` function answers it.

    2xx ends the task (an image that failed for good is a finished task: its failure is
    recorded); 503 asks Cloud Tasks to try again with the queue's backoff.
    """
    try:
        return ApiResponse(200, handle(services, from_payload(payload), redelivered=redelivered))
    except RetryLater as later:
        return ApiResponse(
            503,
            {"retry": later.reason},
            {"Retry-After": str(max(1, round(later.after_seconds)))},
        )
    except MalformedMessage as exc:
        # A malformed task is a bug: 400 so it shows, and the queue's attempt limit ends it.
        log.error("malformed task: %s", exc)
        return error(400, "malformed_task", str(exc))
    except Exception:
        return internal_error("task")
