"""Deliver a request's webhook message: one attempt now, the next one scheduled on failure."""

from __future__ import annotations

import logging
from datetime import timedelta

from shared.domain import webhook
from shared.domain.messages import DeliverWebhook
from shared.domain.model import DeliveryAttempt, DeliveryState
from shared.usecases.services import Services

log = logging.getLogger(__name__)

# Extra time beyond the HTTP timeout before a claimed attempt counts as abandoned (its worker
# died) and another task may make the next attempt.
LEASE_MARGIN = 30.0


def deliver_webhook(services: Services, request_id: str) -> DeliveryState | None:
    """Returns the delivery's state after this call, None when there was nothing to do."""
    settings = services.settings
    now = services.clock.now()
    delivery = services.deliveries.claim(
        request_id, now=now, lease_seconds=settings.webhook_timeout + LEASE_MARGIN
    )
    if delivery is None:
        return None  # delivered, given up, not yet due, or another worker is on it

    body = webhook.encode(delivery.payload)
    headers = webhook.signed_headers(settings.webhook_secrets, delivery.message_id, now, body)
    response = services.webhooks.post(delivery.url, body, headers)
    finished = services.clock.now()
    number = len(delivery.attempts) + 1
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
        state, next_at, delay = DeliveryState.DELIVERED, None, None
    elif number <= len(schedule):
        delay = schedule[number - 1]
        state, next_at = DeliveryState.PENDING, finished + timedelta(seconds=delay)
    else:
        state, next_at, delay = DeliveryState.GAVE_UP, None, None
    services.deliveries.record_attempt(request_id, attempt, state=state, next_attempt_at=next_at)
    log.info(
        "webhook %s attempt %d: %s",
        delivery.message_id,
        number,
        "delivered" if response.ok else f"failed ({response.status_code or response.error})",
    )
    if delay is not None:
        services.queue.send([DeliverWebhook(request_id)], delay_seconds=delay)
    return state
