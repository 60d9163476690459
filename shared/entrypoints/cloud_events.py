"""What the `finalize` function does with the CloudEvents it receives (see its main.py)."""

from __future__ import annotations

import json
import logging
from typing import Any

from shared.adapters.gcp.cloud_tasks_queue import TASK_EVENT_TYPE
from shared.adapters.gcp.firestore_events import WRITTEN_EVENT_TYPE, tally_write
from shared.domain.messages import ShardSettled, from_payload
from shared.entrypoints.tasks import handle
from shared.usecases.services import Services

log = logging.getLogger(__name__)


def handle_event(services: Services, event_type: str, data: Any) -> None:
    """Raises on failure, so that the platform delivers the event again."""
    if event_type == WRITTEN_EVENT_TYPE:
        if not isinstance(data, bytes):
            raise ValueError("a Firestore event carries a DocumentEventData protobuf")
        write = tally_write(data)
        # Only the write that counted a tally's last image is news; the event says so itself.
        if write.settles:
            handle(services, ShardSettled(write.request_id, write.shard))
        return
    if event_type == TASK_EVENT_TYPE:
        payload = json.loads(data) if isinstance(data, bytes | str) else data
        handle(services, from_payload(payload))
        return
    log.warning("finalize ignores events of type %s", event_type)
