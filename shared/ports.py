"""The small interfaces the use cases talk to. Adapters implement them; fakes in tests do too."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol

from shared.domain.messages import Message
from shared.domain.model import (
    CompressedImage,
    DeliveryAttempt,
    DeliveryState,
    ImageJob,
    ImageRecord,
    ImageState,
    Progress,
    Recorded,
    RequestRecord,
    StoredElsewhere,
    StoredOutput,
    Tally,
    UploadKey,
    WebhookDelivery,
)


class RequestRepository(Protocol):
    """Requests. Every write that decides something is conditional on the version read
    (Firestore: the update time), so a stale copy never overwrites a newer state; a write that
    loses returns False and the caller reads again and decides again."""

    def create(self, record: RequestRecord) -> None:
        """Create the request and its `record.tally_shards` tallies, in one commit."""
        ...

    def get(self, request_id: str) -> RequestRecord | None: ...

    def due_for_sweep(
        self, now: datetime, *, after: RequestRecord | None, limit: int
    ) -> list[RequestRecord]:
        """Requests whose `sweep_at` is at or before `now`, by `sweep_at` then id, starting
        after `after` (a record of the previous page)."""
        ...

    def reschedule_sweep(
        self, record: RequestRecord, *, sweep_at: datetime | None, sweeps: int
    ) -> bool:
        """Set when the sweeper looks next, if the request is still as read."""
        ...

    def claim_render(
        self, record: RequestRecord, *, holder: str, until: datetime
    ) -> RequestRecord | None:
        """Take the right to render the output CSV until `until`, on condition that the
        request is still as read (the caller has checked that nobody else's claim is live in
        it): the claimed record, or None when it changed meanwhile."""
        ...

    def settle(
        self,
        request_id: str,
        *,
        holder: str | None,
        completed: bool,
        csv_url: str | None,
        output_path: str | None,
        progress: Progress,
        delivery: WebhookDelivery | None,
        sweep_at: datetime | None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> bool:
        """Move an in-progress request to completed (or failed) and create its webhook
        delivery, atomically. Returns False, changing nothing, when the request had already
        settled, or when `holder` is given and no longer holds the render claim: this is
        what makes finalisation happen exactly once."""
        ...


@dataclass(frozen=True)
class Attempt:
    """One try at an image. `version` is the store's marker of the image as this attempt last
    saw or wrote it; the outcome is written on condition that the image is still so, else read
    again: recorded only while the image is still pending."""

    number: int
    version: object | None = None
    shard: int = 0  # the image's tally, counted in when the outcome is recorded


class ImageRepository(Protocol):
    def create_missing(self, jobs: Sequence[ImageJob]) -> list[ImageRecord]:
        """Create, as pending, the images among `jobs` that do not exist yet (one commit per
        500), and return the record of every job as it now stands."""
        ...

    def get(self, request_id: str, image_id: str) -> ImageRecord | None: ...

    def begin_attempt(self, record: ImageRecord, *, count_now: bool) -> Attempt | None:
        """Start attempt number `record.attempts + 1`. The count is written with the outcome;
        `count_now` writes it before the work as well (on condition that the image is still as
        read), for a task that may have been running when its worker died: a picture that
        kills its worker must still run out of attempts. None when the image changed since it
        was read: read it again."""
        ...

    def record_retry(
        self,
        attempt: Attempt,
        request_id: str,
        image_id: str,
        *,
        code: str,
        message: str,
        retry_at: datetime,
    ) -> bool:
        """The attempt failed in a way worth retrying at `retry_at`: count it and keep its
        error, still pending, so the status shows why the image is taking long. False when an
        outcome had been recorded meanwhile (it stands)."""
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
        content_key: str | None = None,
    ) -> Recorded | StoredElsewhere | None:
        """Record the outcome and count it in the image's tally, in one commit. None when an
        outcome had been recorded meanwhile: the first one stands, and is counted once.
        `content_key` (the fetched bytes' hash) also remembers the output for the request,
        in the same commit, so that the same bytes under another URL are not stored again;
        when another slot's output for them was remembered first, nothing is written and
        StoredElsewhere says which output that is."""
        ...

    def record_copy(
        self, attempt: Attempt, request_id: str, image_id: str, *, output: StoredOutput
    ) -> Recorded | None:
        """Record as done with another slot's output (the same image, or the same bytes),
        like record_done."""
        ...

    def record_failed(
        self, attempt: Attempt, request_id: str, image_id: str, *, code: str, message: str
    ) -> Recorded | None:
        """Like record_done: a result already recorded by a duplicate task stands."""
        ...

    def tally(self, request_id: str, shards: int) -> Tally:
        """The request's counts, summed over its `shards` tallies (shared.domain.tally, the
        request's `tally_shards`), read by id: no image document is read, however many
        there are."""
        ...

    def has_unsettled(self, request_id: str) -> bool:
        """Whether any tally of the request still counts an unsettled image (one query over
        the tallies; images not yet materialised count as unsettled)."""
        ...

    def pending(self, request_id: str, *, after: str | None, limit: int) -> list[ImageRecord]:
        """Pending images in id order, after the id `after`."""
        ...

    def count(self, request_id: str) -> int:
        """How many image records exist (materialised so far)."""
        ...

    def get_many(self, request_id: str, image_ids: Sequence[str]) -> list[ImageRecord]:
        """The images of these ids that exist, in the order given: read by id, with no
        query (the finaliser knows every id from the uploaded CSV's rows)."""
        ...

    def page(
        self,
        request_id: str,
        *,
        after: str | None,
        limit: int,
        state: ImageState | None = None,
    ) -> list[ImageRecord]:
        """Up to `limit` images in input order after the image id `after`; only those in
        `state` when one is given."""
        ...


class DeliveryRepository(Protocol):
    def get(self, request_id: str) -> WebhookDelivery | None: ...

    def claim(
        self, delivery: WebhookDelivery, *, now: datetime, lease_seconds: float
    ) -> WebhookDelivery | None:
        """Take the right to make the next attempt, on condition that the delivery is still as
        read (pending, due, unclaimed at `now`): the claimed delivery, or None when someone
        else wrote it meanwhile."""
        ...

    def record_attempt(
        self,
        claimed: WebhookDelivery,
        attempt: DeliveryAttempt,
        *,
        state: DeliveryState,
        next_attempt_at: datetime | None,
    ) -> bool:
        """Append the attempt and release the claim, on condition that the claim is still
        this one; False when the claim expired and someone else took over."""
        ...

    def restart(self, request_id: str, *, now: datetime) -> WebhookDelivery | None:
        """Start a new series of attempts at the same message (same webhook-id), due now,
        keeping the finished series beside it. Only a delivery that is delivered or given up
        restarts; None, changing nothing, when there is no delivery or a series is still
        running (its own retries will go on)."""
        ...


class UploadKeys(Protocol):
    """Idempotency keys of uploads, kept for a day (SECURITY.md, docs/decisions.md)."""

    def reserve(self, key: UploadKey) -> UploadKey | None:
        """Create the key; None when it exists already."""
        ...

    def get(self, key_id: str) -> UploadKey | None: ...

    def replace(self, current: UploadKey, new: UploadKey) -> UploadKey | None:
        """Write `new` over `current` on condition that it is still as read; None if not."""
        ...

    def release(self, current: UploadKey) -> None:
        """Forget the key (nothing was accepted under it), if it is still as read."""
        ...


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

    def delete_output(self, path: str) -> None:
        """Remove a result nothing refers to; nothing happens when there is none."""
        ...

    def open_upload(self, path: str) -> BinaryIO:
        """The upload as a stream read a chunk at a time (close it). Raises BlobMissing."""
        ...

    def put_output_stream(self, path: str, chunks: Iterable[bytes], content_type: str) -> str:
        """Like put_output, written a chunk at a time as `chunks` yields them (a resumable
        upload): what is held in memory does not grow with the object."""
        ...

    def url_of(self, path: str) -> str:
        """A URL of a stored result that a plain HTTP GET can fetch now (a signed one is
        minted fresh, for the whole signed-URL lifetime)."""
        ...

    def urls_of(self, paths: Sequence[str]) -> list[str]:
        """`url_of` of each path, in order, as fast as the store can mint them."""
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
    """Tells the finaliser that the last image of one of a request's tallies settled.

    In production the Firestore trigger on the tallies does this by itself, so the adapter
    does nothing; the local profile enqueues a Celery task that runs the same use case.
    """

    def shard_settled(self, request_id: str, shard: int) -> None: ...


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

    def sleep(self, seconds: float) -> None:
        """Wait a moment within a use case (a fake clock just moves on)."""
        ...


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
