"""Send a request's webhook message again, for a receiver that lost it.

The message is the same one (same `webhook-id`, same payload; a new timestamp and signature
per attempt), so a receiver that did get it drops the copy as a duplicate. A resend starts a
new series of attempts on the usual retry schedule and keeps the earlier series beside it, so
the status details still show everything that was tried.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.domain.messages import DeliverWebhook
from shared.domain.model import DeliveryState, RequestStatus, WebhookDelivery
from shared.domain.times import iso
from shared.usecases.report_status import visible_request
from shared.usecases.services import Services


class ResendRefused(Exception):
    """Why nothing was resent; the request's state, not the caller's input, is the reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def resend_webhook(services: Services, request_id: str, *, owner: str | None) -> WebhookDelivery:
    """Raises UnknownRequest (not the caller's request, or none) or ResendRefused."""
    request = visible_request(services, request_id, owner)
    if request.status is RequestStatus.IN_PROGRESS:
        raise ResendRefused(
            "in_progress", "the request is still in progress; its webhook is sent when it ends"
        )
    delivery = services.deliveries.get(request_id)
    if delivery is None:
        raise ResendRefused("no_webhook", "the request was made without a webhook URL")
    now = services.clock.now()
    _watch(services, request_id, now)
    restarted = services.deliveries.restart(request_id, now=now)
    if restarted is None:
        # A series is still running (or another resend just started one): its own retries
        # go on, and cutting them short would only reset the backoff.
        current = services.deliveries.get(request_id) or delivery
        raise ResendRefused(
            "delivery_pending",
            "the webhook is still being delivered"
            + (
                f"; next attempt at {iso(current.next_attempt_at)}"
                if current.state is DeliveryState.PENDING and current.next_attempt_at
                else ""
            ),
        )
    services.queue.send([DeliverWebhook(request_id)])
    return restarted


def _watch(services: Services, request_id: str, now: datetime) -> None:
    """Put the request back under the sweeper's eye before restarting its delivery: should the
    message queued below be lost (or this process die before sending it), the sweep finds the
    pending delivery and queues its attempt, as for any settled request (usecases/sweep.py)."""
    soon = now + timedelta(seconds=services.settings.sweep_grace)
    for _ in range(3):
        request = services.requests.get(request_id)
        if request is None or (request.sweep_at is not None and request.sweep_at <= soon):
            return
        if services.requests.reschedule_sweep(request, sweep_at=soon, sweeps=request.sweeps):
            return
