"""A stand-in for Firebase Hosting in the emulated cloud profile: one base URL serving what
production Hosting serves, in Hosting's order: a static file of `hosting/` when one matches
(`cleanUrls` included), else firebase.json's rewrites in order (to a function: `/upload`,
`/status/**`, the webhook resend; to a page: `/requests/**`, `/docs`).

It also carries the reference webhook receiver (`/webhook`, from the gateway) so that the same
tests and demo run against both profiles; production Hosting has no such route.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import requests
from flask import Flask, Response, jsonify, request

from local_profile import pages
from local_profile.gateway import WebhookInbox, mount_webhook_receiver
from scripts.stage_firebase import rewrite_target, service_id
from shared import logs
from shared.config import Settings
from shared.entrypoints import flask_http, http_api

ROOT = Path(__file__).resolve().parents[1]
# Headers that belong to one hop, not to the message (RFC 9110 §7.6.1), plus the ones the
# client library recomputes.
HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-encoding",
    }
)


METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]


def glob_to_regex(source: str) -> re.Pattern[str]:
    """Firebase Hosting globs: `**` any path, `*` one segment."""
    pattern = re.escape(source).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
    return re.compile(f"^{pattern}$")


def rewrites(firebase_json: Path) -> list[tuple[re.Pattern[str], dict[str, Any]]]:
    """Each rewrite's source as a regex, with the rule: to a function (in any of the forms
    firebase.json allows, see `rewrite_target`) or a `destination`."""
    config = json.loads(firebase_json.read_text())
    return [(glob_to_regex(rule["source"]), rule) for rule in config["hosting"]["rewrites"]]


def create_app(function_urls: dict[str, str], firebase_json: Path) -> Flask:
    app = Flask(__name__)
    # Hosting's own answers look like the API's: JSON errors, nosniff.
    flask_http.json_errors(app)
    routes = rewrites(firebase_json)
    by_service = {service_id(name): url for name, url in function_urls.items()}
    session = requests.Session()
    settings = Settings.from_env()
    mount_webhook_receiver(app, WebhookInbox(settings.webhook_secrets))

    @app.get("/healthz")
    def health() -> Response:
        return jsonify({"ok": True})

    def forward(target: str) -> Response:
        upstream = session.request(
            request.method,
            by_service[target].rstrip("/") + request.full_path.rstrip("?"),
            data=request.get_data(),
            headers={k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS},
            timeout=120,
            allow_redirects=False,
        )
        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
        return Response(upstream.content, upstream.status_code, headers)

    @app.route("/", methods=METHODS, defaults={"path": ""})
    @app.route("/<path:path>", methods=METHODS)
    def front(path: str) -> Response:
        url_path = f"/{path}"
        reading = request.method in ("GET", "HEAD")
        static = pages.hosting_file(url_path) if reading else None
        if static is not None:
            return pages.file_response(static, settings)
        for regex, rule in routes:
            if not regex.match(url_path):
                continue
            function = rewrite_target(rule)
            if function is not None:
                return forward(service_id(function))
            page = pages.hosting_file(rule["destination"]) if reading else None
            if page is not None:
                return pages.file_response(page, settings)
        return flask_http.to_flask(http_api.error(404, "not_found", "no such route"))

    return app


def main() -> None:
    from waitress import serve

    settings = Settings.from_env()
    logs.configure(settings)
    urls = json.loads(os.environ["FUNCTION_URLS"])
    app = create_app(urls, ROOT / "firebase.json")
    serve(
        app,
        host="127.0.0.1",
        port=settings.gateway_port,
        threads=8,
        max_request_body_size=settings.limits.max_upload_bytes + 1024 * 1024,
        ident="imgsvc-hosting",
    )


if __name__ == "__main__":
    main()
