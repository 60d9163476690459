"""The local profile's task queue: Celery on Redis, standing in for Cloud Tasks and the trigger.

Only the sending side lives here; the tasks themselves are entry points in local_profile/.
Celery is imported by this module alone, and only when TASK_BACKEND=celery, so the Cloud
Functions never need it.

Delays (image retries, webhook retries hours apart) are not Celery ETAs: a worker holds an ETA
task unacknowledged, and Redis hands it to someone else once the visibility timeout passes,
which would duplicate every long delay. They wait in a Redis sorted set instead, and the local
ticker (`local_profile/ticker.py`, a supervised process of its own, not Celery's embedded
beat) queues them when they fall due. Redis keeps nothing across a restart here: whatever it
forgets, the sweeper finds again from Firestore.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from shared.config import Settings
from shared.domain.messages import Lane, Message, ShardSettled, to_payload

# Every queued message travels as the one Celery task `imgsvc.run`, its payload the message's
# JSON (shared.domain.messages): the worker decodes it and hands it to the one task handler.
TASK_RUN = "imgsvc.run"
QUEUE_CONTROL = "control"
QUEUE_IMAGES = "images"
QUEUES = (QUEUE_CONTROL, QUEUE_IMAGES)
DELAYED_KEY = "imgsvc:delayed"
# When a worker process last began a task (a Unix time): the worker's health probe compares
# it with the queues, to catch a worker that is alive but no longer consuming.
LAST_TASK_KEY = "imgsvc:worker:last_task_at"
RELEASE_BATCH = 500


def celery_config(
    redis_url: str, visibility_timeout: float, restore_interval: float
) -> dict[str, Any]:
    return {
        "broker_url": redis_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            # A task whose worker died unacknowledged is handed out again after this long.
            "visibility_timeout": visibility_timeout,
            "unacked_restore_interval": restore_interval,
            # kombu looks for such tasks only on one call in this many (10 by default), which
            # made the real period ten restore intervals: every call looks.
            "unacked_restore_throttle": 1,
            # A worker killed while restoring would otherwise block every restore for the
            # default five minutes.
            "unacked_mutex_expire": max(10, int(restore_interval * 10)),
        },
        "task_ignore_result": True,
        "task_acks_late": True,
        # A worker killed mid-task must not count as "done": the message goes back.
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # A pool process builds its services (the Firestore and Storage clients, the codec)
        # before it tells the main process it is up; Celery kills one that has not within
        # 4 s, and on a loaded machine it kills every replacement in turn (the fault drill
        # saw twenty in a row after the pool was killed). One that hangs is still caught.
        "worker_proc_alive_timeout": 60.0,
        "task_default_queue": QUEUE_CONTROL,
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_hijack_root_logger": False,
    }


def make_celery(settings: Settings) -> Any:
    from celery import Celery

    app = Celery("imgsvc")
    app.conf.update(
        celery_config(
            settings.redis_url,
            settings.celery_visibility_timeout,
            settings.celery_restore_interval,
        )
    )
    return app


def celery_queue_of(lane: Lane) -> str:
    """Images have a queue of their own, so that a backlog of them is visible (`backlog`) and
    control work (fan-out, finalisation, webhooks) never waits behind thousands of images."""
    return QUEUE_IMAGES if lane is Lane.IMAGES else QUEUE_CONTROL


class CeleryTaskQueue:
    """`shared.ports.TaskQueue` and `ImageEvents` over Celery."""

    def __init__(self, app: Any, redis: Any) -> None:
        self._app = app
        self._redis = redis

    def send(self, messages: Sequence[Message], *, delay_seconds: float = 0.0) -> None:
        if delay_seconds > 0:
            self._later(messages, delay_seconds)
            return
        with self._app.producer_or_acquire() as producer:
            for message in messages:
                self._app.send_task(
                    TASK_RUN,
                    args=[to_payload(message)],
                    queue=celery_queue_of(message.LANE),
                    producer=producer,
                )

    def shard_settled(self, request_id: str, shard: int) -> None:
        """The local stand-in for the Firestore trigger (shared.ports.ImageEvents)."""
        self.send([ShardSettled(request_id, shard)])

    def _later(self, messages: Sequence[Message], delay_seconds: float) -> None:
        due = time.time() + delay_seconds
        members = {
            json.dumps(
                {
                    "payload": to_payload(message),
                    "queue": celery_queue_of(message.LANE),
                    "nonce": time.time_ns(),
                }
            ): due
            for message in messages
        }
        self._redis.zadd(DELAYED_KEY, members)

    def backlog(self) -> int:
        """Tasks waiting in the queues (not counting those workers hold)."""
        return sum(int(self._redis.llen(queue)) for queue in QUEUES)

    def task_began(self) -> None:
        """Note that a worker process has just begun a task (see LAST_TASK_KEY)."""
        self._redis.set(LAST_TASK_KEY, time.time())

    def last_task_began(self) -> float | None:
        raw = self._redis.get(LAST_TASK_KEY)
        return float(raw) if raw is not None else None

    def release_due(self) -> int:
        """Queue what has fallen due. Sent before removed: a crash in between duplicates a
        task (every task is idempotent) rather than losing one."""
        due = self._redis.zrangebyscore(
            DELAYED_KEY, "-inf", time.time(), start=0, num=RELEASE_BATCH
        )
        for member in due:
            item = json.loads(member)
            self._app.send_task(TASK_RUN, args=[item["payload"]], queue=item["queue"])
            self._redis.zrem(DELAYED_KEY, member)
        return len(due)
