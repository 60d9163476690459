"""The two additions of issue 11 in the Firestore adapters, against Google's emulator: image
pages filtered by state, and a delivery restarted as a new series beside the old one."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from google.cloud import firestore

from shared.adapters.gcp.firestore_store import (
    FirestoreDeliveries,
    FirestoreImages,
    FirestoreRequests,
)
from shared.config import Settings
from shared.domain.model import (
    DeliveryAttempt,
    DeliveryState,
    ImageState,
    Progress,
    WebhookDelivery,
)
from shared.usecases.services import SystemClock
from tests.integration.test_firestore_store import JPEG, begin, jobs, new_request

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def db(settings: Settings) -> firestore.Client:
    return firestore.Client(project=settings.project)


@pytest.fixture
def stores(db: firestore.Client) -> tuple[FirestoreRequests, FirestoreImages, FirestoreDeliveries]:
    clock = SystemClock()
    return FirestoreRequests(db, clock), FirestoreImages(db, clock), FirestoreDeliveries(db)


def test_a_page_filtered_by_state_holds_only_that_state_in_input_order(stores) -> None:  # type: ignore[no-untyped-def]
    requests, images, _ = stores
    request_id = new_request(requests, 30)
    all_jobs = jobs(request_id, 30)
    images.create_missing(all_jobs)
    # Every seventh image fails, every third of the rest is done, the others stay pending.
    for job in all_jobs:
        attempt = begin(images, request_id, job.image_id)
        if job.row % 7 == 0:
            images.record_failed(
                attempt, request_id, job.image_id, code="http_error", message="404"
            )
        elif job.row % 3 == 0:
            images.record_done(
                attempt, request_id, job.image_id, output_url="u", output_path="p", image=JPEG,
                source_bytes=1,
            )  # fmt: skip
    failed = images.page(request_id, after=None, limit=3, state=ImageState.FAILED)
    assert [r.row for r in failed] == [0, 7, 14]
    rest = images.page(request_id, after=failed[-1].image_id, limit=3, state=ImageState.FAILED)
    assert [r.row for r in rest] == [21, 28]
    done = images.page(request_id, after=None, limit=100, state=ImageState.DONE)
    assert [r.row for r in done] == [3, 6, 9, 12, 15, 18, 24, 27]
    pending = images.page(request_id, after=None, limit=100, state=ImageState.PENDING)
    assert len(pending) == 30 - 5 - 8
    assert all(r.state is ImageState.PENDING for r in pending)


def settled_with_delivery(requests: FirestoreRequests, deliveries: FirestoreDeliveries) -> str:
    request_id = new_request(requests, 1)
    delivery = WebhookDelivery(
        request_id, f"msg_{request_id}", "http://127.0.0.1:9/hook",
        {"request_id": request_id, "status": "completed"}, DeliveryState.PENDING,
    )  # fmt: skip
    requests.settle(
        request_id, completed=True, csv_url="c", output_path="p", progress=Progress(1, 1, 0),
        delivery=delivery,
    )  # fmt: skip
    return request_id


def test_a_restart_keeps_the_finished_series_and_starts_a_new_one(stores) -> None:  # type: ignore[no-untyped-def]
    requests, _, deliveries = stores
    request_id = settled_with_delivery(requests, deliveries)
    now = datetime.now(UTC)
    assert deliveries.restart(request_id, now=now) is None  # its first series is running
    assert deliveries.claim(request_id, now=now, lease_seconds=60) is not None
    deliveries.record_attempt(
        request_id,
        DeliveryAttempt(1, now, now, 200, None, True),
        state=DeliveryState.DELIVERED,
        next_attempt_at=None,
    )
    restarted = deliveries.restart(request_id, now=now)
    assert restarted is not None
    assert (restarted.state, restarted.attempts, restarted.message_id) == (
        DeliveryState.PENDING,
        (),
        f"msg_{request_id}",
    )
    assert [s.state for s in restarted.earlier_series] == [DeliveryState.DELIVERED]
    assert [a.status_code for a in restarted.earlier_series[0].attempts] == [200]
    # The new series is due at once and claimed like the first one.
    assert deliveries.claim(request_id, now=now, lease_seconds=60) is not None
    deliveries.record_attempt(
        request_id,
        DeliveryAttempt(1, now, now, None, "connection refused", False),
        state=DeliveryState.GAVE_UP,
        next_attempt_at=None,
    )
    again = deliveries.restart(request_id, now=now)
    assert again is not None
    assert [s.state for s in again.earlier_series] == [
        DeliveryState.DELIVERED,
        DeliveryState.GAVE_UP,
    ]


def test_two_resends_at_once_start_one_series(stores) -> None:  # type: ignore[no-untyped-def]
    requests, _, deliveries = stores
    request_id = settled_with_delivery(requests, deliveries)
    now = datetime.now(UTC)
    deliveries.claim(request_id, now=now, lease_seconds=60)
    deliveries.record_attempt(
        request_id,
        DeliveryAttempt(1, now, now, 200, None, True),
        state=DeliveryState.DELIVERED,
        next_attempt_at=None,
    )
    with ThreadPoolExecutor(5) as pool:
        outcomes = list(pool.map(lambda _: deliveries.restart(request_id, now=now), range(5)))
    assert sum(o is not None for o in outcomes) == 1
    stored = deliveries.get(request_id)
    assert stored is not None and len(stored.earlier_series) == 1


def test_byte_totals_sum_the_done_images_only(stores) -> None:  # type: ignore[no-untyped-def]
    requests, images, _ = stores
    request_id = new_request(requests, 4)
    all_jobs = jobs(request_id, 4)
    images.create_missing(all_jobs)
    for job, source_bytes in zip(all_jobs[:3], (100, 250, 40), strict=True):
        attempt = begin(images, request_id, job.image_id)
        images.record_done(
            attempt, request_id, job.image_id, output_url="u", output_path="p", image=JPEG,
            source_bytes=source_bytes,
        )  # fmt: skip
    attempt = begin(images, request_id, all_jobs[3].image_id)
    images.record_failed(attempt, request_id, all_jobs[3].image_id, code="x", message="y")
    totals = images.byte_totals(request_id)
    assert (totals.source, totals.output) == (390, 3 * len(JPEG.data))
    empty = images.byte_totals(new_request(requests, 1))
    assert (empty.source, empty.output) == (0, 0)
