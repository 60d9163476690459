"""What a request and its images are, independent of where they are stored."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple


class RequestStatus(StrEnum):
    IN_PROGRESS = "in progress"
    COMPLETED = "completed"
    FAILED = "failed"


class ImageState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self is not ImageState.PENDING


# 16 random bytes = 128 bits (SPEC asks for at least 122), URL-safe base64 without padding.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")


def new_request_id() -> str:
    """128 random bits, URL-safe, never starting with '-': a command line would take such an
    id for an option (`imgsvc status -bX...` failed as "no such option: -b"; CI found it,
    one id in 64). Drawing again costs 0.02 bits of the 128."""
    while (drawn := secrets.token_urlsafe(16)).startswith("-"):
        pass
    return drawn


def is_request_id(value: str) -> bool:
    return bool(_REQUEST_ID.match(value))


_IMAGE_ID = re.compile(r"^[0-9]{7}-[0-9]{2}$")


def is_image_id(value: str) -> bool:
    return bool(_IMAGE_ID.match(value))


def image_id(row: int, position: int) -> str:
    """Document id of the `position`-th URL of the `row`-th data row (both 0-based).

    Zero-padded so that ordering by id is input order: the output CSV and the paginated
    details both read images in this order.
    """
    return f"{row:07d}-{position:02d}"


class ImageJob(NamedTuple):
    """One input URL to fetch and compress; the unit of fan-out.

    A named tuple rather than a frozen dataclass: an upload of 100,000 URLs makes as many, and a
    frozen dataclass takes three times as long to build (a third of the upload's planning)."""

    request_id: str
    image_id: str
    row: int
    position: int
    serial: str
    url: str
    shard: int = 0  # its tally (shared.domain.tally)
    # The first slot of the request that names the same image (shared.domain.same_image):
    # this one copies its outcome instead of fetching it again.
    same_as: str | None = None
    # The other way round: the first slots that repeat this one (at most FOLLOWERS_NOTED),
    # told to copy its outcome as soon as it is recorded.
    followers: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageSlice:
    """A batch of jobs materialised together (one Firestore commit, one task)."""

    request_id: str
    index: int
    jobs: tuple[ImageJob, ...]


@dataclass(frozen=True)
class CompressedImage:
    """What the codec produced, with the facts the status API reports about it."""

    data: bytes
    output_format: str  # "jpeg" | "webp"
    content_type: str
    extension: str
    width: int
    height: int
    source_format: str
    source_quality: int
    output_quality: int
    animated: bool = False


@dataclass(frozen=True)
class ImageRecord:
    """An image as the store keeps it."""

    request_id: str
    image_id: str
    row: int
    position: int
    serial: str
    input_url: str
    state: ImageState
    shard: int = 0
    same_as: str | None = None
    followers: tuple[str, ...] = ()
    attempts: int = 0
    error_code: str | None = None
    error_message: str | None = None
    output_url: str | None = None
    output_path: str | None = None
    source_format: str | None = None
    source_bytes: int | None = None
    width: int | None = None
    height: int | None = None
    source_quality: int | None = None
    output_quality: int | None = None
    output_format: str | None = None
    output_bytes: int | None = None
    updated_at: datetime | None = None
    # When a transient failure's retry is due: until then, a pending image is waiting on
    # purpose, not lost (the sweeper leaves it alone).
    retry_at: datetime | None = None
    # The store's marker of this version of the record (Firestore: its update time), used as
    # a precondition so that duplicated tasks never overwrite each other's outcome.
    version: object | None = field(default=None, compare=False)

    def stored_output(self) -> StoredOutput | None:
        """What this image's compression left in storage, when it is done."""
        if self.state is not ImageState.DONE or not self.output_url or not self.output_path:
            return None
        return StoredOutput(
            output_url=self.output_url,
            output_path=self.output_path,
            source_format=self.source_format or "",
            source_bytes=self.source_bytes or 0,
            width=self.width or 0,
            height=self.height or 0,
            source_quality=self.source_quality or 0,
            output_quality=self.output_quality or 0,
            output_format=self.output_format or "",
            output_bytes=self.output_bytes or 0,
        )


@dataclass(frozen=True)
class StoredOutput:
    """A compressed image in storage and the facts about it: what a slot that names the same
    image (or the same bytes) copies instead of doing the work again."""

    output_url: str
    output_path: str
    source_format: str
    source_bytes: int
    width: int
    height: int
    source_quality: int
    output_quality: int
    output_format: str
    output_bytes: int


@dataclass(frozen=True)
class StoredElsewhere:
    """What recording an output found instead: another slot of the request recorded the
    output of the same bytes first (shared.domain.same_image). Copy it."""

    output: StoredOutput


@dataclass(frozen=True)
class Progress:
    total: int
    done: int
    failed: int

    @property
    def pending(self) -> int:
        return max(0, self.total - self.done - self.failed)


@dataclass(frozen=True)
class ByteTotals:
    """Bytes of the done images of a request: as fetched, and as stored."""

    source: int
    output: int


@dataclass(frozen=True)
class Tally:
    """A running request's counts, summed over its tallies (shared.domain.tally)."""

    done: int = 0
    failed: int = 0
    source_bytes: int = 0
    output_bytes: int = 0
    unsettled_shards: int = 0
    # When an image last settled (None before the first).
    updated_at: datetime | None = None

    def progress(self, total: int) -> Progress:
        return Progress(total=total, done=self.done, failed=self.failed)

    @property
    def bytes(self) -> ByteTotals:
        return ByteTotals(source=self.source_bytes, output=self.output_bytes)


@dataclass(frozen=True)
class Recorded:
    """An outcome that was recorded (a duplicate's never is), and whether it was the last of
    its tally to settle."""

    shard: int
    shard_settled: bool


@dataclass(frozen=True)
class RequestRecord:
    request_id: str
    status: RequestStatus
    total_images: int
    total_rows: int
    input_path: str
    created_at: datetime
    updated_at: datetime
    webhook_url: str | None = None
    csv_url: str | None = None
    output_path: str | None = None
    completed_at: datetime | None = None
    error_code: str | None = None
    error_message: str | None = None
    # Final counts, written once at completion so that status of a finished request is one read.
    final_progress: Progress | None = None
    owner: str | None = None
    # When the sweeper should look at this request next (None: never again), and how many
    # times it has had to re-drive it (each time it waits twice as long before the next).
    sweep_at: datetime | None = None
    sweeps: int = 0
    # Who is rendering the output CSV, until when: a finaliser that dies holding the claim
    # blocks nobody for longer than that.
    render_holder: str | None = None
    render_until: datetime | None = None
    # How many tally documents count its images (shared.domain.tally).
    tally_shards: int = 1
    version: object | None = field(default=None, compare=False)


class DeliveryState(StrEnum):
    PENDING = "pending"  # waiting for its next attempt
    DELIVERED = "delivered"
    GAVE_UP = "gave_up"


@dataclass(frozen=True)
class DeliveryAttempt:
    number: int
    started_at: datetime
    finished_at: datetime | None
    status_code: int | None
    error: str | None
    succeeded: bool


@dataclass(frozen=True)
class DeliverySeries:
    """A finished series of attempts at a webhook message, kept when a resend starts anew."""

    state: DeliveryState
    attempts: tuple[DeliveryAttempt, ...]
    ended_at: datetime


@dataclass(frozen=True)
class WebhookDelivery:
    """The one webhook message of a request and every attempt to deliver it."""

    request_id: str
    message_id: str
    url: str
    payload: dict[str, object]
    state: DeliveryState
    attempts: tuple[DeliveryAttempt, ...] = ()
    next_attempt_at: datetime | None = None
    # Set while an attempt is under way so a duplicated task does not send it twice.
    claimed_until: datetime | None = None
    version: object | None = field(default=None, compare=False)
    # Series that ended (delivered or given up) before a resend started the current one.
    earlier_series: tuple[DeliverySeries, ...] = ()

    def due_at(self) -> datetime | None:
        """When the next attempt may be made: after the scheduled time and after any claim
        (a live claim means another process is making an attempt right now)."""
        moments = [m for m in (self.next_attempt_at, self.claimed_until) if m is not None]
        return max(moments) if moments else None


@dataclass(frozen=True)
class UploadKey:
    """An `Idempotency-Key` a client sent with an upload, and what became of it.

    `fingerprint` identifies the upload (its CSV and webhook), so the same key with another
    body can be refused; `request_id` is the request the key stands for; `state` is
    "processing" until the request is recorded, then "done" with the counts the 202 gave.
    """

    key_id: str
    fingerprint: str
    request_id: str
    state: str
    lease_until: datetime
    expires_at: datetime
    total_rows: int | None = None
    total_images: int | None = None
    version: object | None = field(default=None, compare=False)
