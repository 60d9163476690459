"""In-memory stand-ins for the ports, for unit tests of the use cases only.

They keep the contract of the real adapters (the same protocols, the same conditional
writes); the integration tests run the same scenarios against the real emulators.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, TypeVar

from google.api_core import exceptions as gexc
from google.events.cloud.firestore import Document, DocumentEventData, Value

from shared.config import Settings
from shared.domain.errors import ErrorCode, ImageFailure, RetryLater
from shared.domain.messages import (
    DeliverWebhook,
    MaterializeSlice,
    Message,
    ProcessImage,
    ShardSettled,
)
from shared.domain.model import (
    CompressedImage,
    DeliveryAttempt,
    DeliverySeries,
    DeliveryState,
    ImageJob,
    ImageRecord,
    ImageSlice,
    ImageState,
    Progress,
    Recorded,
    RequestRecord,
    RequestStatus,
    StoredElsewhere,
    StoredOutput,
    Tally,
    UploadKey,
    WebhookDelivery,
)
from shared.domain.tally import shard_totals
from shared.ports import Attempt, BlobMissing, FetchedImage, RateDecision, WebhookResponse
from shared.usecases.fan_out import materialize_slice
from shared.usecases.finalize_request import on_shard_settled
from shared.usecases.process_image import process_image
from shared.usecases.services import Services


class FakeClock:
    def __init__(self) -> None:
        self.moment = datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)


class UpdateTimes:
    """Firestore gives every write of a document a new update time, and a conditional write
    succeeds only if the document still has the update time the writer read. These fakes keep
    a version per document the same way (one counter, like commit times) and check it on
    every conditional write. Each call is atomic, as one commit is on Firestore's server
    (`atomic` below); nothing is held between calls, as nothing is in Firestore, so a use
    case racing another sees exactly the conflicts it would see there."""

    def __init__(self) -> None:
        self._last = 0
        self.lock = threading.RLock()

    def next(self) -> int:
        self._last += 1
        return self._last


_T = TypeVar("_T")


def atomic(method: Callable[..., _T]) -> Callable[..., _T]:
    """One store call as one server-side commit: it happens whole, or not at all."""

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> _T:
        with self._times.lock:
            return method(self, *args, **kwargs)

    return call


@dataclasses.dataclass
class FakeTally:
    total: int
    left: int
    done: int = 0
    failed: int = 0
    source_bytes: int = 0
    output_bytes: int = 0
    updated_at: datetime | None = None


class FakeTallies:
    """The `tally` documents of every request (shared.domain.tally), which the fake requests
    create and the fake images count in, as the Firestore adapters do."""

    def __init__(self) -> None:
        self.of: dict[str, list[FakeTally]] = {}


class FakeRequests:
    def __init__(
        self, times: UpdateTimes | None = None, tallies: FakeTallies | None = None
    ) -> None:
        self.records: dict[str, RequestRecord] = {}
        self.deliveries: FakeDeliveries | None = None
        self.transitions = 0
        self._times = times or UpdateTimes()
        self.tallies = tallies or FakeTallies()

    def _write(self, record: RequestRecord) -> RequestRecord:
        stored = dataclasses.replace(record, version=self._times.next())
        self.records[record.request_id] = stored
        return stored

    @atomic
    def create(self, record: RequestRecord) -> None:
        if record.request_id in self.records:
            raise gexc.AlreadyExists(f"requests/{record.request_id} exists")
        totals = shard_totals(record.total_images)
        assert len(totals) == record.tally_shards
        self.tallies.of[record.request_id] = [FakeTally(total, total) for total in totals]
        self._write(record)

    @atomic
    def get(self, request_id: str) -> RequestRecord | None:
        return self.records.get(request_id)

    @atomic
    def due_for_sweep(
        self, now: datetime, *, after: RequestRecord | None, limit: int
    ) -> list[RequestRecord]:
        def key(r: RequestRecord) -> tuple[datetime, str]:
            assert r.sweep_at is not None
            return (r.sweep_at, r.request_id)

        due = sorted(
            (r for r in self.records.values() if r.sweep_at is not None and r.sweep_at <= now),
            key=key,
        )
        if after is not None:
            due = [r for r in due if key(r) > key(after)]
        return due[:limit]

    def _unchanged(self, record: RequestRecord) -> bool:
        stored = self.records.get(record.request_id)
        return stored is not None and stored.version == record.version

    @atomic
    def reschedule_sweep(
        self, record: RequestRecord, *, sweep_at: datetime | None, sweeps: int
    ) -> bool:
        if not self._unchanged(record):
            return False
        current = self.records[record.request_id]
        self._write(dataclasses.replace(current, sweep_at=sweep_at, sweeps=sweeps))
        return True

    @atomic
    def claim_render(
        self, record: RequestRecord, *, holder: str, until: datetime
    ) -> RequestRecord | None:
        if not self._unchanged(record):
            return None
        current = self.records[record.request_id]
        return self._write(dataclasses.replace(current, render_holder=holder, render_until=until))

    @atomic
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
        record = self.records.get(request_id)
        if record is None or record.status is not RequestStatus.IN_PROGRESS:
            return False
        if holder is not None and record.render_holder != holder:
            return False
        self._write(
            dataclasses.replace(
                record,
                status=RequestStatus.COMPLETED if completed else RequestStatus.FAILED,
                csv_url=csv_url,
                output_path=output_path,
                final_progress=progress,
                error_code=error_code,
                error_message=error_message,
                sweep_at=sweep_at,
                render_until=None,
            )
        )
        if delivery is not None:
            assert self.deliveries is not None
            self.deliveries.put(delivery)
        self.transitions += 1
        return True


class FakeImages:
    def __init__(
        self,
        clock: FakeClock,
        times: UpdateTimes | None = None,
        tallies: FakeTallies | None = None,
    ) -> None:
        self.records: dict[tuple[str, str], ImageRecord] = {}
        self.contents: dict[tuple[str, str], StoredOutput] = {}
        self._clock = clock
        self._times = times or UpdateTimes()
        self.tallies = tallies or FakeTallies()

    def _write(self, record: ImageRecord, **fields: object) -> ImageRecord:
        now = self._clock.now()
        stored = dataclasses.replace(
            record,
            **fields,  # type: ignore[arg-type]
            updated_at=now,
            version=self._times.next(),
        )
        self.records[(record.request_id, record.image_id)] = stored
        return stored

    @atomic
    def create_missing(self, jobs: Sequence[ImageJob]) -> list[ImageRecord]:
        out = []
        for job in jobs:
            key = (job.request_id, job.image_id)
            if key not in self.records:
                self._write(
                    ImageRecord(
                        request_id=job.request_id,
                        image_id=job.image_id,
                        row=job.row,
                        position=job.position,
                        serial=job.serial,
                        input_url=job.url,
                        state=ImageState.PENDING,
                        shard=job.shard,
                        same_as=job.same_as,
                        followers=job.followers,
                    )
                )
            out.append(self.records[key])
        return out

    @atomic
    def get(self, request_id: str, image_id: str) -> ImageRecord | None:
        return self.records.get((request_id, image_id))

    @atomic
    def begin_attempt(self, record: ImageRecord, *, count_now: bool) -> Attempt | None:
        number = record.attempts + 1
        if not count_now:
            return Attempt(number, record.version, record.shard)
        stored = self.records[(record.request_id, record.image_id)]
        if stored.version != record.version:
            return None
        return Attempt(number, self._write(stored, attempts=number).version, record.shard)

    def _record(self, attempt: Attempt, key: tuple[str, str], **fields: object) -> bool:
        # As the Firestore adapter: the write holds if the image is as the attempt saw it;
        # else, read again: an outcome stands, a pending image takes the write.
        stored = self.records[key]
        counted = attempt.number
        if stored.version != attempt.version:
            if stored.state.terminal:
                return False
            counted = max(counted, stored.attempts)
        self._write(stored, attempts=counted, **fields)
        return True

    def _settle(self, attempt: Attempt, key: tuple[str, str], **fields: object) -> Recorded | None:
        # The outcome and its count in the tally in one commit, as the Firestore adapter.
        if not self._record(attempt, key, **fields):
            return None
        tally = self.tallies.of[key[0]][attempt.shard]
        tally.left -= 1
        if fields["state"] is ImageState.DONE:
            tally.done += 1
            tally.source_bytes += int(fields["source_bytes"])  # type: ignore[call-overload]
            tally.output_bytes += int(fields["output_bytes"])  # type: ignore[call-overload]
        else:
            tally.failed += 1
        tally.updated_at = self._clock.now()
        return Recorded(shard=attempt.shard, shard_settled=tally.left == 0)

    @atomic
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
        return self._record(
            attempt,
            (request_id, image_id),
            error_code=code,
            error_message=message,
            retry_at=retry_at,
        )

    @atomic
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
        output = StoredOutput(
            output_url=output_url,
            output_path=output_path,
            source_format=image.source_format,
            source_bytes=source_bytes,
            width=image.width,
            height=image.height,
            source_quality=image.source_quality,
            output_quality=image.output_quality,
            output_format=image.output_format,
            output_bytes=len(image.data),
        )
        key = (request_id, content_key or "")
        if content_key is not None and key in self.contents:
            # As Firestore's commit, which creates the bytes' record: it fails, and nothing is
            # written. An outcome recorded meanwhile stands; else the other slot's output.
            if self.records[(request_id, image_id)].state.terminal:
                return None
            return StoredElsewhere(self.contents[key])
        recorded = self._settle_done(attempt, (request_id, image_id), output)
        if recorded is not None and content_key is not None:
            self.contents[key] = output  # in the same commit
        return recorded

    @atomic
    def record_copy(
        self, attempt: Attempt, request_id: str, image_id: str, *, output: StoredOutput
    ) -> Recorded | None:
        return self._settle_done(attempt, (request_id, image_id), output)

    def _settle_done(
        self, attempt: Attempt, key: tuple[str, str], output: StoredOutput
    ) -> Recorded | None:
        return self._settle(
            attempt,
            key,
            state=ImageState.DONE,
            **dataclasses.asdict(output),
            error_code=None,
            error_message=None,
            retry_at=None,
        )

    @atomic
    def record_failed(
        self, attempt: Attempt, request_id: str, image_id: str, *, code: str, message: str
    ) -> Recorded | None:
        return self._settle(
            attempt,
            (request_id, image_id),
            state=ImageState.FAILED,
            error_code=code,
            error_message=message,
            retry_at=None,
        )

    def _of(self, request_id: str) -> list[ImageRecord]:
        return sorted(
            (r for (rid, _), r in self.records.items() if rid == request_id),
            key=lambda r: r.image_id,
        )

    @atomic
    def tally(self, request_id: str, shards: int) -> Tally:
        tallies = self.tallies.of.get(request_id, [])
        # As strict as reading the tallies by id: a caller that names the wrong number of
        # them would miss some, or read ones that do not exist.
        assert shards == len(tallies), f"{request_id} has {len(tallies)} tallies, not {shards}"
        moments = [t.updated_at for t in tallies if t.updated_at is not None]
        return Tally(
            done=sum(t.done for t in tallies),
            failed=sum(t.failed for t in tallies),
            source_bytes=sum(t.source_bytes for t in tallies),
            output_bytes=sum(t.output_bytes for t in tallies),
            unsettled_shards=sum(t.left > 0 for t in tallies),
            updated_at=max(moments) if moments else None,
        )

    @atomic
    def has_unsettled(self, request_id: str) -> bool:
        return any(t.left > 0 for t in self.tallies.of.get(request_id, []))

    @atomic
    def pending(self, request_id: str, *, after: str | None, limit: int) -> list[ImageRecord]:
        return [
            r
            for r in self._of(request_id)
            if r.state is ImageState.PENDING and (after is None or r.image_id > after)
        ][:limit]

    @atomic
    def count(self, request_id: str) -> int:
        return len(self._of(request_id))

    @atomic
    def get_many(self, request_id: str, image_ids: Sequence[str]) -> list[ImageRecord]:
        return [self.records[(request_id, i)] for i in image_ids if (request_id, i) in self.records]

    @atomic
    def iterate(self, request_id: str) -> Iterator[ImageRecord]:
        """Every image of the request in input order (for tests to look at)."""
        return iter(self._of(request_id))

    @atomic
    def page(
        self,
        request_id: str,
        *,
        after: str | None,
        limit: int,
        state: ImageState | None = None,
    ) -> list[ImageRecord]:
        images = [
            r
            for r in self._of(request_id)
            if (after is None or r.image_id > after) and (state is None or r.state is state)
        ]
        return images[:limit]


class FakeDeliveries:
    def __init__(self, times: UpdateTimes | None = None) -> None:
        self.items: dict[str, WebhookDelivery] = {}
        self._times = times or UpdateTimes()

    @atomic
    def put(self, delivery: WebhookDelivery) -> WebhookDelivery:
        stored = dataclasses.replace(delivery, version=self._times.next())
        self.items[delivery.request_id] = stored
        return stored

    @atomic
    def get(self, request_id: str) -> WebhookDelivery | None:
        return self.items.get(request_id)

    def _unchanged(self, delivery: WebhookDelivery) -> bool:
        stored = self.items.get(delivery.request_id)
        return stored is not None and stored.version == delivery.version

    @atomic
    def claim(
        self, delivery: WebhookDelivery, *, now: datetime, lease_seconds: float
    ) -> WebhookDelivery | None:
        if not self._unchanged(delivery):
            return None
        return self.put(
            dataclasses.replace(
                self.items[delivery.request_id],
                claimed_until=now + timedelta(seconds=lease_seconds),
            )
        )

    @atomic
    def record_attempt(
        self,
        claimed: WebhookDelivery,
        attempt: DeliveryAttempt,
        *,
        state: DeliveryState,
        next_attempt_at: datetime | None,
    ) -> bool:
        if not self._unchanged(claimed):
            return False
        current = self.items[claimed.request_id]
        self.put(
            dataclasses.replace(
                current,
                attempts=(*current.attempts, attempt),
                state=state,
                next_attempt_at=next_attempt_at,
                claimed_until=None,
            )
        )
        return True

    @atomic
    def restart(self, request_id: str, *, now: datetime) -> WebhookDelivery | None:
        delivery = self.items.get(request_id)
        if delivery is None or delivery.state is DeliveryState.PENDING:
            return None
        ended = (delivery.attempts[-1].finished_at if delivery.attempts else None) or now
        finished = DeliverySeries(delivery.state, delivery.attempts, ended)
        return self.put(
            dataclasses.replace(
                delivery,
                earlier_series=(*delivery.earlier_series, finished),
                attempts=(),
                state=DeliveryState.PENDING,
                next_attempt_at=None,
                claimed_until=None,
            )
        )


class FakeUploadKeys:
    def __init__(self, times: UpdateTimes | None = None) -> None:
        self.keys: dict[str, UploadKey] = {}
        self._times = times or UpdateTimes()

    def _put(self, key: UploadKey) -> UploadKey:
        stored = dataclasses.replace(key, version=self._times.next())
        self.keys[key.key_id] = stored
        return stored

    @atomic
    def reserve(self, key: UploadKey) -> UploadKey | None:
        if key.key_id in self.keys:
            return None
        return self._put(key)

    @atomic
    def get(self, key_id: str) -> UploadKey | None:
        return self.keys.get(key_id)

    @atomic
    def replace(self, current: UploadKey, new: UploadKey) -> UploadKey | None:
        stored = self.keys.get(current.key_id)
        if stored is None or stored.version != current.version:
            return None
        return self._put(new)

    @atomic
    def release(self, current: UploadKey) -> None:
        stored = self.keys.get(current.key_id)
        if stored is not None and stored.version == current.version:
            del self.keys[current.key_id]


class FakeBlobs:
    def __init__(self) -> None:
        self.uploads: dict[str, bytes] = {}
        self.outputs: dict[str, tuple[bytes, str]] = {}
        self.streamed: list[str] = []  # the objects written through put_output_stream

    def put_upload(self, path: str, data: bytes, content_type: str) -> None:
        self.uploads[path] = data

    def get_upload(self, path: str) -> bytes:
        if path not in self.uploads:
            raise BlobMissing(path)
        return self.uploads[path]

    def put_output(self, path: str, data: bytes, content_type: str) -> str:
        self.outputs[path] = (data, content_type)
        return self.url_of(path)

    def delete_output(self, path: str) -> None:
        self.outputs.pop(path, None)

    def url_of(self, path: str) -> str:
        return f"https://storage.test/out/{path}"

    def open_upload(self, path: str) -> BinaryIO:
        return io.BytesIO(self.get_upload(path))

    def put_output_stream(self, path: str, chunks: Iterable[bytes], content_type: str) -> str:
        self.streamed.append(path)
        return self.put_output(path, b"".join(chunks), content_type)

    def urls_of(self, paths: Sequence[str]) -> list[str]:
        return [self.url_of(path) for path in paths]


class FakeFetcher:
    """Answers from a dict: bytes, or an exception to raise (an ImageFailure; in the model test,
    a process crash), a list consumed in order, its last answer kept."""

    def __init__(self) -> None:
        self.answers: dict[str, object] = {}
        self.calls: list[str] = []

    def fetch(self, url: str) -> FetchedImage:
        self.calls.append(url)
        answer = self.answers.get(url)
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if answer is None:
            raise ImageFailure(ErrorCode.HTTP_ERROR, f"HTTP 404 from {url}")
        if isinstance(answer, BaseException):
            raise answer
        assert isinstance(answer, bytes)
        return FetchedImage(answer, url, "image/jpeg")


class FakeCodec:
    def compress(self, data: bytes) -> CompressedImage:
        if data.startswith(b"broken"):
            raise ImageFailure(ErrorCode.CORRUPT_IMAGE, "truncated")
        return CompressedImage(
            data=b"jpeg:" + data,
            output_format="jpeg",
            content_type="image/jpeg",
            extension="jpg",
            width=10,
            height=10,
            source_format="jpeg",
            source_quality=90,
            output_quality=45,
        )


class FakeQueue:
    """Records what was queued, sorted by kind; tests drain it to play the worker."""

    def __init__(self) -> None:
        self.slices: list[ImageSlice] = []
        self.images: list[tuple[str, str]] = []
        self.webhooks: list[tuple[str, float]] = []
        self.settled: list[tuple[str, int]] = []  # (request, shard)
        self.sent: list[tuple[Message, float]] = []  # everything, as sent

    def send(self, messages: Sequence[Message], *, delay_seconds: float = 0.0) -> None:
        for message in messages:
            self.sent.append((message, delay_seconds))
            match message:
                case MaterializeSlice(image_slice):
                    self.slices.append(image_slice)
                case ProcessImage(request_id, image_id):
                    self.images.append((request_id, image_id))
                case ShardSettled(request_id, shard):
                    self.settled.append((request_id, shard))
                case DeliverWebhook(request_id):
                    self.webhooks.append((request_id, delay_seconds))
                case _:
                    # Other kinds (the sweep, and any added later) are read from `sent`: a
                    # new kind of work needs no change here.
                    pass

    def shard_settled(self, request_id: str, shard: int) -> None:
        self.send([ShardSettled(request_id, shard)])


class FakeWebhookTransport:
    def __init__(self) -> None:
        self.statuses: list[int | None] = []
        self.sent: list[tuple[str, bytes, dict[str, str]]] = []

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> WebhookResponse:
        self.sent.append((url, body, headers))
        status = self.statuses.pop(0) if self.statuses else 200
        return WebhookResponse(status, None if status else "connection refused")


class FakeGuard:
    def __init__(self) -> None:
        self.blocked: set[str] = set()

    def check_url(self, url: str) -> None:
        if url in self.blocked:
            raise ImageFailure(ErrorCode.BLOCKED_ADDRESS, "resolves to a private address")


class FakeFetchLimiter:
    """Slots per host up to `per_host`; `full` turns every request away."""

    def __init__(self, per_host: int = 1_000) -> None:
        self.per_host = per_host
        self.full = False
        self.held: dict[str, int] = {}
        self.waits: list[float] = []

    def acquire(self, host: str, *, wait: float) -> FakeSlot | None:
        self.waits.append(wait)
        if self.full or self.held.get(host, 0) >= self.per_host:
            return None
        self.held[host] = self.held.get(host, 0) + 1
        return FakeSlot(self, host)


class FakeSlot:
    def __init__(self, limiter: FakeFetchLimiter, host: str) -> None:
        self.limiter, self.host, self.released = limiter, host, False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.limiter.held[self.host] -= 1


class FakeRateLimiter:
    """Counts per key; a window ends when the test says so (`new_window`)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def hit(self, key: str, *, limit: int, window: float) -> RateDecision:
        if self.counts.get(key, 0) >= limit:
            return RateDecision(False, window / 2)
        self.counts[key] = self.counts.get(key, 0) + 1
        return RateDecision(True)

    def new_window(self) -> None:
        self.counts.clear()


