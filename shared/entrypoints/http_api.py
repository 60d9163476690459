"""The client API's answers (`POST /upload`, `GET /status/{id}`,
`POST /requests/{id}/webhook/resend`), independent of the web framework.

The local gateway (Flask) and the Cloud Functions (functions-framework, also Flask underneath)
decode a request into plain values (`flask_http`), call one function here, and send back the
ApiResponse. So both profiles answer byte for byte the same, and the JSON shapes live in one
place.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.domain import signed_url
from shared.domain.access import AccessDenied, ApiKeyring
from shared.domain.csv_table import CsvInvalid
from shared.domain.model import (
    DeliveryAttempt,
    ImageRecord,
    ImageState,
    WebhookDelivery,
    is_image_id,
    is_request_id,
)
from shared.domain.times import iso
from shared.usecases.accept_upload import FanOutFailed, UploadRejected, accept_upload
from shared.usecases.idempotent_upload import IdempotencyRefused, accept_upload_once, parse_key
from shared.usecases.report_status import (
    DEFAULT_PAGE,
    MAX_PAGE,
    StatusReport,
    UnknownRequest,
    report_status,
)
from shared.usecases.resend_webhook import ResendRefused, resend_webhook
from shared.usecases.services import Services

log = logging.getLogger(__name__)

# Content types browsers and HTTP clients put on a CSV file part. Anything else that declares
# itself (an image, a PDF, a zip) is refused with 415 before we try to parse it.
CSV_CONTENT_TYPES = frozenset(
    {
        "text/csv",
        "application/csv",
        "text/plain",
        "text/comma-separated-values",
        "application/vnd.ms-excel",
        "application/octet-stream",
        "",
    }
)


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class UploadedFile:
    data: bytes
    filename: str | None
    content_type: str | None


def error(
    status: int, code: str, message: str, details: list[Any] | None = None, **extra: Any
) -> ApiResponse:
    body: dict[str, Any] = {"code": code, "message": message, "details": details or []}
    body.update(extra)
    return ApiResponse(status, {"error": body})


def internal_error(context: str) -> ApiResponse:
    """A 500 whose body carries an id that leads to the logged stack trace, nothing more."""
    error_id = uuid.uuid4().hex[:16]
    log.exception("%s failed; error id %s", context, error_id)
    return error(500, "internal", f"internal error, id {error_id}", error_id=error_id)


def too_large(limit: int) -> ApiResponse:
    return error(413, "payload_too_large", f"the upload is larger than {limit} bytes")


@dataclass(frozen=True)
class Caller:
    """Who is asking: the key id that will own (or must own) the request; None under open
    access."""

    owner: str | None


@functools.lru_cache(maxsize=8)
def _keyring(entries: tuple[tuple[str, str], ...], open_access: bool) -> ApiKeyring:
    return ApiKeyring(entries, open_access=open_access)


def unauthorized(denied: AccessDenied) -> ApiResponse:
    # RFC 6750: the challenge names the scheme, and says invalid_token when a key was sent.
    challenge = 'Bearer realm="imgsvc"'
    if denied.code:
        challenge += f', error="{denied.code}"'
    answer = error(401, "unauthorized", denied.message)
    return ApiResponse(answer.status, answer.body, {"WWW-Authenticate": challenge})


def admit(
    services: Services, authorization: str | None, *, uploading: bool
) -> Caller | ApiResponse:
    """Who the caller is, or the answer that turns them away (401, or 429 for an upload over
    the key's rate). Runs before the request body is looked at: a stranger costs no parsing."""
    settings = services.settings
    try:
        owner = _keyring(settings.api_keys, settings.open_access).identify(authorization)
    except AccessDenied as denied:
        return unauthorized(denied)
    if uploading and owner is not None and settings.upload_rate_limit is not None:
        limit, window = settings.upload_rate_limit
        try:
            decision = services.upload_rate.hit(owner, limit=limit, window=window)
        except Exception:
            return internal_error("upload rate limit")
        if not decision.allowed:
            wait = max(1, math.ceil(decision.retry_after))
            answer = error(
                429,
                "rate_limited",
                f"more than {limit} uploads in {window:g} s with this key; retry in {wait} s",
            )
            return ApiResponse(answer.status, answer.body, {"Retry-After": str(wait)})
    return Caller(owner)


def upload(
    services: Services,
    *,
    is_multipart: bool,
    file: UploadedFile | None,
    webhook_url: str | None,
    owner: str | None = None,
    idempotency_key: str | None = None,
) -> ApiResponse:
    if not is_multipart:
        return error(
            415, "unsupported_media_type", "send multipart/form-data with the CSV in 'file'"
        )
    if file is None:
        return error(400, "missing_file", "the form has no 'file' part")
    declared = (file.content_type or "").split(";")[0].strip().lower()
    if declared not in CSV_CONTENT_TYPES:
        return error(
            415, "unsupported_media_type", f"'file' is {declared}, expected a CSV (text/csv)"
        )
    replayed = False
    try:
        if idempotency_key is None:
            accepted = accept_upload(services, file.data, webhook_url=webhook_url, owner=owner)
        else:
            accepted, replayed = accept_upload_once(
                services,
                file.data,
                key=parse_key(idempotency_key),
                webhook_url=webhook_url,
                owner=owner,
            )
    except IdempotencyRefused as refused:
        answer = error(refused.status, refused.code, refused.message)
        if refused.retry_after is not None:
            return ApiResponse(
                answer.status, answer.body, {"Retry-After": str(refused.retry_after)}
            )
        return answer
    except CsvInvalid as invalid:
        return error(
            400,
            "invalid_csv",
            f"the CSV has {invalid.total} problem(s)"
            + (
                f"; the first {len(invalid.problems)} are listed"
                if invalid.total > len(invalid.problems)
                else ""
            ),
            [p.as_dict() for p in invalid.problems],
            total_problems=invalid.total,
        )
    except UploadRejected as rejected:
        return error(400, rejected.code, rejected.message)
    except FanOutFailed:
        return error(503, "unavailable", "the work could not be queued; try again")
    except Exception:
        return internal_error("upload")
    location = f"/status/{accepted.request_id}"
    return ApiResponse(
        202,
        {
            "request_id": accepted.request_id,
            "status_url": location,
            "rows": accepted.total_rows,
            "images": accepted.total_images,
        },
        # As Stripe's API says it: this is the first request's answer, given again.
        {"Location": location} | ({"Idempotent-Replayed": "true"} if replayed else {}),
    )


# The query of GET /status, read strictly: a value the API description does not allow is a
# 400 naming the parameter, never silently read as something else (`details=null` is not yes).
_DETAILS = {"1": True, "true": True, "0": False, "false": False}
_PAGE_SIZE = re.compile(r"^[0-9]{1,4}$")
# A page token is the id of the last image of the previous page (`<row>-<position>`, zero
# padded, `is_image_id`): the listing continues after it. Documented, so a client may also
# start anywhere; nothing else reaches the store as a document path.
STATES = {state.value: state for state in ImageState}


@dataclass(frozen=True)
class StatusQuery:
    details: bool = False
    page_size: int = DEFAULT_PAGE
    after: str | None = None
    state: ImageState | None = None


def read_status_query(query: Mapping[str, str]) -> StatusQuery | ApiResponse:
    problems: list[str] = []
    details = _DETAILS.get(query.get("details", "0"))
    if details is None:
        problems.append("details must be 1, true, 0 or false")
    raw_size = query.get("page_size", str(DEFAULT_PAGE))
    size = int(raw_size) if _PAGE_SIZE.match(raw_size) else 0
    if not 1 <= size <= MAX_PAGE:
        problems.append(f"page_size must be a whole number from 1 to {MAX_PAGE}")
    after = query.get("page_token")
    if after is not None and not is_image_id(after):
        problems.append("page_token must be a next_page_token the API gave (e.g. 0000041-00)")
    state = STATES.get(query["state"]) if "state" in query else None
    if "state" in query and state is None:
        problems.append("state must be one of " + ", ".join(STATES))
    if problems:
        return error(400, "invalid_query", "; ".join(problems))
    return StatusQuery(bool(details), size, after, state)


def status(
    services: Services, request_id: str, query: Mapping[str, str], owner: str | None = None
) -> ApiResponse:
    if not is_request_id(request_id):
        return error(400, "invalid_request_id", "a request id is 22 URL-safe characters")
    parsed = read_status_query(query)
    if isinstance(parsed, ApiResponse):
        return parsed
    try:
        report = report_status(
            services,
            request_id,
            details=parsed.details,
            after=parsed.after,
            page_size=parsed.page_size,
            owner=owner,
            state=parsed.state,
        )
    except UnknownRequest:
        return error(404, "not_found", f"no request {request_id}")
    except Exception:
        return internal_error("status")
    return ApiResponse(200, status_body(report))


def resend(services: Services, request_id: str, owner: str | None = None) -> ApiResponse:
    """POST /requests/{id}/webhook/resend: 202 with the delivery's new series, 409 when there
    is nothing to resend yet (or at all)."""
    if not is_request_id(request_id):
        return error(400, "invalid_request_id", "a request id is 22 URL-safe characters")
    limited = _resend_rate(services, owner)
    if limited is not None:
        return limited
    try:
        delivery = resend_webhook(services, request_id, owner=owner)
    except UnknownRequest:
        return error(404, "not_found", f"no request {request_id}")
    except ResendRefused as refused:
        return error(409, refused.code, refused.message)
    except Exception:
        return internal_error("webhook resend")
    location = f"/status/{request_id}?details=1"
    return ApiResponse(
        202, {"request_id": request_id, "webhook": _webhook_body(delivery)}, {"Location": location}
    )


def _resend_rate(services: Services, owner: str | None) -> ApiResponse | None:
    # Every resend makes us POST to the client's URL: a key gets as many resends per window
    # as uploads, counted apart (':' never occurs in a key id, so no upload count is shared).
    settings = services.settings
    if owner is None or settings.upload_rate_limit is None:
        return None
    limit, window = settings.upload_rate_limit
    try:
        decision = services.upload_rate.hit(f"resend:{owner}", limit=limit, window=window)
    except Exception:
        return internal_error("resend rate limit")
    if decision.allowed:
        return None
    wait = max(1, math.ceil(decision.retry_after))
    answer = error(
        429,
        "rate_limited",
        f"more than {limit} resends in {window:g} s with this key; retry in {wait} s",
    )
    return ApiResponse(answer.status, answer.body, {"Retry-After": str(wait)})


def status_body(report: StatusReport) -> dict[str, Any]:
    request = report.request
    progress = report.progress
    body: dict[str, Any] = {
        "request_id": request.request_id,
        "status": request.status.value,
        "progress": {
            "total": progress.total,
            "done": progress.done,
            "failed": progress.failed,
            "pending": progress.pending,
        },
        "created_at": iso(request.created_at),
        "updated_at": iso(report.updated_at),
    }
    if request.completed_at:
        body["completed_at"] = iso(request.completed_at)
    if request.csv_url:
        body["csv_url"] = request.csv_url
        expiry = signed_url.expires_at(request.csv_url)
        if expiry is not None:
            body["csv_url_expires_at"] = iso(expiry)
    if request.error_code:
        body["error"] = {"code": request.error_code, "message": request.error_message}
    if report.details is not None:
        body["images"] = [_image_body(image) for image in report.details.images]
        body["next_page_token"] = report.details.next_after
        body["webhook"] = _webhook_body(report.webhook) if report.webhook else None
    if report.bytes is not None:
        body["bytes"] = {
            "source": report.bytes.source,
            "output": report.bytes.output,
            "saved": report.bytes.source - report.bytes.output,
        }
    return body


def _image_body(image: ImageRecord) -> dict[str, Any]:
    return {
        "id": image.image_id,
        "row": image.row + 1,
        "position": image.position + 1,
        "serial_number": image.serial,
        "input_url": image.input_url,
        "state": image.state.value,
        # The slot whose image this one shares (the same URL): its outcome was copied.
        "same_as": image.same_as,
        "attempts": image.attempts,
        "output_url": image.output_url,
        "output_url_expires_at": _expiry(image.output_url),
        "error": (
            {"code": image.error_code, "message": image.error_message} if image.error_code else None
        ),
        "source_format": image.source_format,
        "source_bytes": image.source_bytes,
        "width": image.width,
        "height": image.height,
        "source_quality": image.source_quality,
        "output_quality": image.output_quality,
        "output_format": image.output_format,
        "output_bytes": image.output_bytes,
        "updated_at": iso(image.updated_at) if image.updated_at else None,
    }


def _expiry(url: str | None) -> str | None:
    moment = signed_url.expires_at(url)
    return iso(moment) if moment is not None else None


def _webhook_body(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "message_id": delivery.message_id,
        "url": delivery.url,
        "state": delivery.state.value,
        "next_attempt_at": iso(delivery.next_attempt_at) if delivery.next_attempt_at else None,
        "attempts": [_attempt_body(a) for a in delivery.attempts],
        "earlier_series": [
            {
                "state": series.state.value,
                "ended_at": iso(series.ended_at),
                "attempts": [_attempt_body(a) for a in series.attempts],
            }
            for series in delivery.earlier_series
        ],
    }


def _attempt_body(attempt: DeliveryAttempt) -> dict[str, Any]:
    return {
        "number": attempt.number,
        "started_at": iso(attempt.started_at),
        "finished_at": iso(attempt.finished_at) if attempt.finished_at else None,
        "status_code": attempt.status_code,
        "error": attempt.error,
        "succeeded": attempt.succeeded,
    }
