"""The webhook message and its Standard Webhooks signature.

https://www.standardwebhooks.com: `webhook-id` is the same for every retry of one message so
receivers can drop duplicates; the signature covers id, timestamp and body, so a replayed or
altered message fails verification.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import datetime

from shared.domain import signed_url
from shared.domain.model import RequestStatus
from shared.domain.times import iso

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, not a secret)


class InvalidSecret(ValueError):
    pass


def message_id(request_id: str) -> str:
    # One message per request: deriving the id from the request keeps it stable across
    # retries and across duplicated finalisations.
    return f"msg_{request_id}"


def payload(request_id: str, status: RequestStatus, csv_url: str | None) -> dict[str, object]:
    body: dict[str, object] = {"request_id": request_id, "status": status.value}
    if status is RequestStatus.COMPLETED and csv_url:
        body["csv_url"] = csv_url
        # A signed URL dies at a moment of its own: say when, so the receiver fetches in time
        # (GET /status mints a fresh one whenever asked).
        expiry = signed_url.expires_at(csv_url)
        if expiry is not None:
            body["csv_url_expires_at"] = iso(expiry)
    return body


def encode(body: dict[str, object]) -> bytes:
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def _key(secret: str) -> bytes:
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except ValueError as exc:
        raise InvalidSecret(f"webhook secret is not base64 after {SECRET_PREFIX}") from exc
    if not key:
        raise InvalidSecret("webhook secret is empty")
    return key


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(
    secrets: Sequence[str], msg_id: str, sent_at: datetime, body: bytes
) -> dict[str, str]:
    timestamp = int(sent_at.timestamp())
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
    }
    if secrets:
        headers["webhook-signature"] = " ".join(
            signature(secret, msg_id, timestamp, body) for secret in secrets
        )
    return headers
