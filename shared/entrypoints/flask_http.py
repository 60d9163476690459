"""Flask request in, Flask response out, around `http_api` (client calls) and `tasks` (queued work).

Imported only by HTTP entry points (the local gateway and the Cloud Functions, whose
functions-framework hands them Flask requests); the use cases never see Flask.
"""

from __future__ import annotations

import json
import re
from contextlib import AbstractContextManager

from flask import Flask, Request, Response
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from shared import logs
from shared.domain.model import is_request_id
from shared.entrypoints import http_api, tasks
from shared.usecases.services import Services

# Input echoed in an answer (a URL in a CSV problem, say) stays JSON text even if something
# renders the body as HTML: these characters only ever occur inside JSON strings, and there
# their \u escapes mean the same to any JSON parser.
_HTML_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})
# Every API answer is JSON and says so; nosniff forbids browsers to guess otherwise.
API_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


def to_flask(answer: http_api.ApiResponse) -> Response:
    return Response(
        json.dumps(answer.body, ensure_ascii=False).translate(_HTML_SAFE),
        status=answer.status,
        headers={**API_HEADERS, **answer.headers},
        content_type="application/json",
    )


def _traced(request: Request, **fields: str | None) -> AbstractContextManager[None]:
    """The scope of one HTTP request: its trace, and what it is about."""
    headers = {name: request.headers.get(name, "") for name in logs.TRACE_HEADERS}
    return logs.scope(**logs.trace_of(headers), **fields)


def upload(services: Services, request: Request) -> Response:
    with _traced(request):
        return _upload(services, request)


def _upload(services: Services, request: Request) -> Response:
    caller = http_api.admit(services, request.headers.get("Authorization"), uploading=True)
    if isinstance(caller, http_api.ApiResponse):
        # Bounded by the upload limit: a stranger is never read further than a customer.
        _discard_body(request, services.settings.limits.max_upload_bytes)
        return to_flask(caller)
    limit = services.settings.limits.max_upload_bytes
    # Werkzeug stops reading the body as soon as it passes the limit: a 2 GB upload costs
    # us 30 MB of reading, not 2 GB.
    request.max_content_length = limit
    try:
        is_multipart = request.mimetype == "multipart/form-data"
        part = request.files.get("file") if is_multipart else None
        webhook_url = request.form.get("webhook_url") if is_multipart else None
        uploaded = (
            http_api.UploadedFile(part.read(), part.filename, part.mimetype)
            if part is not None
            else None
        )
    except RequestEntityTooLarge:
        _discard_body(request)
        # functions-framework reads the body again after every request; with the limit still
        # set that read would raise and turn our 413 into a 500.
        request.max_content_length = None
        return to_flask(http_api.too_large(limit))
    return to_flask(
        http_api.upload(
            services,
            is_multipart=is_multipart,
            file=uploaded,
            webhook_url=(webhook_url or "").strip() or None,
            owner=caller.owner,
            idempotency_key=request.headers.get("Idempotency-Key"),
        )
    )


# Cloud Functions refuse bodies above 32 MB on their own, so draining stays bounded.
_DRAIN_CAP = 64 * 1024 * 1024


def _discard_body(request: Request, cap: int = _DRAIN_CAP) -> None:
    """Read and drop what the client is still sending before answering 413 (or 401, 429).

    Answering before the body is read makes gunicorn (Cloud Run, functions-framework) close
    the connection under the client's feet: a proxy or a client still writing sees a reset,
    not our JSON 413. Waitress (the local gateway) has read the body already."""
    stream = request.environ.get("wsgi.input")
    remaining = min(request.content_length or cap, cap, _DRAIN_CAP)
    while stream is not None and remaining > 0:
        chunk = stream.read(min(remaining, 1 << 16))
        if not chunk:
            break
        remaining -= len(chunk)


def status(services: Services, request: Request, request_id: str) -> Response:
    with _traced(request, request_id=request_id if is_request_id(request_id) else None):
        return _status(services, request, request_id)


def _status(services: Services, request: Request, request_id: str) -> Response:
    caller = http_api.admit(services, request.headers.get("Authorization"), uploading=False)
    if isinstance(caller, http_api.ApiResponse):
        return to_flask(caller)
    return to_flask(
        http_api.status(services, request_id, request.args.to_dict(), owner=caller.owner)
    )


def resend_webhook(services: Services, request: Request, request_id: str) -> Response:
    caller = http_api.admit(services, request.headers.get("Authorization"), uploading=False)
    if isinstance(caller, http_api.ApiResponse):
        return to_flask(caller)
    return to_flask(http_api.resend(services, request_id, owner=caller.owner))


_RESEND_PATH = re.compile(r"^/requests/([^/]+)/webhook/resend/?$")


def upload_function(services: Services, request: Request) -> Response:
    """The `upload` Cloud Function's routes behind Hosting's rewrites: POST /upload and
    POST /requests/<id>/webhook/resend. Both write (a request; a new series of attempts and a
    queued task), and `upload`'s identity is the one allowed to: `status` only reads."""
    resend = _RESEND_PATH.match(request.path)
    if resend is None:
        return upload(services, request)
    if request.method != "POST":
        return _method_not_allowed("POST")
    return resend_webhook(services, request, resend.group(1))


def _method_not_allowed(allowed: str) -> Response:
    response = to_flask(http_api.error(405, "method_not_allowed", f"use {allowed} here"))
    response.headers["Allow"] = allowed
    return response


def task(services: Services, request: Request) -> Response:
    # Cloud Tasks counts the earlier dispatches of this task; any means it was handed out
    # again, perhaps after its instance died in it.
    retries = request.headers.get("X-CloudTasks-TaskRetryCount", "0")
    redelivered = retries.isdigit() and int(retries) > 0
    payload = request.get_json(silent=True)
    with _traced(request):
        return to_flask(tasks.run_task(services, payload, redelivered=redelivered))


def json_errors(app: Flask) -> None:
    """Make a Flask app answer like the API everywhere: the framework's own errors (unknown
    path, wrong method, a crash in a route) in the API's JSON error shape instead of HTML
    pages, and every answer with nosniff."""

    @app.errorhandler(HTTPException)
    def framework_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = re.sub(r"[^a-z]+", "_", (exc.name or "error").lower()).strip("_")
        # Werkzeug's descriptions are fixed sentences; nothing from the request is echoed.
        response = to_flask(http_api.error(status, code, exc.description or exc.name or code))
        for name, value in exc.get_headers():
            if name.lower() == "allow":
                response.headers["Allow"] = value
        return response

    @app.errorhandler(Exception)
    def crash(exc: Exception) -> Response:
        return to_flask(http_api.internal_error(f"{app.name} route"))

    @app.after_request
    def nosniff(response: Response) -> Response:
        for name, value in API_HEADERS.items():
            response.headers.setdefault(name, value)
        return response