@dataclasses.dataclass
class FakeWorld:
    services: Services
    clock: FakeClock
    requests: FakeRequests
    images: FakeImages
    deliveries: FakeDeliveries
    blobs: FakeBlobs
    fetcher: FakeFetcher
    queue: FakeQueue
    webhooks: FakeWebhookTransport
    guard: FakeGuard
    fetch_limiter: FakeFetchLimiter
    upload_rate: FakeRateLimiter
    upload_keys: FakeUploadKeys


def fake_world(settings: Settings | None = None) -> FakeWorld:
    clock = FakeClock()
    times, tallies = UpdateTimes(), FakeTallies()
    requests, images = FakeRequests(times, tallies), FakeImages(clock, times, tallies)
    deliveries = FakeDeliveries(times)
    requests.deliveries = deliveries
    blobs, fetcher, queue = FakeBlobs(), FakeFetcher(), FakeQueue()
    webhooks, guard = FakeWebhookTransport(), FakeGuard()
    fetch_limiter, upload_rate = FakeFetchLimiter(), FakeRateLimiter()
    upload_keys = FakeUploadKeys(times)
    services = Services(
        settings=settings or Settings(webhook_secrets=("whsec_" + "a2V5a2V5a2V5a2V5",)),
        requests=requests,
        images=images,
        deliveries=deliveries,
        blobs=blobs,
        fetcher=fetcher,
        codec=FakeCodec(),
        queue=queue,
        events=queue,
        webhooks=webhooks,
        webhook_guard=guard,
        clock=clock,
        fetch_limiter=fetch_limiter,
        upload_rate=upload_rate,
        upload_keys=upload_keys,
    )
    return FakeWorld(
        services,
        clock,
        requests,
        images,
        deliveries,
        blobs,
        fetcher,
        queue,
        webhooks,
        guard,
        fetch_limiter,
        upload_rate,
        upload_keys,
    )


def run_queue(w: FakeWorld) -> None:
    """Play the worker: run everything queued until nothing is left (retries included)."""
    while w.queue.slices or w.queue.images or w.queue.settled:
        while w.queue.slices:
            materialize_slice(w.services, w.queue.slices.pop(0))
        while w.queue.images:
            request_id, image_id = w.queue.images.pop(0)
            try:
                process_image(w.services, request_id, image_id)
            except RetryLater:
                w.queue.images.append((request_id, image_id))
        while w.queue.settled:
            on_shard_settled(w.services, w.queue.settled.pop(0)[0])


def tally_write_event(name: str, old_left: int | None, new_left: int | None) -> bytes:
    """The DocumentEventData Eventarc would carry for a tally whose `left` went old -> new
    (None: no document on that side)."""

    def document(left: int | None) -> Document:
        if left is None:
            return Document()
        return Document(name=name, fields={"left": Value(integer_value=left)})

    return DocumentEventData.serialize(
        DocumentEventData(value=document(new_left), old_value=document(old_left))
    )
