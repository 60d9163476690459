"""Requests, images, their tallies and webhook deliveries in Firestore.

Layout (the Firestore trigger in production watches the `tally` documents):

    requests/{request_id}                          one per request, written a handful of times
    requests/{request_id}/images/{image_id}        one per input URL
    requests/{request_id}/tally/{shard}            at most 128 counters (shared.domain.tally)
    requests/{request_id}/notifications/webhook    the request's one webhook message

Progress is never counted into the request document: an image's outcome is written to its
own document and, in the same commit, counted in one of the request's tallies, which the images
share round-robin. That keeps every document under Firestore's sustained one-write-per-second
guidance whatever the size of the request, and lets the status and the finaliser read at most
128 small documents instead of counting the images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from shared.domain.model import (
    CompressedImage,
    DeliveryAttempt,
    DeliverySeries,
    DeliveryState,
    ImageJob,
    ImageRecord,
    ImageState,
    Progress,
    Recorded,
    RequestRecord,
    RequestStatus,
    StoredElsewhere,
    StoredOutput,
    Tally,
    WebhookDelivery,
)
from shared.domain.tally import shard_totals
from shared.ports import Attempt, Clock

REQUESTS = "requests"
IMAGES = "images"
NOTIFICATIONS = "notifications"
TALLY = "tally"
CONTENTS = "contents"  # outputs by the SHA-256 of their fetched bytes, per request
DONE = "done"
LEFT = "left"  # a tally's images not yet settled
WEBHOOK_DOC = "webhook"
# Firestore refuses more than 500 writes in one commit.
MAX_BATCH = 500
# Documents read by id in one call (keeps each RPC short).
MAX_GET = 500


def _request_from(data: dict[str, Any], version: object | None = None) -> RequestRecord:
    final = data.get("final_progress")
    return RequestRecord(
        request_id=data["request_id"],
        status=RequestStatus(data["status"]),
        total_images=data["total_images"],
        total_rows=data["total_rows"],
        input_path=data["input_path"],
        created_at=data["created_at"],
        updated_at=data["updated_at"],
        webhook_url=data.get("webhook_url"),
        csv_url=data.get("csv_url"),
        output_path=data.get("output_path"),
        completed_at=data.get("completed_at"),
        error_code=data.get("error_code"),
        error_message=data.get("error_message"),
        final_progress=Progress(**final) if final else None,
        owner=data.get("owner"),
        sweep_at=data.get("sweep_at"),
        sweeps=data.get("sweeps", 0),
        render_holder=data.get("render_holder"),
        render_until=data.get("render_until"),
        tally_shards=data.get("tally_shards", 1),
        version=version,
    )


def _image_from(data: dict[str, Any], version: object | None = None) -> ImageRecord:
    return ImageRecord(
        request_id=data["request_id"],
        image_id=data["image_id"],
        row=data["row"],
        position=data["position"],
        serial=data["serial"],
        input_url=data["input_url"],
        state=ImageState(data["state"]),
        shard=data.get("shard", 0),
        same_as=data.get("same_as"),
        followers=tuple(data.get("followers") or ()),
        attempts=data.get("attempts", 0),
        error_code=data.get("error_code"),
        error_message=data.get("error_message"),
        output_url=data.get("output_url"),
        output_path=data.get("output_path"),
        source_format=data.get("source_format"),
        source_bytes=data.get("source_bytes"),
        width=data.get("width"),
        height=data.get("height"),
        source_quality=data.get("source_quality"),
        output_quality=data.get("output_quality"),
        output_format=data.get("output_format"),
        output_bytes=data.get("output_bytes"),
        updated_at=data.get("updated_at"),
        retry_at=data.get("retry_at"),
        version=version,
    )


def _attempt_to(attempt: DeliveryAttempt) -> dict[str, Any]:
    return {
        "number": attempt.number,
        "started_at": attempt.started_at,
        "finished_at": attempt.finished_at,
        "status_code": attempt.status_code,
        "error": attempt.error,
        "succeeded": attempt.succeeded,
    }


def _series_from(data: dict[str, Any]) -> DeliverySeries:
    return DeliverySeries(
        state=DeliveryState(data["state"]),
        attempts=tuple(DeliveryAttempt(**a) for a in data.get("attempts", [])),
        ended_at=data["ended_at"],
    )


def _delivery_from(data: dict[str, Any], version: object | None = None) -> WebhookDelivery:
    return WebhookDelivery(
        request_id=data["request_id"],
        message_id=data["message_id"],
        url=data["url"],
        payload=data["payload"],
        state=DeliveryState(data["state"]),
        attempts=tuple(DeliveryAttempt(**a) for a in data.get("attempts", [])),
        next_attempt_at=data.get("next_attempt_at"),
        claimed_until=data.get("claimed_until"),
        version=version,
        earlier_series=tuple(_series_from(s) for s in data.get("earlier_series", [])),
    )


def _stored_output_from(data: dict[str, Any]) -> StoredOutput:
    return StoredOutput(**{f.name: data[f.name] for f in dataclasses.fields(StoredOutput)})


def _precondition(db: Any, version: object | None) -> Any:
    """The write option that makes a write conditional on the version read (the document's
    update time): Firestore refuses it with FailedPrecondition if anyone wrote since."""
    return db.write_option(last_update_time=version)


class FirestoreRequests:
    def __init__(self, client: firestore.Client, clock: Clock) -> None:
        self._db = client
        self._clock = clock

    def _ref(self, request_id: str) -> Any:
        return self._db.collection(REQUESTS).document(request_id)

    def create(self, record: RequestRecord) -> None:
        ref = self._ref(record.request_id)
        batch = self._db.batch()
        # Every tally starts with all its images left: counted down as they settle. Created
        # in the same commit as the request, so a request never exists without them.
        totals = shard_totals(record.total_images)
        assert len(totals) == record.tally_shards
        for shard, total in enumerate(totals):
            batch.create(
                ref.collection(TALLY).document(str(shard)),
                {"total": total, LEFT: total, "done": 0, "failed": 0, "updated_at": None},
            )
        batch.create(
            ref,
            {
                "request_id": record.request_id,
                "status": record.status.value,
                "total_images": record.total_images,
                "total_rows": record.total_rows,
                "input_path": record.input_path,
                "created_at": record.created_at,
                "updated_at": record.updated_at,
                "webhook_url": record.webhook_url,
                "owner": record.owner,
                "sweep_at": record.sweep_at,
                "sweeps": record.sweeps,
                "tally_shards": record.tally_shards,
            },
        )
        batch.commit()

    def get(self, request_id: str) -> RequestRecord | None:
        snap = self._ref(request_id).get()
        return _request_from(snap.to_dict(), snap.update_time) if snap.exists else None

    def due_for_sweep(
        self, now: datetime, *, after: RequestRecord | None, limit: int
    ) -> list[RequestRecord]:
        # A range and an order on the same field, then the id: the single-field index on
        # sweep_at serves it. Settled requests with nothing left to watch have no sweep_at
        # (null) and never match, so an idle sweep reads nothing, however many requests
        # have ever finished.
        query = (
            self._db.collection(REQUESTS)
            .where(filter=FieldFilter("sweep_at", "<=", now))
            .order_by("sweep_at")
            .order_by("__name__")
            .limit(limit)
        )
        if after is not None:
            query = query.start_after([after.sweep_at, self._ref(after.request_id)])
        return [_request_from(snap.to_dict() or {}, snap.update_time) for snap in query.get()]

    def _update_if_unchanged(self, record: RequestRecord, fields: dict[str, Any]) -> Any:
        """The write result, or None when the request changed since `record` was read."""
        try:
            return self._ref(record.request_id).update(
                fields, option=_precondition(self._db, record.version)
            )
        except (gexc.FailedPrecondition, gexc.NotFound):
            return None

    def reschedule_sweep(
        self, record: RequestRecord, *, sweep_at: datetime | None, sweeps: int
    ) -> bool:
        return (
            self._update_if_unchanged(record, {"sweep_at": sweep_at, "sweeps": sweeps}) is not None
        )

    def claim_render(
        self, record: RequestRecord, *, holder: str, until: datetime
    ) -> RequestRecord | None:
        result = self._update_if_unchanged(record, {"render_holder": holder, "render_until": until})
        if result is None:
            return None
        return dataclasses.replace(
            record, render_holder=holder, render_until=until, version=result.update_time
        )

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
        ref = self._ref(request_id)
        now = self._clock.now()
        status = RequestStatus.COMPLETED if completed else RequestStatus.FAILED
        # Optimistic, not a transaction: the request is read, then written in one batch on
        # condition that nobody wrote it since. A transaction would lock the document, and a
        # finaliser killed inside one leaves the lock behind until Firestore expires it; every
        # other finaliser then times out (seen in the crash test). A precondition holds no lock.
        for _ in range(8):
            snap = ref.get()
            if not snap.exists or snap.get("status") != RequestStatus.IN_PROGRESS.value:
                return False
            if holder is not None and (snap.to_dict() or {}).get("render_holder") != holder:
                return False  # our claim expired and another finaliser took over
            batch = self._db.batch()
            batch.update(
                ref,
                {
                    "status": status.value,
                    "csv_url": csv_url,
                    "output_path": output_path,
                    "completed_at": now,
                    "updated_at": now,
                    "error_code": error_code,
                    "error_message": error_message,
                    "final_progress": {
                        "total": progress.total,
                        "done": progress.done,
                        "failed": progress.failed,
                    },
                    "sweep_at": sweep_at,
                    "render_until": None,
                },
                option=_precondition(self._db, snap.update_time),
            )
            if delivery is not None:
                batch.set(
                    ref.collection(NOTIFICATIONS).document(WEBHOOK_DOC),
                    {
                        "request_id": delivery.request_id,
                        "message_id": delivery.message_id,
                        "url": delivery.url,
                        "payload": delivery.payload,
                        "state": delivery.state.value,
                        "attempts": [],
                        "next_attempt_at": delivery.next_attempt_at,
                        "claimed_until": None,
                    },
                )
            try:
                batch.commit()
            except gexc.FailedPrecondition:
                continue  # written meanwhile (a sweep note, another finaliser): look again
            return True
        raise RuntimeError(f"request {request_id} kept changing under the finaliser")


class FirestoreImages:
    def __init__(self, client: firestore.Client, clock: Clock) -> None:
        self._db = client
        self._clock = clock

    def _collection(self, request_id: str) -> Any:
        return self._db.collection(REQUESTS).document(request_id).collection(IMAGES)

    def create_missing(self, jobs: Sequence[ImageJob]) -> list[ImageRecord]:
        records: list[ImageRecord] = []
        for start in range(0, len(jobs), MAX_BATCH):
            records.extend(self._create_chunk(jobs[start : start + MAX_BATCH]))
        return records

    def _create_chunk(self, jobs: Sequence[ImageJob]) -> list[ImageRecord]:
        if not jobs:
            return []
        collection = self._collection(jobs[0].request_id)
        refs = [collection.document(job.image_id) for job in jobs]
        # At-least-once delivery means the same slice may be materialised twice, perhaps
        # concurrently. Usually none of its images exists yet, so the first try creates them
        # all with no read (reading 500 documents that are not there costs a read each, as
        # much as the image's own read when it is processed). If some exist, the batch's
        # create fails as a whole: then read what exists and create what is missing, and read
        # again if a concurrent copy won that race too.
        existing: dict[str, ImageRecord] | None = {}
        for _ in range(4):
            if existing is None:
                existing = {
                    snap.id: _image_from(snap.to_dict() or {}, snap.update_time)
                    for snap in self._db.get_all(refs)
                    if snap.exists
                }
            missing = [
                (ref, job) for ref, job in zip(refs, jobs, strict=True) if ref.id not in existing
            ]
            if not missing:
                return [existing[ref.id] for ref in refs]
            now = self._clock.now()
            batch = self._db.batch()
            created: dict[str, ImageRecord] = {}
            for ref, job in missing:
                data = {
                    "request_id": job.request_id,
                    "image_id": job.image_id,
                    "row": job.row,
                    "position": job.position,
                    "serial": job.serial,
                    "input_url": job.url,
                    "shard": job.shard,
                    "same_as": job.same_as,
                    **({"followers": list(job.followers)} if job.followers else {}),
                    "state": ImageState.PENDING.value,
                    "attempts": 0,
                    "created_at": now,
                    "updated_at": now,
                }
                batch.create(ref, data)
                created[ref.id] = _image_from(data)
            try:
                batch.commit()
            except gexc.Conflict:
                existing = None
                continue
            existing.update(created)
            return [existing[ref.id] for ref in refs]
        raise RuntimeError("could not materialise images: concurrent writers kept conflicting")

    def get(self, request_id: str, image_id: str) -> ImageRecord | None:
        snap = self._collection(request_id).document(image_id).get()
        return _image_from(snap.to_dict(), snap.update_time) if snap.exists else None

    def begin_attempt(self, record: ImageRecord, *, count_now: bool) -> Attempt | None:
        number = record.attempts + 1
        if not count_now:
            return Attempt(number, record.version, record.shard)
        ref = self._collection(record.request_id).document(record.image_id)
        try:
            result = ref.update(
                {"attempts": number, "updated_at": self._clock.now()},
                option=_precondition(self._db, record.version),
            )
        except gexc.FailedPrecondition:
            return None  # another copy wrote meanwhile: the caller reads again
        return Attempt(number, result.update_time, record.shard)

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
        fields = {"error_code": code, "error_message": message, "retry_at": retry_at}
        return self._record(attempt, request_id, image_id, fields, None) is not None

    def _record(
        self,
        attempt: Attempt,
        request_id: str,
        image_id: str,
        fields: dict[str, Any],
        tally: dict[str, Any] | None,
        *,
        also: tuple[Any, dict[str, Any]] | None = None,
    ) -> list[Any] | None:
        """Write what an attempt found, on condition that the image is as the attempt last
        saw it; when someone wrote meanwhile, read again: an image that is no longer pending
        keeps its outcome (the first one stands), one still pending gets this write on
        condition that it is still as just read. A stale copy can never overwrite. `tally`
        (an outcome's counts) is written to the image's tally in the same commit, so only the
        write that settles the image counts it; `also`, a document created in it (the commit
        raises Conflict if it exists). The commit's write results, or None when the image had
        an outcome already."""
        ref = self._collection(request_id).document(image_id)
        version = attempt.version
        counted = attempt.number
        for _ in range(8):
            if version is not None:
                values = {**fields, "attempts": counted, "updated_at": self._clock.now()}
                batch = self._db.batch()
                batch.update(ref, values, option=_precondition(self._db, version))
                if tally is not None:
                    batch.update(self._tally_ref(request_id, attempt.shard), tally)
                if also is not None:
                    batch.create(*also)  # AlreadyExists (a Conflict) if it exists
                try:
                    return list(batch.commit())
                except gexc.FailedPrecondition:
                    pass
            snap = ref.get()
            if not snap.exists or ImageState(snap.get("state")).terminal:
                return None
            # Another copy counted attempts meanwhile: keep the larger count.
            counted = max(attempt.number, int((snap.to_dict() or {}).get("attempts", 0)))
            version = snap.update_time
        raise RuntimeError(f"image {request_id}/{image_id} kept changing under its attempt")

    def _settle(
        self,
        attempt: Attempt,
        request_id: str,
        image_id: str,
        fields: dict[str, Any],
        counts: dict[str, int],
        *,
        also: tuple[Any, dict[str, Any]] | None = None,
    ) -> Recorded | None:
        tally: dict[str, Any] = {name: firestore.Increment(n) for name, n in counts.items()}
        tally[LEFT] = firestore.Increment(-1)
        tally["updated_at"] = self._clock.now()
        results = self._record(attempt, request_id, image_id, fields, tally, also=also)
        if results is None:
            return None
        # Transform results come in the order of their field paths (the client sorts them).
        left = results[1].transform_results[sorted(counts.keys() | {LEFT}).index(LEFT)]
        return Recorded(shard=attempt.shard, shard_settled=int(left.integer_value) == 0)

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
        if content_key is None:
            return self._settle_done(attempt, request_id, image_id, output, also=None)
        ref = self._content_ref(request_id, content_key)
        stored = {"state": DONE, **dataclasses.asdict(output)}
        try:
            return self._settle_done(attempt, request_id, image_id, output, also=(ref, stored))
        except gexc.Conflict:
            pass
        # The bytes' record exists: another slot recorded their output first. Unless this
        # image has its outcome already (which stands), that output is the one to copy.
        current = self.get(request_id, image_id)
        if current is None or current.state.terminal:
            return None
        snap = ref.get()
        data = snap.to_dict() or {}
        if data.get("state") == DONE:
            return StoredElsewhere(_stored_output_from(data))
        # A claim left by an earlier version of the service (it took one before compressing):
        # the outcome is recorded without remembering it under the bytes.
        return self._settle_done(attempt, request_id, image_id, output, also=None)

    def record_copy(
        self, attempt: Attempt, request_id: str, image_id: str, *, output: StoredOutput
    ) -> Recorded | None:
        return self._settle_done(attempt, request_id, image_id, output, also=None)

    def _settle_done(
        self,
        attempt: Attempt,
        request_id: str,
        image_id: str,
        output: StoredOutput,
        *,
        also: tuple[Any, dict[str, Any]] | None,
    ) -> Recorded | None:
        fields = {
            "state": ImageState.DONE.value,
            **dataclasses.asdict(output),
            "error_code": None,
            "error_message": None,
            "retry_at": None,
        }
        counts = {
            "done": 1,
            "source_bytes": output.source_bytes,
            "output_bytes": output.output_bytes,
        }
        return self._settle(attempt, request_id, image_id, fields, counts, also=also)

    def _content_ref(self, request_id: str, content_key: str) -> Any:
        return (
            self._db.collection(REQUESTS)
            .document(request_id)
            .collection(CONTENTS)
            .document(content_key)
        )

    def record_failed(
        self, attempt: Attempt, request_id: str, image_id: str, *, code: str, message: str
    ) -> Recorded | None:
        return self._settle(
            attempt,
            request_id,
            image_id,
            {
                "state": ImageState.FAILED.value,
                "error_code": code,
                "error_message": message,
                "retry_at": None,
            },
            {"failed": 1},
        )

    def _tally_ref(self, request_id: str, shard: int) -> Any:
        return (
            self._db.collection(REQUESTS)
            .document(request_id)
            .collection(TALLY)
            .document(str(shard))
        )

    def tally(self, request_id: str, shards: int) -> Tally:
        tallies = self._db.collection(REQUESTS).document(request_id).collection(TALLY)
        done = failed = source = output = unsettled = 0
        latest: datetime | None = None
        # By id, not by a query over the collection: the same reads on Firestore, but the
        # emulator answers every query by scanning the whole database (128 tallies took
        # 86 ms instead of 34 beside 100,000 image documents), and the status of a running
        # request reads them at every poll.
        for snap in self._db.get_all([tallies.document(str(k)) for k in range(shards)]):
            if not snap.exists:
                continue
            data = snap.to_dict() or {}
            done += int(data.get("done", 0))
            failed += int(data.get("failed", 0))
            source += int(data.get("source_bytes", 0))
            output += int(data.get("output_bytes", 0))
            unsettled += int(data.get(LEFT, 0)) > 0
            moment = data.get("updated_at")
            if moment is not None and (latest is None or moment > latest):
                latest = moment
        return Tally(done, failed, source, output, unsettled, latest)

    def has_unsettled(self, request_id: str) -> bool:
        tallies = self._db.collection(REQUESTS).document(request_id).collection(TALLY)
        return bool(tallies.where(filter=FieldFilter(LEFT, ">", 0)).limit(1).get())

    def _where_state(self, request_id: str, state: ImageState) -> Any:
        return self._collection(request_id).where(filter=FieldFilter("state", "==", state.value))

    def pending(self, request_id: str, *, after: str | None, limit: int) -> list[ImageRecord]:
        collection = self._collection(request_id)
        query = self._where_state(request_id, ImageState.PENDING).order_by("__name__").limit(limit)
        if after is not None:
            query = query.start_after([collection.document(after)])
        return [_image_from(snap.to_dict() or {}, snap.update_time) for snap in query.get()]

    def _count(self, query: Any) -> int:
        result = query.count().get()
        return int(result[0][0].value)

    def count(self, request_id: str) -> int:
        return self._count(self._collection(request_id))

    def get_many(self, request_id: str, image_ids: Sequence[str]) -> list[ImageRecord]:
        collection = self._collection(request_id)
        found: dict[str, ImageRecord] = {}
        for start in range(0, len(image_ids), MAX_GET):
            refs = [collection.document(i) for i in image_ids[start : start + MAX_GET]]
            # Snapshots come back in no particular order, the missing ones marked as such.
            for snap in self._db.get_all(refs):
                if snap.exists:
                    found[snap.id] = _image_from(snap.to_dict() or {}, snap.update_time)
        return [found[i] for i in image_ids if i in found]

    def page(
        self,
        request_id: str,
        *,
        after: str | None,
        limit: int,
        state: ImageState | None = None,
    ) -> list[ImageRecord]:
        collection = self._collection(request_id)
        # An equality filter ordered by document id is served by Firestore's automatic
        # single-field index: no composite index to deploy.
        query = self._where_state(request_id, state) if state is not None else collection
        query = query.order_by("__name__").limit(limit)
        if after is not None:
            query = query.start_after([collection.document(after)])
        return [_image_from(snap.to_dict() or {}, snap.update_time) for snap in query.get()]


class FirestoreDeliveries:
    def __init__(self, client: firestore.Client) -> None:
        self._db = client

    def _ref(self, request_id: str) -> Any:
        return (
            self._db.collection(REQUESTS)
            .document(request_id)
            .collection(NOTIFICATIONS)
            .document(WEBHOOK_DOC)
        )

    def get(self, request_id: str) -> WebhookDelivery | None:
        snap = self._ref(request_id).get()
        return _delivery_from(snap.to_dict(), snap.update_time) if snap.exists else None

    def claim(
        self, delivery: WebhookDelivery, *, now: datetime, lease_seconds: float
    ) -> WebhookDelivery | None:
        # A conditional write, not a transaction, for the reason given in settle(): a
        # claimant killed mid-transaction would lock every other claimant out.
        until = now + timedelta(seconds=lease_seconds)
        try:
            result = self._ref(delivery.request_id).update(
                {"claimed_until": until},
                option=_precondition(self._db, delivery.version),
            )
        except (gexc.FailedPrecondition, gexc.NotFound):
            return None  # another claimant wrote first: the attempt is theirs
        return dataclasses.replace(delivery, claimed_until=until, version=result.update_time)

    def record_attempt(
        self,
        claimed: WebhookDelivery,
        attempt: DeliveryAttempt,
        *,
        state: DeliveryState,
        next_attempt_at: datetime | None,
    ) -> bool:
        try:
            self._ref(claimed.request_id).update(
                {
                    "attempts": firestore.ArrayUnion([_attempt_to(attempt)]),
                    "state": state.value,
                    "next_attempt_at": next_attempt_at,
                    "claimed_until": None,
                },
                option=_precondition(self._db, claimed.version),
            )
        except (gexc.FailedPrecondition, gexc.NotFound):
            return False
        return True

    def restart(self, request_id: str, *, now: datetime) -> WebhookDelivery | None:
        ref = self._ref(request_id)
        # Conditional on what was read, like claim(): two resends at once start one series,
        # and a series that is still running is never cut short.
        snap = ref.get()
        if not snap.exists:
            return None
        delivery = _delivery_from(snap.to_dict() or {})
        if delivery.state is DeliveryState.PENDING:
            return None
        finished = {
            "state": delivery.state.value,
            "attempts": [_attempt_to(a) for a in delivery.attempts],
            "ended_at": (delivery.attempts[-1].finished_at if delivery.attempts else None) or now,
        }
        try:
            ref.update(
                {
                    # A map holding an array inside an array: Firestore allows that, while an
                    # array directly inside an array it refuses.
                    "earlier_series": firestore.ArrayUnion([finished]),
                    "attempts": [],
                    "state": DeliveryState.PENDING.value,
                    "next_attempt_at": None,
                    "claimed_until": None,
                },
                option=self._db.write_option(last_update_time=snap.update_time),
            )
        except gexc.FailedPrecondition:
            return None  # another resend (or an attempt) wrote first
        return self.get(request_id)
