"""A stand-in for Firebase Hosting in the emulated cloud profile: one base URL, firebase.json's
rewrites sending `/upload` and `/status/**` to the functions, as production does.

It also carries the reference webhook receiver (`/webhook`, from the gateway) so that the same
tests and demo run against both profiles; production Hosting has no such route.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import requests
from flask import Flask, Response, jsonify, request

from local_profile.gateway import WebhookInbox, mount_webhook_receiver
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


def glob_to_regex(source: str) -> re.Pattern[str]:
    """Firebase Hosting globs: `**` any path, `*` one segment."""
    pattern = re.escape(source).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
    return re.compile(f"^{pattern}$")


def rewrites(firebase_json: Path) -> list[tuple[re.Pattern[str], str]]:
    config = json.loads(firebase_json.read_text())
    return [
        (glob_to_regex(rule["source"]), rule["function"]["functionId"])
        for rule in config["hosting"]["rewrites"]
        if "function" in rule
    ]


def create_app(function_urls: dict[str, str], firebase_json: Path) -> Flask:
    app = Flask(__name__)
    # Hosting's own answers look like the API's: JSON errors, nosniff.
    flask_http.json_errors(app)
    routes = rewrites(firebase_json)
    session = requests.Session()
    mount_webhook_receiver(app, WebhookInbox(Settings.from_env().webhook_secrets))

    @app.get("/healthz")
    def health() -> Response:
        return jsonify({"ok": True})

    @app.route("/<path:path>", methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"])
    def forward(path: str) -> Response:
        target = next((fn for regex, fn in routes if regex.match(f"/{path}")), None)
        if target is None:
            return flask_http.to_flask(http_api.error(404, "not_found", "no such route"))
        upstream = session.request(
            request.method,
            function_urls[target].rstrip("/") + request.full_path.rstrip("?"),
            data=request.get_data(),
            headers={k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS},
            timeout=120,
            allow_redirects=False,
        )
        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
        return Response(upstream.content, upstream.status_code, headers)

    return app


def main() -> None:
    from waitress import serve

    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level)
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
