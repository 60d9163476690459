"""The small interfaces the use cases talk to. Adapters implement them; fakes in tests do too."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from shared.domain.messages import Message
from shared.domain.model import (
    CompressedImage,
    DeliveryAttempt,
    DeliveryState,
    ImageJob,
    ImageRecord,
    Progress,
    RequestRecord,
    WebhookDelivery,
)


class RequestRepository(Protocol):
    def create(self, record: RequestRecord) -> None: ...

    def get(self, request_id: str) -> RequestRecord | None: ...

    def in_progress(self, limit: int) -> list[RequestRecord]:
        """Requests not yet settled, oldest first."""
        ...

    def settle(
        self,
        request_id: str,
        *,
        completed: bool,
        csv_url: str | None,
        output_path: str | None,
        progress: Progress,
        delivery: WebhookDelivery | None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> bool:
        """Move an in-progress request to completed (or failed) and create its webhook
        delivery, atomically. Returns False, changing nothing, when the request had already
        settled: this is what makes finalisation happen exactly once."""
        ...


@dataclass(frozen=True)
class Attempt:
    """One try at an image. `version` is the store's marker of the image as this attempt last
    saw or wrote it; the outcome is recorded only if nobody else wrote the image meanwhile, or
    if it is still pending."""

    number: int
    version: object | None = None


class ImageRepository(Protocol):
    def create_missing(self, jobs: Sequence[ImageJob]) -> list[ImageRecord]:
        """Create, as pending, the images among `jobs` that do not exist yet (one commit per
        500), and return the record of every job as it now stands."""
        ...

    def get(self, request_id: str, image_id: str) -> ImageRecord | None: ...

    def begin_attempt(self, record: ImageRecord, *, count_now: bool) -> Attempt:
        """Start attempt number `record.attempts + 1`. The count is written with the outcome;
        `count_now` writes it before the work as well, for a task that was redelivered after
        a crash: a picture that kills its worker must still run out of attempts."""
        ...

    def record_retry(
        self, attempt: Attempt, request_id: str, image_id: str, *, code: str, message: str
    ) -> None:
        """The attempt failed in a way worth retrying: count it and keep its error, still
        pending, so the status shows why the image is taking long."""
        ...

    def record_done(
        self,
        attempt: Attempt,
        request_id: str,
        image_id: str,
        *,
        output_url: str,
        output_path: str,
        image: CompressedImage,
        source_bytes: int,
    ) -> None: ...

    def record_failed(
        self, attempt: Attempt, request_id: str, image_id: str, *, code: str, message: str
    ) -> None:
        """Like record_done: a result already recorded by a duplicate task stands."""
        ...

    def has_pending(self, request_id: str) -> bool: ...

    def pending_ids(self, request_id: str, limit: int) -> list[str]: ...

    def progress(self, request_id: str, total: int) -> Progress:
        """Counts of done and failed images, read without touching any hot document."""
        ...

    def count(self, request_id: str) -> int:
        """How many image records exist (materialised so far)."""
        ...

    def iterate(self, request_id: str) -> Iterator[ImageRecord]:
        """Every image of the request in input order."""
        ...

    def page(self, request_id: str, *, after: str | None, limit: int) -> list[ImageRecord]: ...

    def last_update(self, request_id: str) -> datetime | None: ...


class DeliveryRepository(Protocol):
    def get(self, request_id: str) -> WebhookDelivery | None: ...

    def claim(
        self, request_id: str, *, now: datetime, lease_seconds: float
    ) -> WebhookDelivery | None:
        """Atomically take the right to make the next attempt: returns the delivery when it is
        pending, due and not claimed by someone else; None otherwise."""
        ...

    def record_attempt(
        self,
        request_id: str,
        attempt: DeliveryAttempt,
        *,
        state: DeliveryState,
        next_attempt_at: datetime | None,
    ) -> None: ...


class BlobMissing(LookupError):
    """The object asked for does not exist."""


class BlobStore(Protocol):
    def put_upload(self, path: str, data: bytes, content_type: str) -> None: ...

    def get_upload(self, path: str) -> bytes:
        """Raises BlobMissing when there is no such upload."""
        ...

    def put_output(self, path: str, data: bytes, content_type: str) -> str:
        """Store a result and return a URL that a plain HTTP GET can fetch."""
        ...


@dataclass(frozen=True)
class FetchedImage:
    data: bytes
    final_url: str
    content_type: str | None


class ImageFetcher(Protocol):
    def fetch(self, url: str) -> FetchedImage:
        """Raises ImageFailure (transient or not) when the image cannot be had."""
        ...


class ImageCodec(Protocol):
    def compress(self, data: bytes) -> CompressedImage:
        """Re-encode at half the source quality. Raises ImageFailure (never transient)."""
        ...


class TaskQueue(Protocol):
    """Work to be done later, at least once: Celery locally, Cloud Tasks in production.

    Messages are hints (`shared.domain.messages`): the adapter routes each by its lane and
    may drop a second copy by its dedup key, but never needs to know what a kind means."""

    def send(self, messages: Sequence[Message], *, delay_seconds: float = 0.0) -> None:
        """Queue every message, due after `delay_seconds`. Raises when they could not all be
        queued; sending the same messages again is then safe."""
        ...


class ImageEvents(Protocol):
    """Tells the finaliser that an image reached a terminal state.

    In production the Firestore trigger does this by itself, so the adapter does nothing; the
    local profile enqueues a Celery task that runs the same finalise use case.
    """

    def image_settled(self, request_id: str, image_id: str) -> None: ...


@dataclass(frozen=True)
class WebhookResponse:
    status_code: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookTransport(Protocol):
    def post(self, url: str, body: bytes, headers: dict[str, str]) -> WebhookResponse: ...


class Clock(Protocol):
    def now(self) -> datetime: ...


class UrlGuard(Protocol):
    def check_url(self, url: str) -> None:
        """Raise ImageFailure when the URL may not be contacted (scheme, credentials,
        blocked or unresolvable address)."""
        ...


class FetchSlot(Protocol):
    def release(self) -> None:
        """Give the slot back; releasing twice is harmless."""
        ...


class FetchLimiter(Protocol):
    """Bounds the fetches in progress at once, in all and per host (FETCH_MAX_CONCURRENT,
    FETCH_MAX_PER_HOST). A slot whose holder died frees itself once a fetch's deadline has
    surely passed."""

    def acquire(self, host: str, *, wait: float) -> FetchSlot | None:
        """A slot for a fetch from `host`, waiting up to `wait` seconds for one to free up;
        None when none did (the caller tries again later, it does not fail)."""
        ...


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    retry_after: float = 0.0  # seconds until the current window ends, when refused


class RateLimiter(Protocol):
    def hit(self, key: str, *, limit: int, window: float) -> RateDecision:
        """Count one event for `key` in the current fixed window of `window` seconds; refused
        when it would be more than `limit`."""
        ...
