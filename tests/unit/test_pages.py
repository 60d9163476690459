"""The pages for people (`hosting/`) as the gateway and the Hosting stand-in serve them, and
firebase.json saying the same for production: which page answers which path, with which
Content-Security-Policy."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from local_profile import hosting_router, pages
from local_profile.gateway import create_app
from shared.config import Settings
from tests.fakes import fake_world

ROOT = Path(__file__).resolve().parents[2]
FIREBASE_JSON = ROOT / "firebase.json"
REQUEST_ID = "A" * 22


@pytest.fixture
def gateway() -> FlaskClient:
    settings = Settings(storage_emulator_host="http://127.0.0.1:4443", firestore_emulator_host="x")
    return create_app(fake_world(settings).services).test_client()


@pytest.mark.parametrize(
    ("path", "page"),
    [("/", "index.html"), (f"/requests/{REQUEST_ID}", "request.html"), ("/docs", "docs.html")],
)
def test_the_gateway_serves_each_page_with_its_policy(
    gateway: FlaskClient, path: str, page: str
) -> None:
    response = gateway.get(path)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.get_data() == (ROOT / "hosting" / page).read_bytes()
    policy = response.headers["Content-Security-Policy"]
    # Images from the service and the outputs bucket only: an input URL cannot be loaded.
    assert "img-src 'self' http://127.0.0.1:4443" in policy
    assert "script-src 'self';" in policy and "connect-src 'self';" in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_assets_have_the_types_browsers_require_under_nosniff(gateway: FlaskClient) -> None:
    assert gateway.get("/assets/request.js").headers["Content-Type"].startswith("text/javascript")
    assert gateway.get("/assets/app.css").headers["Content-Type"].startswith("text/css")
    assert gateway.get("/favicon.svg").headers["Content-Type"] == "image/svg+xml"


def test_swagger_ui_is_served_from_the_projects_own_copy(gateway: FlaskClient) -> None:
    docs = gateway.get("/docs").get_data(as_text=True)
    assert '<script src="/vendor/swagger-ui/swagger-ui-bundle.js">' in docs
    assert "://" not in docs  # nothing from a CDN
    bundle = gateway.get("/vendor/swagger-ui/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and b"SwaggerUIBundle" in bundle.get_data()


@pytest.mark.parametrize(
    "path", ["/assets/../../README.md", "/assets/%2e%2e/%2e%2e/SECURITY.md", "/vendor/nothing.js"]
)
def test_nothing_outside_hosting_is_served(gateway: FlaskClient, path: str) -> None:
    response = gateway.get(path)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"


def test_no_page_names_a_cdn_or_loads_anything_from_outside() -> None:
    for file in (ROOT / "hosting").rglob("*"):
        if file.suffix in (".html", ".js", ".css") and "vendor" not in file.parts:
            text = file.read_text()
            assert "http://" not in text and "https://" not in text.replace(
                "https://example.com", ""
            ), file


def test_firebase_json_gives_production_pages_the_same_policy() -> None:
    config = json.loads(FIREBASE_JSON.read_text())["hosting"]
    policies = {
        rule["source"]: next(
            h["value"] for h in rule["headers"] if h["key"] == "Content-Security-Policy"
        )
        for rule in config["headers"]
    }
    production = pages.PRODUCTION_STORAGE
    assert policies == {
        "/": pages.content_security_policy(production),
        "/requests/**": pages.content_security_policy(production),
        "/docs": pages.content_security_policy(production, docs=True),
    }


class Upstream(BaseHTTPRequestHandler):
    """A function behind the router: answers with its own name and the path it got."""

    def _answer(self) -> None:
        body = json.dumps({"function": self.server.name, "path": self.path}).encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def hosting() -> Iterator[FlaskClient]:
    servers = {}
    for name in ("upload", "status"):
        server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
        server.name = name  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers[name] = server
    urls = {name: f"http://127.0.0.1:{s.server_address[1]}/" for name, s in servers.items()}
    try:
        yield hosting_router.create_app(urls, FIREBASE_JSON).test_client()
    finally:
        for server in servers.values():
            server.shutdown()
            server.server_close()


def test_hosting_serves_static_pages_then_rewrites_in_order(hosting: FlaskClient) -> None:
    assert hosting.get("/").get_data() == (ROOT / "hosting" / "index.html").read_bytes()
    page = hosting.get(f"/requests/{REQUEST_ID}")
    assert page.get_data() == (ROOT / "hosting" / "request.html").read_bytes()
    assert "Content-Security-Policy" in page.headers
    assert hosting.get("/docs").get_data() == (ROOT / "hosting" / "docs.html").read_bytes()
    resend = hosting.post(f"/requests/{REQUEST_ID}/webhook/resend")
    assert resend.get_json() == {
        "function": "upload",
        "path": f"/requests/{REQUEST_ID}/webhook/resend",
    }
    status = hosting.get(f"/status/{REQUEST_ID}?details=1")
    assert status.get_json() == {"function": "status", "path": f"/status/{REQUEST_ID}?details=1"}
    assert hosting.post("/upload").get_json()["function"] == "upload"
    missing = hosting.get("/nothing/here")
    assert missing.status_code == 404 and missing.headers["Content-Type"] == "application/json"
