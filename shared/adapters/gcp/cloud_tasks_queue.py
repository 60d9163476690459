"""Production's task queue: Cloud Tasks, HTTP targets with an OIDC token.

Three queues, one per lane of `shared.domain.messages`, so that each can have its own rate
limits and retry policy (deploy.sh):

    fan-out   lane fan-out: materialise slices of a request  -> process_image function (JSON)
    images    lane images: process one image                 -> process_image function (JSON)
    webhooks  lane finalize: webhook attempts and the like   -> finalize function (CloudEvent)

Messages with a dedup key get a deterministic task name (a hash of kind and key), so Cloud
Tasks itself drops a second copy of the same work: a redelivered slice does not queue its 500
images twice. Many tasks are created concurrently: a 100,000-image upload queues 200 slice
tasks, and each slice its 500 image tasks, so no single call has to create more than a few
hundred.

Work for `finalize` is a CloudEvent of type `com.imgsvc.task` posted at its `schedule_time`:
retries wait in Cloud Tasks, never in a sleeping function.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc

from shared.config import Settings
from shared.domain.messages import Lane, Message, to_payload
from shared.domain.times import iso

# The CloudEvent type of queued messages for `finalize` (its other events come from Firestore).
TASK_EVENT_TYPE = "com.imgsvc.task"
EVENT_SOURCE = "//imgsvc/tasks"
# Concurrent CreateTask calls; each is one small RPC.
CREATE_CONCURRENCY = 32

log = logging.getLogger(__name__)


def task_id(*parts: str) -> str:
    # Cloud Tasks ids allow [A-Za-z0-9_-]; hashing also spreads names, which Cloud Tasks
    # recommends for throughput (sequential names form hot key ranges).
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:40]


@dataclass(frozen=True)
class _Route:
    queue: str  # the queue's full resource name
    url: str
    as_event: bool  # a binary-mode CloudEvent for `finalize`, else a JSON body


class CloudTasksQueue:
    """`shared.ports.TaskQueue` over Cloud Tasks."""

    def __init__(self, settings: Settings, client: Any | None = None) -> None:
        if not settings.process_image_url or not settings.finalize_url:
            raise ValueError("PROCESS_IMAGE_URL and FINALIZE_URL are needed for Cloud Tasks")
        self._client = client or _client(settings)
        self._settings = settings
        location = f"projects/{settings.project}/locations/{settings.cloud_tasks_location}"
        self._routes = {
            Lane.FAN_OUT: _Route(
                f"{location}/queues/{settings.cloud_tasks_fanout_queue}",
                settings.process_image_url,
                as_event=False,
            ),
            Lane.IMAGES: _Route(
                f"{location}/queues/{settings.cloud_tasks_queue}",
                settings.process_image_url,
                as_event=False,
            ),
            Lane.FINALIZE: _Route(
                f"{location}/queues/{settings.cloud_tasks_webhook_queue}",
                settings.finalize_url,
                as_event=True,
            ),
        }
        self._pool = ThreadPoolExecutor(CREATE_CONCURRENCY, thread_name_prefix="create-task")

    def send(self, messages: Sequence[Message], *, delay_seconds: float = 0.0) -> None:
        now = datetime.now(UTC)
        at = now + timedelta(seconds=delay_seconds) if delay_seconds > 0 else None
        self._create([self._task(message, now, at) for message in messages])

    def _task(self, message: Message, now: datetime, at: datetime | None) -> tuple[str, Any]:
        route = self._routes[message.LANE]
        body = json.dumps(to_payload(message), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if route.as_event:
            # Binary-mode CloudEvent headers: functions-framework hands it to `finalize` as an
            # event of our own type, beside the Firestore ones.
            headers |= {
                "ce-specversion": "1.0",
                "ce-type": TASK_EVENT_TYPE,
                "ce-source": EVENT_SOURCE,
                "ce-id": uuid.uuid4().hex,
                "ce-time": iso(now),
                "ce-subject": f"{message.KIND}/{message.fields().get('request_id', '')}",
            }
        http_request: dict[str, Any] = {
            "http_method": "POST",
            "url": route.url,
            "headers": headers,
            "body": body,
        }
        if self._settings.tasks_service_account:
            http_request["oidc_token"] = {
                "service_account_email": self._settings.tasks_service_account,
                "audience": route.url,
            }
        task: dict[str, Any] = {"http_request": http_request}
        key = message.dedup_key()
        if key is not None:
            task["name"] = f"{route.queue}/tasks/{message.KIND}-{task_id(message.KIND, key)}"
        if at is not None:
            task["schedule_time"] = at
        return route.queue, task

    def _create(self, tasks: Sequence[tuple[str, Any]]) -> None:
        def create(queued: tuple[str, Any]) -> None:
            queue, task = queued
            # AlreadyExists: the same work is already queued (or was, within the last hour).
            with contextlib.suppress(gexc.AlreadyExists):
                self._client.create_task(parent=queue, task=task)

        # list() re-raises the first failure, so the caller retries the whole batch; the
        # names make that retry harmless for the tasks that did get created.
        list(self._pool.map(create, tasks))


def _client(settings: Settings) -> Any:
    from google.cloud import tasks_v2

    if settings.cloud_tasks_emulator_host:
        import grpc
        from google.auth.credentials import AnonymousCredentials
        from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

        channel = grpc.insecure_channel(settings.cloud_tasks_emulator_host)
        transport = CloudTasksGrpcTransport(channel=channel, credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
        return tasks_v2.CloudTasksClient(transport=transport)
    return tasks_v2.CloudTasksClient()
