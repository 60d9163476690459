"""A stand-in for Eventarc's Firestore trigger, for the emulated cloud profile.

Nothing on this machine delivers Firestore events, so this process watches the tally documents
(`requests/{requestId}/tally/{shard}`) through a Firestore listener and POSTs each write to
the `finalize` function the way Eventarc does: a binary-mode CloudEvent of type
`google.cloud.firestore.document.v1.written` whose body is the `DocumentEventData` protobuf
(`application/protobuf`), with the document before and after the write and the update mask.
A delivery that does not get a 2xx is retried with backoff, as Eventarc's retry policy does.

What it does not reproduce: a listener may fold several quick writes of one document into one
event (Eventarc sends each), and events arrive at most once per write seen.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import requests
from google.cloud import firestore
from google.cloud.firestore_v1.base_document import DocumentSnapshot
from google.events.cloud.firestore import (
    ArrayValue,
    Document,
    DocumentEventData,
    DocumentMask,
    MapValue,
    Value,
)

from shared import logs
from shared.adapters.gcp.firestore_events import WRITTEN_EVENT_TYPE
from shared.config import Settings
from shared.domain.times import iso

log = logging.getLogger("eventarc")

DELIVERY_ATTEMPTS = 8


def to_value(value: Any) -> Value:
    """A Python value read from Firestore as the protobuf Value Eventarc would carry."""
    if value is None:
        return Value(null_value=0)
    if isinstance(value, bool):
        return Value(boolean_value=value)
    if isinstance(value, int):
        return Value(integer_value=value)
    if isinstance(value, float):
        return Value(double_value=value)
    if isinstance(value, str):
        return Value(string_value=value)
    if isinstance(value, bytes):
        return Value(bytes_value=value)
    if isinstance(value, datetime):
        return Value(timestamp_value=value)
    if isinstance(value, dict):
        return Value(map_value=MapValue(fields={k: to_value(v) for k, v in value.items()}))
    if isinstance(value, list):
        return Value(array_value=ArrayValue(values=[to_value(v) for v in value]))
    return Value(string_value=str(value))


class Relay:
    def __init__(self, project: str, target: str) -> None:
        self.project = project
        self.target = target
        self.known: dict[str, tuple[Document, dict[str, Any]]] = {}
        self.started = False
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(8, thread_name_prefix="deliver")
        self.session = requests.Session()

    def document(self, snap: DocumentSnapshot) -> tuple[Document, dict[str, Any]]:
        data = snap.to_dict() or {}
        name = f"projects/{self.project}/databases/(default)/documents/{snap.reference.path}"
        return (
            Document(
                name=name,
                fields={k: to_value(v) for k, v in data.items()},
                create_time=snap.create_time,
                update_time=snap.update_time,
            ),
            data,
        )

    def on_snapshot(self, snapshots: Any, changes: Any, read_time: Any) -> None:
        with self.lock:
            events = []
            for change in changes:
                path = change.document.reference.path
                old = self.known.get(path)
                if change.type.name == "REMOVED":
                    self.known.pop(path, None)
                    new = None
                else:
                    new = self.document(change.document)
                    self.known[path] = new
                if not self.started:
                    continue  # the first snapshot is the state we start from, not news
                changed = sorted(
                    key
                    for key in set(new[1] if new else {}) | set(old[1] if old else {})
                    if (new[1] if new else {}).get(key) != (old[1] if old else {}).get(key)
                )
                events.append(
                    DocumentEventData(
                        value=new[0] if new else Document(),
                        old_value=old[0] if old else Document(),
                        update_mask=DocumentMask(field_paths=changed) if old and new else None,
                    )
                )
            self.started = True
        for event in events:
            self.pool.submit(self.deliver, event)

    def deliver(self, event: DocumentEventData) -> None:
        name = event.value.name or event.old_value.name
        subject = name.split("/documents/", 1)[1]
        headers = {
            "Content-Type": "application/protobuf",
            "ce-specversion": "1.0",
            "ce-type": WRITTEN_EVENT_TYPE,
            "ce-source": f"//firestore.googleapis.com/projects/{self.project}/databases/(default)",
            "ce-subject": f"documents/{subject}",
            "ce-id": uuid.uuid4().hex,
            "ce-time": iso(datetime.now(UTC)),
            "ce-dataschema": "https://github.com/googleapis/google-cloudevents/blob/main/proto/google/events/cloud/firestore/v1/data.proto",
        }
        body = DocumentEventData.serialize(event)
        for attempt in range(DELIVERY_ATTEMPTS):
            try:
                answer = self.session.post(self.target, data=body, headers=headers, timeout=60)
                if 200 <= answer.status_code < 300:
                    return
                log.warning("finalize answered %s for %s", answer.status_code, subject)
            except requests.RequestException as exc:
                log.warning("finalize unreachable for %s: %s", subject, exc)
            time.sleep(min(30.0, 0.5 * 2**attempt))
        log.error("gave up delivering the event for %s", subject)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="URL of the finalize function")
    args = parser.parse_args()
    settings = Settings.from_env()
    logs.configure(settings)
    project = settings.project
    relay = Relay(project, args.target)
    client = firestore.Client(project=project)
    watch = client.collection_group("tally").on_snapshot(relay.on_snapshot)
    ready_file = os.environ.get("IMGSVC_READY_FILE")
    while not relay.started:
        time.sleep(0.05)
    if ready_file:
        with open(ready_file, "w") as ready:
            ready.write(str(os.getpid()))
    log.info("relaying Firestore image writes to %s", args.target)
    try:
        while True:
            time.sleep(3600)
    finally:
        watch.unsubscribe()


if __name__ == "__main__":
    main()
