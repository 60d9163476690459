"""The Firestore adapters against Google's Firestore emulator."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from google.cloud import firestore

from shared.adapters.gcp.firestore_store import (
    FirestoreDeliveries,
    FirestoreImages,
    FirestoreRequests,
)
from shared.config import Settings
from shared.domain.model import (
    CompressedImage,
    DeliveryAttempt,
    DeliveryState,
    ImageJob,
    ImageState,
    Progress,
    RequestRecord,
    RequestStatus,
    WebhookDelivery,
    image_id,
    new_request_id,
)
from shared.ports import Attempt
from shared.usecases.services import SystemClock

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def db(settings: Settings) -> firestore.Client:
    return firestore.Client(project=settings.project)


@pytest.fixture
def stores(db: firestore.Client) -> tuple[FirestoreRequests, FirestoreImages, FirestoreDeliveries]:
    clock = SystemClock()
    return FirestoreRequests(db, clock), FirestoreImages(db, clock), FirestoreDeliveries(db)


def new_request(requests: FirestoreRequests, total: int) -> str:
    request_id = new_request_id()
    now = datetime.now(UTC)
    requests.create(
        RequestRecord(
            request_id=request_id,
            status=RequestStatus.IN_PROGRESS,
            total_images=total,
            total_rows=total,
            input_path=f"uploads/{request_id}/input.csv",
            created_at=now,
            updated_at=now,
            webhook_url="http://127.0.0.1:9/hook",
        )
    )
    return request_id


def jobs(request_id: str, count: int) -> list[ImageJob]:
    return [
        ImageJob(request_id, image_id(i, 0), i, 0, str(i + 1), f"http://127.0.0.1:9/{i}.jpg")
        for i in range(count)
    ]


def begin(images: FirestoreImages, request_id: str, image_id: str) -> Attempt:
    record = images.get(request_id, image_id)
    assert record is not None
    return images.begin_attempt(record, count_now=False)


JPEG = CompressedImage(b"x" * 10, "jpeg", "image/jpeg", "jpg", 4, 3, "png", 100, 50)


def test_request_round_trips(stores) -> None:  # type: ignore[no-untyped-def]
    requests, _, _ = stores
    request_id = new_request(requests, 3)
    record = requests.get(request_id)
    assert record is not None
    assert (record.status, record.total_images, record.webhook_url) == (
        RequestStatus.IN_PROGRESS,
        3,
        "http://127.0.0.1:9/hook",
    )
    assert requests.get(new_request_id()) is None


def test_images_are_created_in_batches_of_500_and_only_once(stores) -> None:  # type: ignore[no-untyped-def]
    requests, images, _ = stores
    request_id = new_request(requests, 1200)
    all_jobs = jobs(request_id, 1200)
    first = images.create_missing(all_jobs)
    assert len(first) == 1200 and all(r.state is ImageState.PENDING for r in first)
    assert images.count(request_id) == 1200
    attempt = begin(images, request_id, all_jobs[0].image_id)
    images.record_done(
        attempt, request_id, all_jobs[0].image_id, output_url="u", output_path="p", image=JPEG,
        source_bytes=99,
    )  # fmt: skip
    again = images.create_missing(all_jobs)
    assert again[0].state is ImageState.DONE  # a second materialisation keeps results
    assert images.count(request_id) == 1200


def test_concurrent_materialisations_of_one_slice_agree(stores) -> None:  # type: ignore[no-untyped-def]
    requests, images, _ = stores
    request_id = new_request(requests, 300)
    slice_jobs = jobs(request_id, 300)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: images.create_missing(slice_jobs), range(4)))
    assert all(len(r) == 300 for r in results)
    assert images.count(request_id) == 300


def test_progress_is_counted_from_the_image_documents(stores) -> None:  # type: ignore[no-untyped-def]
    requests, images, _ = stores
    request_id = new_request(requests, 5)
    all_jobs = jobs(request_id, 5)
    images.create_missing(all_jobs)
    assert images.has_pending(request_id)
    for job in all_jobs[:3]:
        attempt = begin(images, request_id, job.image_id)
        images.record_done(
            attempt, request_id, job.image_id, output_url="u", output_path="p", image=JPEG,
            source_bytes=1,
        )  # fmt: skip
    attempt = begin(images, request_id, all_jobs[3].image_id)
    images.record_failed(attempt, request_id, all_jobs[3].image_id, code="timeout", message="slow")
    assert images.progress(request_id, 5) == Progress(total=5, done=3, failed=1)
    assert images.has_pending(request_id)
    last = images.last_update(request_id)
    assert last is not None and last > datetime.now(UTC) - timedelta(minutes=1)
    attempt = begin(images, request_id, all_jobs[4].image_id)
    images.record_failed(attempt, request_id, all_jobs[4].image_id, code="timeout", message="x")
    assert not images.has_pending(request_id)


def test_a_duplicate_attempt_never_overwrites_a_recorded_result(stores) -> None:  # type: ignore[no-untyped-def]
    requests, images, _ = stores
    request_id = new_request(requests, 1)
    (job,) = jobs(request_id, 1)
    images.create_missing([job])
    first = begin(images, request_id, job.image_id)
    second = begin(images, request_id, job.image_id)  # a duplicated task, concurrently
    images.record_done(
        second, request_id, job.image_id, output_url="u2", output_path="p", image=JPEG,
        source_bytes=1,
    )  # fmt: skip
    images.record_failed(first, request_id, job.image_id, code="timeout", message="late")
    record = images.get(request_id, job.image_id)
    assert record is not None
    assert (record.state, record.output_url, record.attempts) == (ImageState.DONE, "u2", 1)


def test_a_redelivered_task_counts_its_attempt_before_working(stores) -> None:  # type: ignore[no-untyped-def]
    requests, images, _ = stores
    request_id = new_request(requests, 1)
    (job,) = jobs(request_id, 1)
    images.create_missing([job])
    for expected in (1, 2, 3):  # the worker dies every time, before any outcome
        record = images.get(request_id, job.image_id)
        assert record is not None
        attempt = images.begin_attempt(record, count_now=True)
        assert attempt.number == expected
    record = images.get(request_id, job.image_id)
    assert record is not None and record.attempts == 3 and record.state is ImageState.PENDING


def test_a_retry_keeps_the_image_pending_with_its_last_error(stores) -> None:  # type: ignore[no-untyped-def]
    requests, images, _ = stores
    request_id = new_request(requests, 1)
    (job,) = jobs(request_id, 1)
    images.create_missing([job])
    attempt = begin(images, request_id, job.image_id)
    images.record_retry(attempt, request_id, job.image_id, code="timeout", message="slow host")
    record = images.get(request_id, job.image_id)
    assert record is not None
    assert (record.state, record.attempts, record.error_code) == (
        ImageState.PENDING,
        1,
        "timeout",
    )
    assert begin(images, request_id, job.image_id).number == 2


def test_pages_and_iteration_follow_input_order(stores) -> None:  # type: ignore[no-untyped-def]
    requests, images, _ = stores
    request_id = new_request(requests, 25)
    images.create_missing(list(reversed(jobs(request_id, 25))))
    first = images.page(request_id, after=None, limit=10)
    second = images.page(request_id, after=first[-1].image_id, limit=10)
    assert [r.row for r in first + second] == list(range(20))
    assert [r.row for r in images.iterate(request_id)] == list(range(25))


def test_settling_happens_once_however_many_racers(stores) -> None:  # type: ignore[no-untyped-def]
    requests, _, deliveries = stores
    request_id = new_request(requests, 1)
    delivery = WebhookDelivery(
        request_id, f"msg_{request_id}", "http://127.0.0.1:9/hook",
        {"request_id": request_id, "status": "completed"}, DeliveryState.PENDING,
    )  # fmt: skip

    def settle(_: int) -> bool:
        return requests.settle(
            request_id,
            completed=True,
            csv_url="http://csv",
            output_path="outputs/x.csv",
            progress=Progress(1, 1, 0),
            delivery=delivery,
        )

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(settle, range(6)))
    assert outcomes.count(True) == 1
    record = requests.get(request_id)
    assert record is not None and record.status is RequestStatus.COMPLETED
    assert record.final_progress == Progress(1, 1, 0)
    stored = deliveries.get(request_id)
    assert stored is not None and stored.state is DeliveryState.PENDING


def test_one_claim_per_attempt_and_attempts_are_recorded(stores) -> None:  # type: ignore[no-untyped-def]
    requests, _, deliveries = stores
    request_id = new_request(requests, 1)
    delivery = WebhookDelivery(
        request_id, f"msg_{request_id}", "http://127.0.0.1:9/hook", {}, DeliveryState.PENDING
    )
    requests.settle(
        request_id, completed=True, csv_url="c", output_path="p", progress=Progress(1, 1, 0),
        delivery=delivery,
    )  # fmt: skip
    now = datetime.now(UTC)
    with ThreadPoolExecutor(5) as pool:
        claims = list(
            pool.map(lambda _: deliveries.claim(request_id, now=now, lease_seconds=60), range(5))
        )
    assert sum(c is not None for c in claims) == 1
    attempt = DeliveryAttempt(1, now, now, 500, None, False)
    deliveries.record_attempt(
        request_id, attempt, state=DeliveryState.PENDING, next_attempt_at=now + timedelta(seconds=5)
    )
    assert deliveries.claim(request_id, now=now, lease_seconds=60) is None  # not due yet
    later = now + timedelta(seconds=6)
    assert deliveries.claim(request_id, now=later, lease_seconds=60) is not None
    stored = deliveries.get(request_id)
    assert stored is not None
    assert [dataclasses.astuple(a)[0] for a in stored.attempts] == [1]
    assert stored.attempts[0].status_code == 500
