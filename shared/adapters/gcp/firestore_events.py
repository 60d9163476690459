"""Firestore trigger events (Eventarc `google.cloud.firestore.document.v1.written`) decoded.

Eventarc delivers the written document before and after the write as a `DocumentEventData`
protobuf. The finaliser only cares about one thing in it: did an image just become settled?
Every other write (the image's creation, a retry's error note, a second copy of the same
outcome) is not a reason to look at the request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.events.cloud.firestore import Document, DocumentEventData

from shared.domain.model import ImageState

WRITTEN_EVENT_TYPE = "google.cloud.firestore.document.v1.written"
# projects/{p}/databases/{d}/documents/requests/{request}/images/{image}
_IMAGE_PATH = re.compile(r"/documents/requests/(?P<request>[^/]+)/images/(?P<image>[^/]+)$")


class NotAnImageEvent(ValueError):
    pass


@dataclass(frozen=True)
class ImageWrite:
    request_id: str
    image_id: str
    old_state: ImageState | None
    new_state: ImageState | None

    @property
    def settles(self) -> bool:
        """The write moved the image from pending (or nothing) to done or failed."""
        return (
            self.new_state is not None
            and self.new_state.terminal
            and (self.old_state is None or not self.old_state.terminal)
        )


def _state(document: Document) -> ImageState | None:
    if not document.name or "state" not in document.fields:
        return None
    try:
        return ImageState(document.fields["state"].string_value)
    except ValueError:
        return None


def image_write(data: bytes) -> ImageWrite:
    """Raises NotAnImageEvent for bytes that are not an image document's write event."""
    try:
        event = DocumentEventData.deserialize(data)
    except Exception as exc:  # protobuf raises its own DecodeError
        raise NotAnImageEvent(f"not a DocumentEventData protobuf: {exc}") from exc
    name = event.value.name or event.old_value.name
    match = _IMAGE_PATH.search(name)
    if not match:
        raise NotAnImageEvent(f"not an image document: {name!r}")
    return ImageWrite(
        request_id=match.group("request"),
        image_id=match.group("image"),
        old_state=_state(event.old_value),
        new_state=_state(event.value),
    )


class FirestoreTriggerEvents:
    """`shared.ports.ImageEvents` in production: the Firestore trigger reports every write of
    an image document by itself, so there is nothing to send."""

    def image_settled(self, request_id: str, image_id: str) -> None:
        return None
