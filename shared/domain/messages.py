"""Queued work: one typed message per kind, the same vocabulary on every queue.

A message is a hint, not a fact. Firestore holds what is true; a message only says "look at
this now", and may be lost, duplicated, delayed or reordered on the way (Cloud Tasks, Eventarc
and Celery with late acks all deliver at least once, in no promised order). So every handler
reads the truth before acting, and whatever a lost message would have done is found again by
a sweep over Firestore.

Each kind says what it is (`KIND`, the `kind` field of its JSON payload), which lane carries it
(`LANE`: the queue adapters map lanes to their own queues and targets) and, where two copies
of it are the same work, a `dedup_key` that lets a queue drop the second copy by name. The
queue adapters, the task handler and the event handler know no kind by name: adding a kind
means a class here, its handler in `shared/entrypoints/tasks.py` and its use case.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from shared.domain.model import ImageJob, ImageSlice


class Lane(StrEnum):
    """Which queue a message travels on, named for the work it carries.

    Production: `fan-out` and `images` are Cloud Tasks queues targeting `process_image`; the
    `finalize` lane is the webhooks queue, whose tasks reach `finalize` as CloudEvents. Locally
    `images` is Celery's images queue and the rest share the control queue.
    """

    FAN_OUT = "fan-out"
    IMAGES = "images"
    FINALIZE = "finalize"


class MalformedMessage(ValueError):
    """A payload that no message kind reads: a bug, never a user's input."""


@dataclass(frozen=True)
class MaterializeSlice:
    """Create the image documents of one slice (one Firestore commit) and queue their work."""

    KIND: ClassVar[str] = "materialize"
    LANE: ClassVar[Lane] = Lane.FAN_OUT

    slice: ImageSlice
    # 0 for the upload's fan-out; n when the sweeper re-drives the request the n-th time (a
    # new name for the queue, whose names of finished tasks stay taken for a while).
    round: int = 0

    def fields(self) -> dict[str, Any]:
        s = self.slice
        # Compact rows instead of objects: a slice of 500 jobs stays far below Cloud Tasks'
        # 1 MB task limit even with long URLs.
        fields: dict[str, Any] = {
            "slice": {
                "request_id": s.request_id,
                "index": s.index,
                # A job's followers come last, and only when it has some.
                "jobs": [
                    [j.image_id, j.row, j.position, j.serial, j.url, j.shard, j.same_as]
                    + ([list(j.followers)] if j.followers else [])
                    for j in s.jobs
                ],
            }
        }
        return fields | ({"round": self.round} if self.round else {})

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> MaterializeSlice:
        raw = fields["slice"]
        request_id = str(raw["request_id"])
        jobs = tuple(
            ImageJob(
                request_id=request_id,
                image_id=str(image_id),
                row=int(row),
                position=int(position),
                serial=str(serial),
                url=str(url),
                shard=int(shard),
                same_as=str(same_as) if same_as else None,
                followers=tuple(str(f) for f in (followers[0] if followers else ())),
            )
            for image_id, row, position, serial, url, shard, same_as, *followers in raw["jobs"]
        )
        slice_ = ImageSlice(request_id=request_id, index=int(raw["index"]), jobs=jobs)
        return cls(slice_, int(fields.get("round", 0)))

    def dedup_key(self) -> str | None:
        return f"{self.slice.request_id}/{self.slice.index}/{self.round}"


@dataclass(frozen=True)
class ProcessImage:
    """Fetch, compress, store and record one image."""

    KIND: ClassVar[str] = "process"
    LANE: ClassVar[Lane] = Lane.IMAGES

    request_id: str
    image_id: str
    # 0 for the fan-out's task; n when the sweeper re-drives the image's request the n-th
    # time. A re-driven attempt is counted before the work: its predecessor may have died in it.
    round: int = 0

    def fields(self) -> dict[str, Any]:
        fields = {"request_id": self.request_id, "image_id": self.image_id}
        return fields | ({"round": self.round} if self.round else {})

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> ProcessImage:
        return cls(str(fields["request_id"]), str(fields["image_id"]), int(fields.get("round", 0)))

    def dedup_key(self) -> str | None:
        return f"{self.request_id}/{self.image_id}/{self.round}"


