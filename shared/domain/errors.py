"""The error vocabulary users see in the status API, and the exceptions that carry it.

One word per cause, like thumbor's loader results: a client reading `error.code` can tell a
dead link (`http_error`) from a hostile one (`blocked_address`) from a broken file
(`corrupt_image`) without parsing prose.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # The URL itself
    INVALID_URL = "invalid_url"
    BLOCKED_ADDRESS = "blocked_address"
    DNS_FAILURE = "dns_failure"
    # Talking to the image host
    CONNECT_FAILED = "connect_failed"
    TIMEOUT = "timeout"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    HTTP_ERROR = "http_error"  # a 4xx that retrying will not fix
    UPSTREAM_ERROR = "upstream_error"  # 5xx, 408, 429 still failing after every retry
    TLS_ERROR = "tls_error"
    # The bytes
    TOO_LARGE = "too_large"
    TOO_MANY_PIXELS = "too_many_pixels"
    TOO_MANY_SCANS = "too_many_scans"  # a progressive JPEG with more scans than MAX_JPEG_SCANS
    NOT_AN_IMAGE = "not_an_image"
    UNSUPPORTED_FORMAT = "unsupported_format"
    CORRUPT_IMAGE = "corrupt_image"
    # Ours
    STORAGE_ERROR = "storage_error"
    WORKER_LOST = "worker_lost"  # every attempt ended with its worker dead, no outcome
    INTERNAL = "internal"


class ImageFailure(Exception):
    """Processing one image failed. `transient` says whether trying again may succeed."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        transient: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.transient = transient
        self.retry_after = retry_after


class RetryLater(Exception):
    """Raised by a use case when the platform should run the same task again later.

    The Celery task queues the same message again after `after_seconds` (through the delayed
    set, not a Celery ETA: see `celery_queue`); a Cloud Tasks target answers 503 with
    Retry-After, so that the queue's own backoff applies.
    """

    def __init__(self, reason: str, *, after_seconds: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.after_seconds = after_seconds
