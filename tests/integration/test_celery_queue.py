"""The Celery task queue adapter against a real Redis (our own, on a free port)."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from local_profile.recipes import Stack
from shared.adapters.local.celery_queue import (
    DELAYED_KEY,
    QUEUE_CONTROL,
    QUEUE_IMAGES,
    TASK_RUN,
    CeleryTaskQueue,
    make_celery,
)
from shared.config import Settings
from shared.domain.messages import DeliverWebhook, MaterializeSlice, ProcessImage
from shared.domain.model import ImageJob, ImageSlice

pytestmark = pytest.mark.integration


@pytest.fixture
def queue(backing: Stack) -> tuple[CeleryTaskQueue, redis.Redis]:
    # A database of its own, so the live worker of the e2e tests never sees these messages.
    url = backing.env["REDIS_URL"].rsplit("/", 1)[0] + "/5"
    client = redis.Redis.from_url(url)
    client.flushdb()
    return CeleryTaskQueue(make_celery(Settings(redis_url=url)), client), client


def queued(client: redis.Redis, name: str) -> list[dict[str, object]]:
    return [json.loads(raw) for raw in client.lrange(name, 0, -1)]


def test_images_go_to_the_images_queue_one_message_each(queue) -> None:  # type: ignore[no-untyped-def]
    tasks, client = queue
    tasks.send([ProcessImage("r1", "0000000-00"), ProcessImage("r1", "0000000-01")])
    messages = queued(client, QUEUE_IMAGES)
    assert [m["headers"]["task"] for m in messages] == [TASK_RUN, TASK_RUN]
    assert sorted(json.loads(base64.b64decode(m["body"]))[0][0]["image_id"] for m in messages) == [
        "0000000-00",
        "0000000-01",
    ]


def test_slices_go_to_the_control_queue(queue) -> None:  # type: ignore[no-untyped-def]
    tasks, client = queue
    job = ImageJob("r1", "0000000-00", 0, 0, "1", "http://127.0.0.1/a.jpg")
    tasks.send([MaterializeSlice(ImageSlice("r1", i, (job,))) for i in (0, 1)])
    assert client.llen(QUEUE_CONTROL) == 2


def test_a_delayed_task_waits_until_due_then_is_released_once(queue) -> None:  # type: ignore[no-untyped-def]
    tasks, client = queue
    tasks.send([DeliverWebhook("r1")], delay_seconds=0.5)
    assert client.llen(QUEUE_CONTROL) == 0
    assert tasks.release_due() == 0  # not due yet
    assert client.zcard(DELAYED_KEY) == 1
    time.sleep(0.6)
    assert tasks.release_due() == 1
    assert tasks.release_due() == 0
    (message,) = queued(client, QUEUE_CONTROL)
    assert message["headers"]["task"] == TASK_RUN
    assert json.loads(base64.b64decode(message["body"]))[0][0] == {
        "kind": "deliver_webhook",
        "request_id": "r1",
    }
    assert client.zcard(DELAYED_KEY) == 0


def test_an_immediate_webhook_is_queued_at_once(queue) -> None:  # type: ignore[no-untyped-def]
    tasks, client = queue
    tasks.send([DeliverWebhook("r1")])
    assert client.llen(QUEUE_CONTROL) == 1
    assert client.zcard(DELAYED_KEY) == 0


# A worker process that takes a task from `control` and is killed holding it, unacknowledged.
TAKE_AND_DIE = """
import os, signal, sys
from shared.adapters.local.celery_queue import make_celery
from shared.config import Settings
with make_celery(Settings(redis_url=sys.argv[1])).connection_for_read() as connection:
    assert connection.default_channel.basic_get("control", no_ack=False) is not None
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_every_look_of_kombus_hands_back_a_task_whose_worker_died(backing: Stack) -> None:
    """A worker looks for tasks past their visibility timeout every CELERY_RESTORE_INTERVAL,
    as configured, and hands them out again. kombu only really looks on one call in
    `unacked_restore_throttle` (10 by default), which made the period ten times the setting:
    a dead worker's tasks came back up to 100 s after their timeout instead of 10."""
    url = backing.env["REDIS_URL"].rsplit("/", 1)[0] + "/6"
    client = redis.Redis.from_url(url)
    client.flushdb()
    settings = Settings(redis_url=url, celery_visibility_timeout=1, celery_restore_interval=1)
    app = make_celery(settings)
    with app.connection_for_read() as connection:
        channel = connection.default_channel

        def look() -> None:  # what the worker's event loop calls every restore interval
            channel.qos.restore_visible(
                num=channel.unacked_restore_limit, interval=channel.unacked_restore_throttle
            )

        look()  # the first look, with nothing held
        CeleryTaskQueue(app, client).send([DeliverWebhook("r1")])
        died = subprocess.run(
            [sys.executable, "-c", TAKE_AND_DIE, url],
            cwd=Path(__file__).resolve().parents[2],
            check=False,
        )
        assert died.returncode == -signal.SIGKILL
        assert client.llen(QUEUE_CONTROL) == 0  # held by the dead worker
        time.sleep(1.2)  # past its visibility timeout
        look()  # the next look
    (message,) = queued(client, QUEUE_CONTROL)
    assert message["properties"]["delivery_info"]["redelivered"] is True
    assert json.loads(base64.b64decode(message["body"]))[0][0]["request_id"] == "r1"
