"""No secret in a payload or a log (issue 5, "Webhooks" and "Access").

A whole request runs with every log line captured: an upload by a key holder, an image that
fails in an unforeseen way (logged with its stack trace), the finalisation and a webhook
delivered over real HTTP to a loopback receiver that first fails, then accepts. Neither the
webhook secret (in any form) nor the raw API key may appear in a log line, in what the
receiver got, in what is stored, or in the status answer with its details.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from standardwebhooks.webhooks import Webhook

from shared.adapters.egress.safe_http import HttpWebhookTransport
from shared.config import FetchPolicy, Settings, parse_api_keys, parse_networks
from shared.domain.access import new_api_key
from shared.domain.model import DeliveryState
from shared.entrypoints import http_api as api
from shared.usecases.deliver_webhook import deliver_webhook
from shared.usecases.services import SystemClock
from tests.fakes import fake_world, run_queue

pytestmark = pytest.mark.integration

SECRET_KEY = b"not-to-be-seen-anywhere-0123456789"
SECRET = "whsec_" + base64.b64encode(SECRET_KEY).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"the-previous-secret-still-signing").decode()
KEY = new_api_key("acme")


class Receiver(BaseHTTPRequestHandler):
    arrivals: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).arrivals.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(500 if len(type(self).arrivals) == 1 else 204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.arrivals = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()
    server.server_close()


class Exploding:
    """A fetcher that fails the way a bug would: an exception the use case did not foresee."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.calls = 0

    def fetch(self, url: str) -> object:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("boom in the fetcher")
        return self.inner.fetch(url)  # type: ignore[attr-defined]


def forms_of_secrets() -> list[str]:
    forms = [KEY.key, KEY.key.removeprefix("isk_")]
    for secret in (SECRET, OLD_SECRET):
        raw = secret.removeprefix("whsec_")
        forms += [secret, raw, base64.b64decode(raw).decode()]
    return forms


def test_no_secret_reaches_a_log_a_payload_or_the_store(
    receiver: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    w = fake_world(
        Settings(
            webhook_secrets=(SECRET, OLD_SECRET),
            api_keys=parse_api_keys(KEY.entry),
            webhook_retry_schedule=(0,),
        )
    )
    w.services.webhooks = HttpWebhookTransport(
        FetchPolicy(allowed_networks=parse_networks("127.0.0.1/32")), 5.0
    )
    w.services.clock = SystemClock()  # the receiver checks the signature's timestamp
    w.fetcher.answers["https://img.test/a.jpg"] = b"a"
    w.services.fetcher = Exploding(w.fetcher)  # type: ignore[assignment]

    caller = api.admit(w.services, f"Bearer {KEY.key}", uploading=True)
    assert caller == api.Caller("acme")
    csv = b"Serial Number,Product Name,Input Image Urls\n1,Lamp,https://img.test/a.jpg\n"
    accepted = api.upload(
        w.services,
        is_multipart=True,
        file=api.UploadedFile(csv, "p.csv", "text/csv"),
        webhook_url=receiver,
        owner="acme",
    )
    request_id = accepted.body["request_id"]
    run_queue(w)
    assert deliver_webhook(w.services, request_id) is DeliveryState.PENDING  # the 500
    assert deliver_webhook(w.services, request_id) is DeliveryState.DELIVERED
    status = api.status(w.services, request_id, {"details": "1"}, owner="acme")

    # The run did what it should, so the checks below looked at real output.
    assert status.status == 200
    assert status.body["status"] == "completed"
    assert [a["status_code"] for a in status.body["webhook"]["attempts"]] == [500, 204]
    headers, body = Receiver.arrivals[-1]
    assert Webhook(SECRET).verify(body, headers)["request_id"] == request_id
    assert any("unexpected error" in r.getMessage() for r in caplog.records)
    assert any(r.exc_info for r in caplog.records)  # a stack trace was logged

    logged = "\n".join(
        [r.getMessage() for r in caplog.records]
        + [caplog.text]
        + [logging.Formatter().formatException(r.exc_info) for r in caplog.records if r.exc_info]
    )
    sent = "\n".join(json.dumps(h) + body.decode() for h, body in Receiver.arrivals)
    stored = "\n".join(
        [repr(r) for r in w.requests.records.values()]
        + [repr(i) for i in w.images.records.values()]
        + [repr(d) for d in w.deliveries.items.values()]
        + [repr(w.blobs.uploads), repr(w.blobs.outputs)]
    )
    answered = json.dumps(status.body) + json.dumps(accepted.body)
    for secret in forms_of_secrets():
        for where, text in (
            ("log", logged),
            ("webhook", sent),
            ("store", stored),
            ("answer", answered),
        ):
            assert secret not in text, f"a secret is in the {where}"
    # What identifies the caller is the key id, never the key.
    assert w.requests.records[request_id].owner == "acme"
