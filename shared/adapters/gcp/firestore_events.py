"""Firestore trigger events (Eventarc `google.cloud.firestore.document.v1.written`) decoded.

The trigger watches a request's tallies (`requests/{requestId}/tally/{shard}`,
shared.domain.tally): every image that settles writes its tally once, so `finalize` gets one
event per image, and the document before and after the write (a `DocumentEventData`
protobuf) says all it needs: whether that write counted the tally's last image. Every other
event (a tally's creation, an image settling while others of its tally are left) is decided
from the event alone, with no read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.events.cloud.firestore import Document, DocumentEventData, Value

WRITTEN_EVENT_TYPE = "google.cloud.firestore.document.v1.written"
# projects/{p}/databases/{d}/documents/requests/{request}/tally/{shard}
_TALLY_PATH = re.compile(r"/documents/requests/(?P<request>[^/]+)/tally/(?P<shard>[0-9]+)$")


class NotATallyEvent(ValueError):
    pass


@dataclass(frozen=True)
class TallyWrite:
    request_id: str
    shard: int
    old_left: int | None
    new_left: int | None

    @property
    def settles(self) -> bool:
        """The write counted the tally's last unsettled image."""
        return self.new_left == 0 and (self.old_left is None or self.old_left > 0)


def _left(document: Document) -> int | None:
    if not document.name or "left" not in document.fields:
        return None
    value = Value.pb(document.fields["left"])
    return int(value.integer_value) if value.WhichOneof("value_type") == "integer_value" else None


def tally_write(data: bytes) -> TallyWrite:
    """Raises NotATallyEvent for bytes that are not a tally document's write event."""
    try:
        event = DocumentEventData.deserialize(data)
    except Exception as exc:  # protobuf raises its own DecodeError
        raise NotATallyEvent(f"not a DocumentEventData protobuf: {exc}") from exc
    name = event.value.name or event.old_value.name
    match = _TALLY_PATH.search(name)
    if not match:
        raise NotATallyEvent(f"not a tally document: {name!r}")
    return TallyWrite(
        request_id=match.group("request"),
        shard=int(match.group("shard")),
        old_left=_left(event.old_value),
        new_left=_left(event.value),
    )


class FirestoreTriggerEvents:
    """`shared.ports.ImageEvents` in production: the Firestore trigger reports every write of
    a tally document by itself, so there is nothing to send."""

    def shard_settled(self, request_id: str, shard: int) -> None:
        return None
