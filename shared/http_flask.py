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
