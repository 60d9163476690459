"""Webhook signatures, checked by the reference `standardwebhooks` library."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared.domain import webhook
from shared.domain.model import RequestStatus


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def signed(secrets: list[str], sent_at: datetime | None = None) -> tuple[bytes, dict[str, str]]:
    body = webhook.encode(
        webhook.payload("abc", RequestStatus.COMPLETED, "https://storage.test/o.csv")
    )
    headers = webhook.signed_headers(secrets, "msg_abc", sent_at or datetime.now(UTC), body)
    return body, headers


def test_signature_verifies_with_the_standardwebhooks_library() -> None:
    secret = new_secret()
    body, headers = signed([secret])
    assert Webhook(secret).verify(body, headers) == {
        "request_id": "abc",
        "status": "completed",
        "csv_url": "https://storage.test/o.csv",
    }
    assert headers["webhook-signature"].startswith("v1,")


def test_a_tampered_body_does_not_verify() -> None:
    secret = new_secret()
    body, headers = signed([secret])
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"completed", b"failed"), headers)


def test_another_secret_does_not_verify() -> None:
    body, headers = signed([new_secret()])
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_every_configured_secret_signs_so_receivers_can_rotate() -> None:
    old, new = new_secret(), new_secret()
    body, headers = signed([new, old])
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(old).verify(body, headers)["request_id"] == "abc"
    assert Webhook(new).verify(body, headers)["request_id"] == "abc"


def test_an_old_timestamp_is_refused_by_receivers() -> None:
    secret = new_secret()
    body, headers = signed([secret], datetime.now(UTC) - timedelta(minutes=10))
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)


def test_failed_payload_has_no_csv_url() -> None:
    assert webhook.payload("abc", RequestStatus.FAILED, None) == {
        "request_id": "abc",
        "status": "failed",
    }


def test_the_message_id_is_stable_for_a_request() -> None:
    assert webhook.message_id("abc") == webhook.message_id("abc") == "msg_abc"


def test_without_a_secret_no_signature_header_is_sent() -> None:
    _, headers = signed([])
    assert "webhook-signature" not in headers
    assert headers["webhook-id"] == "msg_abc"


def test_a_secret_that_is_not_base64_is_refused() -> None:
    with pytest.raises(webhook.InvalidSecret):
        webhook.signature("whsec_not base64!", "msg", 1, b"{}")
