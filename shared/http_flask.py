"""Flask request in, Flask response out, around shared.api.

Imported only by HTTP entry points (the local gateway and the Cloud Functions, whose
functions-framework hands them Flask requests); the use cases never see Flask.
"""

from __future__ import annotations

import json

from flask import Request, Response
from werkzeug.exceptions import RequestEntityTooLarge

from shared import api
from shared.usecases.services import Services


def to_flask(answer: api.ApiResponse) -> Response:
    return Response(
        json.dumps(answer.body, ensure_ascii=False),
        status=answer.status,
        headers=answer.headers,
        content_type="application/json",
    )


def upload(services: Services, request: Request, owner: str | None = None) -> Response:
    limit = services.settings.limits.max_upload_bytes
    # Werkzeug stops reading the body as soon as it passes the limit: a 2 GB upload costs
    # us 30 MB of reading, not 2 GB.
    request.max_content_length = limit
    try:
        is_multipart = request.mimetype == "multipart/form-data"
        part = request.files.get("file") if is_multipart else None
        webhook_url = request.form.get("webhook_url") if is_multipart else None
        uploaded = (
            api.UploadedFile(part.read(), part.filename, part.mimetype)
            if part is not None
            else None
        )
    except RequestEntityTooLarge:
        _discard_body(request)
        # functions-framework reads the body again after every request; with the limit still
        # set that read would raise and turn our 413 into a 500.
        request.max_content_length = None
        return to_flask(api.too_large(limit))
    return to_flask(
        api.upload(
            services,
            is_multipart=is_multipart,
            file=uploaded,
            webhook_url=(webhook_url or "").strip() or None,
            owner=owner,
        )
    )


# Cloud Functions refuse bodies above 32 MB on their own, so draining stays bounded.
_DRAIN_CAP = 64 * 1024 * 1024


def _discard_body(request: Request) -> None:
    """Read and drop what the client is still sending before answering 413.

    Answering before the body is read makes gunicorn (Cloud Run, functions-framework) close
    the connection under the client's feet: a proxy or a client still writing sees a reset,
    not our JSON 413. Waitress (the local gateway) has read the body already."""
    stream = request.environ.get("wsgi.input")
    remaining = min(request.content_length or _DRAIN_CAP, _DRAIN_CAP)
    while stream is not None and remaining > 0:
        chunk = stream.read(min(remaining, 1 << 16))
        if not chunk:
            break
        remaining -= len(chunk)


def status(
    services: Services, request: Request, request_id: str, owner: str | None = None
) -> Response:
    return to_flask(api.status(services, request_id, request.args.to_dict(), owner=owner))


def task(services: Services, request: Request) -> Response:
    # Cloud Tasks counts the earlier dispatches of this task; any means it was handed out
    # again, perhaps after its instance died in it.
    retries = request.headers.get("X-CloudTasks-TaskRetryCount", "0")
    redelivered = retries.isdigit() and int(retries) > 0
    payload = request.get_json(silent=True)
    return to_flask(api.run_task(services, payload, redelivered=redelivered))
