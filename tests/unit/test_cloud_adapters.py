"""The cloud profile's adapters and entry logic, without the cloud."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from google.api_core import exceptions as gexc

from shared.adapters.gcp.cloud_tasks_queue import TASK_EVENT_TYPE, CloudTasksQueue
from shared.adapters.gcp.firestore_events import (
    WRITTEN_EVENT_TYPE,
    NotATallyEvent,
    tally_write,
)
from shared.config import Settings
from shared.domain.errors import ErrorCode, ImageFailure
from shared.domain.messages import DeliverWebhook, MaterializeSlice, ProcessImage, to_payload
from shared.domain.model import ImageJob, ImageSlice, ImageState, RequestStatus
from shared.entrypoints import tasks
from shared.entrypoints.cloud_events import handle_event
from shared.usecases.accept_upload import accept_upload
from shared.usecases.fan_out import materialize_slice
from shared.usecases.process_image import process_image
from tests.fakes import run_queue, tally_write_event
from tests.unit.test_use_cases import CSV, world

NAME = "projects/p/databases/(default)/documents/requests/REQ/tally/7"


def event(old: int | None, new: int | None, name: str = NAME) -> bytes:
    return tally_write_event(name, old, new)


# ---- Firestore trigger events -----------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "settles"),
    [
        (None, 3, False),  # the tally's creation, at upload
        (3, 2, False),  # one image of three settled
        (1, 0, True),  # its last one
        (None, 0, True),  # created and settled between two snapshots
        (0, 0, False),  # a later write of a settled tally (none is made, but harmless)
        (0, None, False),  # deletion
    ],
)
def test_only_the_write_that_settles_a_tallys_last_image_is_news(
    old: int | None, new: int | None, settles: bool
) -> None:
    write = tally_write(event(old, new))
    assert (write.request_id, write.shard) == ("REQ", 7)
    assert write.settles is settles


def test_events_of_other_documents_are_refused() -> None:
    with pytest.raises(NotATallyEvent):
        tally_write(event(1, 0, "projects/p/databases/(default)/documents/requests/R"))
    with pytest.raises(NotATallyEvent):
        tally_write(event(1, 0, "projects/p/databases/(default)/documents/requests/R/images/x"))
    with pytest.raises(NotATallyEvent):
        tally_write(b"\xff\x00 not a protobuf")


# ---- Cloud Tasks ---------------------------------------------------------------------------


class FakeTasksClient:
    def __init__(self) -> None:
        self.created: list[tuple[str, dict[str, Any]]] = []
        self.refuse: set[str] = set()

    def create_task(self, *, parent: str, task: dict[str, Any]) -> None:
        if task.get("name") in self.refuse:
            raise gexc.AlreadyExists("duplicate")
        self.created.append((parent, task))


SETTINGS = Settings(
    project="proj",
    task_backend="cloudtasks",
    process_image_url="https://process.example/",
    finalize_url="https://finalize.example/",
    tasks_service_account="tasks@proj.iam.gserviceaccount.com",
)


def test_image_tasks_have_deterministic_names_and_an_oidc_token() -> None:
    client = FakeTasksClient()
    queue = CloudTasksQueue(SETTINGS, client)
    queue.send([ProcessImage("R", "0000000-00"), ProcessImage("R", "0000000-01")])
    queue.send([ProcessImage("R", "0000000-00")])
    names = [task["name"] for _, task in client.created]
    assert names[0] == names[2] and names[0] != names[1]
    assert all(
        n.startswith("projects/proj/locations/us-central1/queues/images/tasks/") for n in names
    )
    parent, task = client.created[0]
    assert parent == "projects/proj/locations/us-central1/queues/images"
    http = task["http_request"]
    assert http["url"] == "https://process.example/"
    assert json.loads(http["body"]) == {
        "kind": "process",
        "request_id": "R",
        "image_id": "0000000-00",
    }
    assert http["oidc_token"] == {
        "service_account_email": "tasks@proj.iam.gserviceaccount.com",
        "audience": "https://process.example/",
    }


def test_a_task_that_already_exists_is_not_an_error() -> None:
    client = FakeTasksClient()
    queue = CloudTasksQueue(SETTINGS, client)
    queue.send([ProcessImage("R", "0000000-00")])
    client.refuse.add(client.created[0][1]["name"])
    queue.send([ProcessImage("R", "0000000-00"), ProcessImage("R", "0000000-01")])  # no exception
    assert len(client.created) == 2


def test_other_errors_reach_the_caller() -> None:
    class Broken(FakeTasksClient):
        def create_task(self, *, parent: str, task: dict[str, Any]) -> None:
            raise gexc.ServiceUnavailable("down")

    with pytest.raises(gexc.ServiceUnavailable):
        CloudTasksQueue(SETTINGS, Broken()).send([ProcessImage("R", "0000000-00")])


def test_slices_go_to_the_fan_out_queue() -> None:
    client = FakeTasksClient()
    job = ImageJob("R", "0000000-00", 0, 0, "1", "https://img.example/a.jpg")
    CloudTasksQueue(SETTINGS, client).send(
        [MaterializeSlice(ImageSlice("R", 0, (job,))), MaterializeSlice(ImageSlice("R", 1, (job,)))]
    )
    assert {parent.rsplit("/", 1)[1] for parent, _ in client.created} == {"fan-out"}
    assert len({task["name"] for _, task in client.created}) == 2


def test_a_webhook_retry_is_a_cloudevent_to_finalize_at_its_schedule_time() -> None:
    client = FakeTasksClient()
    before = datetime.now(UTC)
    CloudTasksQueue(SETTINGS, client).send([DeliverWebhook("R")], delay_seconds=300)
    parent, task = client.created[0]
    assert parent.endswith("/queues/webhooks")
    http = task["http_request"]
    assert http["url"] == "https://finalize.example/"
    assert http["headers"]["ce-type"] == TASK_EVENT_TYPE
    assert json.loads(http["body"]) == {"kind": "deliver_webhook", "request_id": "R"}
    delay = (task["schedule_time"] - before).total_seconds()
    assert 299 <= delay <= 302


def test_an_immediate_webhook_has_no_schedule_time() -> None:
    client = FakeTasksClient()
    CloudTasksQueue(SETTINGS, client).send([DeliverWebhook("R")])
    assert "schedule_time" not in client.created[0][1]


# ---- process_image's task answers -----------------------------------------------------------


def test_an_image_task_answers_200_with_the_outcome() -> None:
    w = world()
    request_id = accept_upload(w.services, CSV).request_id
    materialize_slice(w.services, w.queue.slices.pop(0))
    answer = tasks.run_task(
        w.services, {"kind": "process", "request_id": request_id, "image_id": "0000000-00"},
        redelivered=False,
    )  # fmt: skip
    assert (answer.status, answer.body) == (200, {"state": "done"})


def test_a_permanent_failure_is_a_finished_task() -> None:
    w = world()
    w.fetcher.answers["https://img.test/a.jpg"] = b"broken"
    request_id = accept_upload(w.services, CSV).request_id
    materialize_slice(w.services, w.queue.slices.pop(0))
    payload = {"kind": "process", "request_id": request_id, "image_id": "0000000-00"}
    answer = tasks.run_task(w.services, payload, redelivered=False)
    assert (answer.status, answer.body) == (200, {"state": "failed"})


def test_a_transient_failure_answers_503_so_cloud_tasks_retries() -> None:
    w = world()
    w.fetcher.answers["https://img.test/a.jpg"] = ImageFailure(
        ErrorCode.TIMEOUT, "slow", transient=True, retry_after=7
    )
    request_id = accept_upload(w.services, CSV).request_id
    materialize_slice(w.services, w.queue.slices.pop(0))
    payload = {"kind": "process", "request_id": request_id, "image_id": "0000000-00"}
    answer = tasks.run_task(w.services, payload, redelivered=False)
    assert answer.status == 503 and answer.headers["Retry-After"] == "7"
    record = w.images.get(request_id, "0000000-00")
    assert record is not None and record.state is ImageState.PENDING and record.attempts == 1


def test_a_slice_task_materialises_its_images() -> None:
    w = world()
    accept_upload(w.services, CSV)
    payload = to_payload(MaterializeSlice(w.queue.slices.pop(0)))
    answer = tasks.run_task(w.services, payload, redelivered=False)
    assert (answer.status, answer.body) == (200, {"materialized": 4})
    assert len(w.queue.images) == 4


@pytest.mark.parametrize("payload", [None, [], {"kind": "explode"}, {"kind": "process"}])
def test_a_malformed_task_is_a_400(payload: object) -> None:
    answer = tasks.run_task(world().services, payload, redelivered=False)
    assert answer.status == 400 and answer.body["error"]["code"] == "malformed_task"


# ---- finalize's events -------------------------------------------------------------------------


def test_the_event_of_the_last_tally_to_settle_completes_the_request() -> None:
    w = world()
    request_id = accept_upload(w.services, CSV).request_id
    materialize_slice(w.services, w.queue.slices.pop(0))
    images = list(w.queue.images)
    for _, image in images[:-1]:
        process_image(w.services, request_id, image)
    record = w.requests.get(request_id)
    assert record is not None
    last = record.tally_shards - 1
    name = f"projects/p/databases/(default)/documents/requests/{request_id}/tally/{last}"
    # A forged "settled" while an image is in fact pending: the finaliser trusts the store.
    handle_event(w.services, WRITTEN_EVENT_TYPE, event(1, 0, name))
    record = w.requests.get(request_id)
    assert record is not None and record.status is RequestStatus.IN_PROGRESS
    process_image(w.services, request_id, images[-1][1])
    handle_event(w.services, WRITTEN_EVENT_TYPE, event(1, 0, name))
    record = w.requests.get(request_id)
    assert record is not None and record.status is RequestStatus.COMPLETED


def test_a_webhook_event_makes_one_delivery_attempt() -> None:
    w = world()
    request_id = accept_upload(w.services, CSV, webhook_url="https://hooks.test/x").request_id
    run_queue(w)
    payload = to_payload(DeliverWebhook(request_id))
    handle_event(w.services, TASK_EVENT_TYPE, payload)
    handle_event(w.services, TASK_EVENT_TYPE, json.dumps(payload).encode())
    assert len(w.webhooks.sent) == 1
