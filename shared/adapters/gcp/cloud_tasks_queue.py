"""Production's task queue: Cloud Tasks, HTTP targets with an OIDC token.

Three queues, so that each can have its own rate limits and retry policy (deploy.sh):

    fan-out   materialise slices of a request      -> process_image function
    images    process one image                    -> process_image function
    webhooks  deliver (or retry) a webhook message -> finalize function, as a CloudEvent

Slice and image tasks get deterministic names (a hash of what they do), so Cloud Tasks itself
drops a second copy of the same task: a redelivered slice does not queue its 500 images twice.
Many tasks are created concurrently: a 100,000-image upload queues 200 slice tasks, and each
slice its 500 image tasks, so no single call has to create more than a few hundred.

A webhook attempt is a CloudEvent of type `com.imgsvc.webhook.deliver` posted to `finalize`
at its `schedule_time`: retries wait in Cloud Tasks, never in a sleeping function.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc

from shared.config import Settings
from shared.domain.model import ImageSlice
from shared.domain.task_payloads import slice_to_payload

WEBHOOK_EVENT_TYPE = "com.imgsvc.webhook.deliver"
EVENT_SOURCE = "//imgsvc/webhooks"
# Concurrent CreateTask calls; each is one small RPC.
CREATE_CONCURRENCY = 32

log = logging.getLogger(__name__)


def task_id(*parts: str) -> str:
    # Cloud Tasks ids allow [A-Za-z0-9_-]; hashing also spreads names, which Cloud Tasks
    # recommends for throughput (sequential names form hot key ranges).
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:40]


class CloudTasksQueue:
    def __init__(self, settings: Settings, client: Any | None = None) -> None:
        if not settings.process_image_url or not settings.finalize_url:
            raise ValueError("PROCESS_IMAGE_URL and FINALIZE_URL are needed for Cloud Tasks")
        self._client = client or _client(settings)
        self._settings = settings
        location = f"projects/{settings.project}/locations/{settings.cloud_tasks_location}"
        self.fanout_queue = f"{location}/queues/{settings.cloud_tasks_fanout_queue}"
        self.images_queue = f"{location}/queues/{settings.cloud_tasks_queue}"
        self.webhooks_queue = f"{location}/queues/{settings.cloud_tasks_webhook_queue}"
        self._pool = ThreadPoolExecutor(CREATE_CONCURRENCY, thread_name_prefix="create-task")

    def _http_task(
        self,
        queue: str,
        url: str,
        body: bytes,
        headers: dict[str, str],
        *,
        name: str | None = None,
        at: datetime | None = None,
    ) -> dict[str, Any]:
        http_request: dict[str, Any] = {
            "http_method": "POST",
            "url": url,
            "headers": headers,
            "body": body,
        }
        if self._settings.tasks_service_account:
            http_request["oidc_token"] = {
                "service_account_email": self._settings.tasks_service_account,
                "audience": url,
            }
        task: dict[str, Any] = {"http_request": http_request}
        if name:
            task["name"] = f"{queue}/tasks/{name}"
        if at is not None:
            task["schedule_time"] = at
        return task

    def _create(self, queue: str, tasks: Sequence[dict[str, Any]]) -> None:
        def create(task: dict[str, Any]) -> None:
            # AlreadyExists: the same work is already queued (or was, within the last hour).
            with contextlib.suppress(gexc.AlreadyExists):
                self._client.create_task(parent=queue, task=task)

        # list() re-raises the first failure, so the caller retries the whole batch; the
        # names make that retry harmless for the tasks that did get created.
        list(self._pool.map(create, tasks))

    def _json_task(
        self, queue: str, url: str, payload: dict[str, Any], name: str
    ) -> dict[str, Any]:
        body = json.dumps(payload, separators=(",", ":")).encode()
        return self._http_task(queue, url, body, {"Content-Type": "application/json"}, name=name)

    def materialize(self, slices: Sequence[ImageSlice]) -> None:
        url = self._settings.process_image_url or ""
        self._create(
            self.fanout_queue,
            [
                self._json_task(
                    self.fanout_queue,
                    url,
                    {"kind": "materialize", "slice": slice_to_payload(s)},
                    f"slice-{task_id(s.request_id, str(s.index))}",
                )
                for s in slices
            ],
        )

    def process(self, request_id: str, image_ids: Sequence[str]) -> None:
        url = self._settings.process_image_url or ""
        self._create(
            self.images_queue,
            [
                self._json_task(
                    self.images_queue,
                    url,
                    {"kind": "process", "request_id": request_id, "image_id": image_id},
                    f"image-{task_id(request_id, image_id)}",
                )
                for image_id in image_ids
            ],
        )

    def deliver_webhook(self, request_id: str, *, delay_seconds: float = 0.0) -> None:
        now = datetime.now(UTC)
        # Binary-mode CloudEvent headers: functions-framework hands it to `finalize` as an
        # event of our own type, beside the Firestore ones.
        headers = {
            "Content-Type": "application/json",
            "ce-specversion": "1.0",
            "ce-type": WEBHOOK_EVENT_TYPE,
            "ce-source": EVENT_SOURCE,
            "ce-id": uuid.uuid4().hex,
            "ce-time": now.isoformat().replace("+00:00", "Z"),
            "ce-subject": f"requests/{request_id}",
        }
        body = json.dumps({"request_id": request_id}).encode()
        at = now + timedelta(seconds=delay_seconds) if delay_seconds > 0 else None
        task = self._http_task(
            self.webhooks_queue, self._settings.finalize_url or "", body, headers, at=at
        )
        self._create(self.webhooks_queue, [task])


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
