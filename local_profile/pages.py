"""The pages for people, from `hosting/`, served as Firebase Hosting serves them in production:
`/` (upload a CSV), `/requests/<id>` (a request's progress and images), `/docs` (Swagger UI)
and their assets.

The local gateway mounts them beside the API; the cloud profile's Hosting stand-in serves the
same folder through firebase.json's rewrites. Every page carries a Content-Security-Policy that
lets it run scripts and styles only from the service, call only the service, and load images
only from the service and the outputs bucket: even a bug in a page could not make the browser
fetch an input URL (a stranger's).
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask, Response

from local_profile.processes import ROOT
from shared.config import Settings

HOSTING = ROOT / "hosting"
# Where output images live in production, public object URLs and V4 signed URLs alike.
PRODUCTION_STORAGE = "https://storage.googleapis.com"
# Swagger UI sets style attributes and draws its icons from data: URLs.
_DOCS_EXTRA = {"style-src": "'unsafe-inline'", "img-src": "data:"}


def outputs_origin(settings: Settings) -> str:
    """The origin output URLs point at: the Storage emulator locally, Cloud Storage otherwise."""
    if settings.storage_emulator_host:
        parts = urlsplit(settings.storage_emulator_host)
        if parts.scheme and parts.netloc:
            return f"{parts.scheme}://{parts.netloc}"
    return PRODUCTION_STORAGE


def content_security_policy(images_origin: str, *, docs: bool = False) -> str:
    directives = {
        "default-src": "'none'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": f"'self' {images_origin}",
        "connect-src": "'self'",
        "form-action": "'self'",
        "base-uri": "'none'",
        "frame-ancestors": "'none'",
    }
    if docs:
        for name, extra in _DOCS_EXTRA.items():
            directives[name] += f" {extra}"
    return "; ".join(f"{name} {value}" for name, value in directives.items())


def hosting_file(path: str, root: Path = HOSTING) -> Path | None:
    """The file Hosting serves as static content for the URL path `path`: the file itself,
    `index.html` for a folder, or `<path>.html` (firebase.json's `cleanUrls`). Never anything
    outside `root`."""
    relative = path.lstrip("/")
    candidates = [relative, f"{relative}/index.html" if relative else "index.html"]
    if relative and not relative.endswith(".html"):
        candidates.append(f"{relative}.html")
    base = root.resolve()
    for candidate in candidates:
        file = (base / candidate).resolve()
        if file.is_relative_to(base) and file.is_file():
            return file
    return None


def file_response(file: Path, settings: Settings) -> Response:
    if file.suffix == ".js":
        content_type = "text/javascript"  # what browsers require of module scripts (nosniff)
    else:
        content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    if content_type.startswith("text/"):
        content_type += "; charset=utf-8"
    response = Response(file.read_bytes(), content_type=content_type)
    response.headers["X-Content-Type-Options"] = "nosniff"
    # Pages and assets change with the code; a browser asks again rather than guess.
    response.headers["Cache-Control"] = "no-cache"
    if file.suffix == ".html":
        response.headers["Content-Security-Policy"] = content_security_policy(
            outputs_origin(settings), docs=file.name == "docs.html"
        )
        response.headers["Referrer-Policy"] = "no-referrer"
    return response


def mount_pages(app: Flask, settings: Settings, root: Path = HOSTING) -> None:
    """The pages and their assets on `app`, at the paths Hosting gives them."""

    def serve(path: str) -> Response:
        file = hosting_file(path, root)
        if file is None:
            from shared.entrypoints import flask_http, http_api

            return flask_http.to_flask(http_api.error(404, "not_found", "no such page"))
        return file_response(file, settings)

    @app.get("/")
    def upload_page() -> Response:
        return serve("/index.html")

    @app.get("/requests/<request_id>")
    def request_page(request_id: str) -> Response:
        # One static page for every request, as Hosting's `/requests/**` rewrite serves it;
        # the page reads the id from its own URL and asks the status API.
        return serve("/request.html")

    @app.get("/docs")
    def docs_page() -> Response:
        return serve("/docs.html")

    @app.get("/favicon.svg")
    def favicon() -> Response:
        return serve("/favicon.svg")

    @app.get("/assets/<path:name>")
    def asset(name: str) -> Response:
        return serve(f"/assets/{name}")

    @app.get("/vendor/<path:name>")
    def vendored(name: str) -> Response:
        return serve(f"/vendor/{name}")
