"""Deliver a request's webhook message: one attempt now, the next one scheduled on failure.

Every call is a hint to look at the delivery in Firestore. One that finds the next attempt not
yet due, or another process's claim still live, queues itself again for that moment instead of
returning as if done: a claim whose holder died then expires and this message takes over.
Whatever is lost anyway (the process dies between recording an attempt and queueing the
next, the queue forgets a delayed message) the sweeper finds from the delivery's own times.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from shared.domain import webhook
from shared.domain.messages import DeliverWebhook
from shared.domain.model import DeliveryAttempt, DeliveryState, WebhookDelivery
from shared.domain.times import iso
from shared.usecases.services import Services

log = logging.getLogger(__name__)

# Extra time beyond the HTTP timeout before a claimed attempt counts as abandoned (its worker
# died) and another task may make the next attempt.
LEASE_MARGIN = 30.0


def deliver_webhook(services: Services, request_id: str) -> DeliveryState | None:
    """Returns the delivery's state after this call, None when the request has none."""
    for _ in range(8):
        now = services.clock.now()
        delivery = services.deliveries.get(request_id)
        if delivery is None:
            return None
        if delivery.state is not DeliveryState.PENDING:
            return delivery.state
        due = delivery.due_at()
        if due is not None and due > now:
            # Not yet: come back when it is (a retry's time, or the end of someone's claim).
            _queue_for(services, request_id, due, now)
            return DeliveryState.PENDING
        claimed = services.deliveries.claim(
            delivery, now=now, lease_seconds=services.settings.webhook_timeout + LEASE_MARGIN
        )
        if claimed is not None:
            return _attempt(services, claimed, now)
        # Someone wrote the delivery between our read and our claim: look again.
    raise RuntimeError(f"the webhook of {request_id} kept changing under its delivery")


def _attempt(services: Services, claimed: WebhookDelivery, now: datetime) -> DeliveryState:
    settings = services.settings
    body = webhook.encode(claimed.payload)
    headers = webhook.signed_headers(settings.webhook_secrets, claimed.message_id, now, body)
    response = services.webhooks.post(claimed.url, body, headers)
    finished = services.clock.now()
    number = len(claimed.attempts) + 1
    attempt = DeliveryAttempt(
        number=number,
        started_at=now,
        finished_at=finished,
        status_code=response.status_code,
        error=response.error,
        succeeded=response.ok,
    )
    schedule = settings.webhook_retry_schedule
    if response.ok:
        state, next_at = DeliveryState.DELIVERED, None
    elif number <= len(schedule):
        state, next_at = DeliveryState.PENDING, finished + timedelta(seconds=schedule[number - 1])
    else:
        state, next_at = DeliveryState.GAVE_UP, None
    recorded = services.deliveries.record_attempt(
        claimed, attempt, state=state, next_attempt_at=next_at
    )
    log.info(
        "webhook %s attempt %d: %s%s",
        claimed.message_id,
        number,
        "delivered" if response.ok else f"failed ({response.status_code or response.error})",
        "" if recorded else "; not recorded, the claim had passed to another attempt",
    )
    if recorded and next_at is not None:
        _queue_for(services, claimed.request_id, next_at, finished)
    return state


def _queue_for(services: Services, request_id: str, due: datetime, now: datetime) -> None:
    # Named for its moment: copies queued for the same attempt collapse where the queue can.
    delay = max(0.0, (due - now).total_seconds())
    services.queue.send([DeliverWebhook(request_id, due=iso(due))], delay_seconds=delay)
