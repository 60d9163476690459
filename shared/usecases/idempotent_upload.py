"""An upload retried with the same `Idempotency-Key` gets the same request back, not a second one.

The semantics of the IETF draft (draft-ietf-httpapi-idempotency-key-header), as Stripe's API
has them: a client that timed out on `POST /upload` sends it again with the key it chose, and
gets the 202 of the first request; the same key with a different upload (another CSV or
webhook) is a 422; while the first is still being accepted, a 409. A key belongs to its owner
(two clients' keys never meet) and lasts a day. A key is bound to a request only once the
request is recorded: an upload refused for its content (400) leaves the key free, so the
corrected CSV can be sent under it.

If the process accepting the first upload dies, its claim on the key (a lease) expires: a
retry then finds whether the request was recorded (it is answered, and the sweeper drives it
on) or not (the retry accepts it under the same request id).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from datetime import timedelta

from shared.domain.model import UploadKey, new_request_id
from shared.usecases.accept_upload import Accepted, accept_upload, effective_webhook
from shared.usecases.services import Services

log = logging.getLogger(__name__)

# How long a client's key stands for its request.
KEY_LIFETIME = timedelta(days=1)
# How long accepting an upload may take before a retry may take over: the upload of the
# largest CSV answers in seconds.
ACCEPT_LEASE = timedelta(seconds=60)
MAX_KEY_LENGTH = 255
PROCESSING = "processing"
DONE = "done"


class IdempotencyRefused(Exception):
    """The key cannot be used for this upload now (HTTP status and code given)."""

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


def parse_key(header: str) -> str:
    """The key from an `Idempotency-Key` header: an sf-string (`"..."`) per the draft, or
    a bare token as Stripe's clients send. Raises IdempotencyRefused (400) otherwise."""
    value = header.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if not value or len(value) > MAX_KEY_LENGTH or not value.isascii() or not value.isprintable():
        raise IdempotencyRefused(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters",
        )
    return value


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def accept_upload_once(
    services: Services,
    csv_bytes: bytes,
    *,
    key: str,
    webhook_url: str | None = None,
    owner: str | None = None,
) -> tuple[Accepted, bool]:
    """The accepted upload and whether it is a replay of an earlier one. Raises what
    accept_upload raises, or IdempotencyRefused."""
    key_id = _digest(owner or "", key)
    fingerprint = _digest(
        hashlib.sha256(csv_bytes).hexdigest(), effective_webhook(services, webhook_url) or ""
    )
    for _ in range(5):
        now = services.clock.now()
        fresh = UploadKey(
            key_id=key_id,
            fingerprint=fingerprint,
            request_id=new_request_id(),
            state=PROCESSING,
            lease_until=now + ACCEPT_LEASE,
            expires_at=now + KEY_LIFETIME,
        )
        held = services.upload_keys.reserve(fresh)
        if held is None:
            current = services.upload_keys.get(key_id)
            if current is None:
                continue  # released meanwhile: try to reserve it again
            if current.expires_at <= now:
                held = services.upload_keys.replace(current, fresh)
                if held is None:
                    continue
            else:
                answer = _answer_for(services, current, fingerprint)
                if answer is not None:
                    return answer, True
                # The first attempt died before recording its request: take over, same id.
                held = services.upload_keys.replace(
                    current, dataclasses.replace(current, lease_until=now + ACCEPT_LEASE)
                )
                if held is None:
                    continue
        return _accept_under(services, held, csv_bytes, webhook_url, owner), False
    raise IdempotencyRefused(
        409, "idempotency_key_in_use", "this Idempotency-Key is in use; retry", retry_after=1
    )


def _answer_for(services: Services, current: UploadKey, fingerprint: str) -> Accepted | None:
    """What a retry under an existing key gets, or None when it should take the key over."""
    if current.fingerprint != fingerprint:
        raise IdempotencyRefused(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different upload; use a new key",
        )
    if current.state == DONE and current.total_rows is not None:
        return Accepted(current.request_id, current.total_rows, current.total_images or 0)
    recorded = services.requests.get(current.request_id)
    if recorded is not None:
        # Recorded, but the accepting process died before saying so: it stands (if its work
        # was never queued, the sweeper queues it).
        return Accepted(recorded.request_id, recorded.total_rows, recorded.total_images)
    if current.lease_until > services.clock.now():
        raise IdempotencyRefused(
            409,
            "idempotency_key_in_use",
            "an upload with this Idempotency-Key is still being accepted; retry shortly",
            retry_after=max(1, int((current.lease_until - services.clock.now()).total_seconds())),
        )
    return None


def _accept_under(
    services: Services,
    held: UploadKey,
    csv_bytes: bytes,
    webhook_url: str | None,
    owner: str | None,
) -> Accepted:
    try:
        accepted = accept_upload(
            services, csv_bytes, webhook_url=webhook_url, owner=owner, request_id=held.request_id
        )
    except Exception:
        # Refused (400) or failed before a request was recorded: the key stays free for the
        # corrected upload. (A request that was recorded is found by the next retry.)
        if services.requests.get(held.request_id) is None:
            services.upload_keys.release(held)
        raise
    done = dataclasses.replace(
        held, state=DONE, total_rows=accepted.total_rows, total_images=accepted.total_images
    )
    if services.upload_keys.replace(held, done) is None:
        log.warning("idempotency key of %s changed while accepting it", accepted.request_id)
    return accepted
