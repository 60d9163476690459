"""The local HTTP gateway: the service's API on one base URL, plus a reference webhook receiver.

POST /upload, GET /status/<id> and POST /requests/<id>/webhook/resend are the same handlers the
Cloud Functions use; the pages for people (`/`, `/requests/<id>`, `/docs`) come from `hosting/`
as Firebase Hosting serves them (local_profile/pages.py). POST /webhook
verifies Standard Webhooks signatures with WEBHOOK_SECRET and keeps what arrived, so the demo
and the tests can show the notification; GET /webhook lists it. GET /openapi.yaml describes
the API. Every API answer, errors of unknown paths included, is JSON with nosniff.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from local_profile.pages import mount_pages
from shared import logs
from shared.bootstrap import build_services, codec_name
from shared.config import Settings
from shared.domain.times import iso
from shared.entrypoints import flask_http
from shared.usecases.services import Services

log = logging.getLogger(__name__)

OPENAPI = Path(__file__).resolve().parents[1] / "openapi.yaml"


class WebhookInbox:
    """What the reference receiver got, in arrival order (kept in memory)."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self._verifiers = [Webhook(secret) for secret in secrets]
        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []

    def receive(self, body: bytes, headers: dict[str, str]) -> bool:
        verified, problem = self._verify(body, headers)
        entry = {
            "received_at": iso(datetime.now(UTC)),
            "webhook_id": headers.get("webhook-id"),
            "webhook_timestamp": headers.get("webhook-timestamp"),
            "webhook_signature": headers.get("webhook-signature"),
            "verified": verified,
            "problem": problem,
            "body": body.decode("utf-8", errors="replace"),
        }
        with self._lock:
            self._messages.append(entry)
        return verified

    def _verify(self, body: bytes, headers: dict[str, str]) -> tuple[bool, str | None]:
        if not self._verifiers:
            return False, "the receiver has no WEBHOOK_SECRET to verify with"
        for verifier in self._verifiers:
            try:
                verifier.verify(body, headers)
                return True, None
            except WebhookVerificationError as exc:
                problem = str(exc)
        return False, problem

    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._messages)


def mount_webhook_receiver(app: Flask, inbox: WebhookInbox) -> None:
    """POST /webhook verifies and keeps a message; GET /webhook lists what arrived."""

    @app.post("/webhook")
    def receive_webhook() -> tuple[Response, int]:
        headers = {key.lower(): value for key, value in request.headers.items()}
        verified = inbox.receive(request.get_data(), headers)
        return jsonify({"verified": verified}), (200 if verified else 401)

    @app.get("/webhook")
    def list_webhooks() -> Response:
        return jsonify({"received": inbox.messages()})


def create_app(services: Services) -> Flask:
    app = Flask(__name__)
    flask_http.json_errors(app)
    mount_webhook_receiver(app, WebhookInbox(services.settings.webhook_secrets))
    mount_pages(app, services.settings)

    @app.post("/upload")
    def upload() -> Response:
        return flask_http.upload(services, request)

    @app.get("/status/<request_id>")
    def status(request_id: str) -> Response:
        return flask_http.status(services, request, request_id)

    @app.post("/requests/<request_id>/webhook/resend")
    def resend_webhook(request_id: str) -> Response:
        return flask_http.resend_webhook(services, request, request_id)

    @app.get("/healthz")
    def health() -> Response:
        # The worker runs in the same environment, so this is the codec that compresses.
        return jsonify({"ok": True, "codec": codec_name(services.codec)})

    @app.get("/openapi.yaml")
    def openapi() -> Response:
        # The API's description, for clients and for the fuzzer in the tests (RFC 9512 type).
        return Response(OPENAPI.read_bytes(), content_type="application/yaml")

    return app


def main() -> None:
    from waitress import serve

    settings = Settings.from_env()
    logs.configure(settings)
    services = build_services(settings, ensure_buckets=bool(settings.storage_emulator_host))
    app = create_app(services)
    log.info("gateway on http://%s:%d", settings.gateway_host, settings.gateway_port)
    # Waitress buffers a body before the app sees it; cap it just above our own limit so
    # absurd uploads stop early while ordinary oversize ones get our JSON 413.
    serve(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        threads=settings.gateway_threads,
        max_request_body_size=settings.limits.max_upload_bytes + 1024 * 1024,
        ident="imgsvc",
    )


if __name__ == "__main__":
    main()