@dataclass(frozen=True)
class CopyImage:
    """The image this slot repeats has its outcome now: copy it (sent by the slot that did
    the work, so that its repeats need not wait for their next look)."""

    KIND: ClassVar[str] = "copy"
    LANE: ClassVar[Lane] = Lane.IMAGES

    request_id: str
    image_id: str

    def fields(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "image_id": self.image_id}

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> CopyImage:
        return cls(str(fields["request_id"]), str(fields["image_id"]))

    def dedup_key(self) -> str | None:
        # Another name than the slot's own task, which may still be waiting in the queue.
        return f"{self.request_id}/{self.image_id}/copy"


@dataclass(frozen=True)
class ShardSettled:
    """The last image of one of a request's tallies settled: see whether the request can be
    finalised (shared.domain.tally).

    Production never queues it: the Firestore trigger on the tallies reports the write.
    """

    KIND: ClassVar[str] = "shard_settled"
    LANE: ClassVar[Lane] = Lane.FINALIZE

    request_id: str
    shard: int

    def fields(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "shard": self.shard}

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> ShardSettled:
        return cls(str(fields["request_id"]), int(fields["shard"]))

    def dedup_key(self) -> str | None:
        return None


@dataclass(frozen=True)
class DeliverWebhook:
    """Make the next attempt at a request's webhook message, if one is due."""

    KIND: ClassVar[str] = "deliver_webhook"
    LANE: ClassVar[Lane] = Lane.FINALIZE

    request_id: str
    # The moment this message was queued for (an attempt's due time), when it was queued for
    # one: copies queued for the same moment are the same work, and a queue that names tasks
    # keeps one. The delivery's own claim keeps two copies from sending at once anyway.
    due: str | None = None

    def fields(self) -> dict[str, Any]:
        return {"request_id": self.request_id} | ({"due": self.due} if self.due else {})

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> DeliverWebhook:
        due = fields.get("due")
        return cls(str(fields["request_id"]), str(due) if due else None)

    def dedup_key(self) -> str | None:
        return f"{self.request_id}@{self.due}" if self.due else None


# A sweep asks for another at most this long after itself (a Cloud Scheduler job's period).
MAX_SWEEP_AGAIN_IN = 3600.0


@dataclass(frozen=True)
class Sweep:
    """Look through Firestore for work whose message was lost, and queue it again.

    Sent on a timer: by Cloud Scheduler in production, by the local ticker locally.
    """

    KIND: ClassVar[str] = "sweep"
    # Handled by `process_image` in production, like the fan-out work it re-drives.
    LANE: ClassVar[Lane] = Lane.FAN_OUT

    # Seconds after which one more sweep (a plain one) should follow this one: Cloud
    # Scheduler runs a job at most once a minute, and production sweeps twice a minute.
    again_in: float = 0.0

    def fields(self) -> dict[str, Any]:
        return {"again_in": self.again_in} if self.again_in else {}

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Sweep:
        again_in = float(fields.get("again_in") or 0.0)
        if not 0.0 <= again_in <= MAX_SWEEP_AGAIN_IN:
            raise ValueError(f"again_in between 0 and {MAX_SWEEP_AGAIN_IN:g}")
        return cls(again_in)

    def dedup_key(self) -> str | None:
        return None


Message = MaterializeSlice | ProcessImage | CopyImage | ShardSettled | DeliverWebhook | Sweep

KINDS: dict[str, type[Message]] = {
    kind.KIND: kind
    for kind in (MaterializeSlice, ProcessImage, CopyImage, ShardSettled, DeliverWebhook, Sweep)
}


def to_payload(message: Message) -> dict[str, Any]:
    """The message as JSON-ready data: `{"kind": ..., **fields}`."""
    return {"kind": message.KIND, **message.fields()}


def from_payload(payload: object) -> Message:
    """Raises MalformedMessage for anything `to_payload` did not make."""
    if not isinstance(payload, dict):
        raise MalformedMessage("the task body is not a JSON object")
    kind = KINDS.get(str(payload.get("kind")))
    if kind is None:
        raise MalformedMessage(f"unknown task kind {payload.get('kind')!r}")
    try:
        return kind.from_fields(payload)
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedMessage(f"a {kind.KIND} task without {exc}") from exc
