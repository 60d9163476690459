"""One contract for the stores, run against the fakes and against Firestore's emulator.

The unit tests run the use cases over the fakes in tests/fakes.py; that proves something only
if the fakes behave as Firestore does. Every test here runs twice, on the fake stores and on
the Firestore adapters over Google's emulator, so the two cannot drift: the same conditional
writes refused, the same orders, the same pages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.cloud import firestore

from shared.adapters.gcp.firestore_store import (
    FirestoreDeliveries,
    FirestoreImages,
    FirestoreRequests,
)
from shared.adapters.gcp.firestore_upload_keys import FirestoreUploadKeys
from shared.config import Settings
from shared.domain.model import (
    CompressedImage,
    DeliveryAttempt,
    DeliveryState,
    ImageJob,
    ImageState,
    Progress,
    Recorded,
    RequestRecord,
    RequestStatus,
    StoredElsewhere,
    Tally,
    UploadKey,
    WebhookDelivery,
    image_id,
    new_request_id,
)
from shared.domain.tally import shard_count, shard_of
from shared.ports import (
    Attempt,
    DeliveryRepository,
    ImageRepository,
    RequestRepository,
    UploadKeys,
)
from shared.usecases.services import SystemClock
from tests.fakes import (
    FakeClock,
    FakeDeliveries,
    FakeImages,
    FakeRequests,
    FakeTallies,
    FakeUploadKeys,
    UpdateTimes,
)

pytestmark = pytest.mark.integration


@dataclass
class Stores:
    requests: RequestRepository
    images: ImageRepository
    deliveries: DeliveryRepository
    upload_keys: UploadKeys


@pytest.fixture(scope="module")
def db(settings: Settings) -> firestore.Client:
    # A project of its own on the shared emulator: the live stack's sweeper (other tests)
    # must not take up the requests these tests leave half-done on purpose.
    return firestore.Client(project=f"{settings.project}-contract")


@pytest.fixture(params=["fake", "firestore"])
def stores(request: pytest.FixtureRequest) -> Iterator[Stores]:
    if request.param == "fake":
        times = UpdateTimes()
        clock = FakeClock()
        clock.moment = datetime.now(UTC)
        tallies = FakeTallies()
        fake_requests = FakeRequests(times, tallies)
        fake_deliveries = FakeDeliveries(times)
        fake_requests.deliveries = fake_deliveries
        images = FakeImages(clock, times, tallies)
        yield Stores(fake_requests, images, fake_deliveries, FakeUploadKeys(times))
        return
    db = request.getfixturevalue("db")
    clock = SystemClock()
    yield Stores(
        FirestoreRequests(db, clock),
        FirestoreImages(db, clock),
        FirestoreDeliveries(db),
        FirestoreUploadKeys(db),
    )


def new_request(
    stores: Stores, total: int, *, sweep_at: datetime | None = None, webhook: bool = True
) -> str:
    request_id = new_request_id()
    now = datetime.now(UTC)
    stores.requests.create(
        RequestRecord(
            request_id=request_id,
            status=RequestStatus.IN_PROGRESS,
            total_images=total,
            total_rows=total,
            input_path=f"uploads/{request_id}/input.csv",
            created_at=now,
            updated_at=now,
            webhook_url="http://127.0.0.1:9/hook" if webhook else None,
            sweep_at=sweep_at,
            tally_shards=shard_count(total),
        )
    )
    return request_id


def jobs(request_id: str, count: int) -> list[ImageJob]:
    """The images of a request of `count` images, one a row, each in its tally."""
    shards = shard_count(count)
    return [
        ImageJob(request_id, image_id(i, 0), i, 0, str(i + 1), f"http://x/{i}", shard_of(i, shards))
        for i in range(count)
    ]


def tally_of(stores: Stores, request_id: str) -> Tally:
    """The request's counts, read as the use cases read them: its own number of tallies."""
    record = stores.requests.get(request_id)
    assert record is not None
    return stores.images.tally(request_id, record.tally_shards)


def read(stores: Stores, request_id: str, image: str) -> Any:
    record = stores.images.get(request_id, image)
    assert record is not None
    return record


def begin(stores: Stores, request_id: str, image: str) -> Attempt:
    attempt = stores.images.begin_attempt(read(stores, request_id, image), count_now=False)
    assert attempt is not None
    return attempt


def done(
    stores: Stores, attempt: Attempt, request_id: str, image: str, url: str = "u"
) -> Recorded | None:
    return stores.images.record_done(
        attempt, request_id, image, output_url=url, output_path="p", image=JPEG, source_bytes=1
    )


def settle(stores: Stores, request_id: str, holder: str | None = None) -> bool:
    delivery = WebhookDelivery(
        request_id, f"msg_{request_id}", "http://127.0.0.1:9/hook",
        {"request_id": request_id, "status": "completed"}, DeliveryState.PENDING,
    )  # fmt: skip
    return stores.requests.settle(
        request_id,
        holder=holder,
        completed=True,
        csv_url="http://csv",
        output_path="outputs/x.csv",
        progress=Progress(1, 1, 0),
        delivery=delivery,
        sweep_at=None,
    )


JPEG = CompressedImage(b"x" * 10, "jpeg", "image/jpeg", "jpg", 4, 3, "png", 100, 50)


# ---- requests ---------------------------------------------------------------------------


def test_request_round_trips(stores: Stores) -> None:
    request_id = new_request(stores, 3)
    record = stores.requests.get(request_id)
    assert record is not None
    assert (record.status, record.total_images, record.webhook_url) == (
        RequestStatus.IN_PROGRESS,
        3,
        "http://127.0.0.1:9/hook",
    )
    assert stores.requests.get(new_request_id()) is None


def test_settling_happens_once_however_many_racers(stores: Stores) -> None:
    request_id = new_request(stores, 1)
    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(lambda _: settle(stores, request_id), range(6)))
    assert outcomes.count(True) == 1
    record = stores.requests.get(request_id)
    assert record is not None and record.status is RequestStatus.COMPLETED
    assert record.final_progress == Progress(1, 1, 0)
    stored = stores.deliveries.get(request_id)
    assert stored is not None and stored.state is DeliveryState.PENDING


def test_a_render_claim_is_conditional_on_the_request_as_read(stores: Stores) -> None:
    request_id = new_request(stores, 1)
    record = stores.requests.get(request_id)
    assert record is not None
    until = datetime.now(UTC) + timedelta(minutes=5)
    first = stores.requests.claim_render(record, holder="one", until=until)
    assert first is not None and first.render_holder == "one"
    # A racer that read the request before the first claim loses.
    assert stores.requests.claim_render(record, holder="two", until=until) is None
    # Settling needs the claim: the loser cannot, the holder can, once.
    assert settle(stores, request_id, holder="two") is False
    assert settle(stores, request_id, holder="one") is True
    assert settle(stores, request_id, holder="one") is False


def test_a_settle_survives_an_unrelated_write_by_the_sweeper(stores: Stores) -> None:
    request_id = new_request(stores, 1)
    record = stores.requests.get(request_id)
    assert record is not None
    claimed = stores.requests.claim_render(
        record, holder="me", until=datetime.now(UTC) + timedelta(minutes=5)
    )
    assert claimed is not None
    assert stores.requests.reschedule_sweep(claimed, sweep_at=datetime.now(UTC), sweeps=1)
    assert settle(stores, request_id, holder="me") is True


def test_rescheduling_a_sweep_is_conditional_on_the_request_as_read(stores: Stores) -> None:
    request_id = new_request(stores, 1)
    record = stores.requests.get(request_id)
    assert record is not None
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert stores.requests.reschedule_sweep(record, sweep_at=later, sweeps=1) is True
    assert stores.requests.reschedule_sweep(record, sweep_at=None, sweeps=2) is False
    again = stores.requests.get(request_id)
    assert again is not None and again.sweeps == 1 and again.sweep_at is not None


def test_due_requests_come_by_due_time_a_page_at_a_time_and_none_without_one(
    stores: Stores,
) -> None:
    now = datetime.now(UTC)
    # Far in the past, so no other test's requests (same emulator) come before these.
    base = now - timedelta(days=3650 + 7)
    due = [new_request(stores, 1, sweep_at=base + timedelta(seconds=i % 4)) for i in range(9)]
    new_request(stores, 1, sweep_at=None)
    new_request(stores, 1, sweep_at=now + timedelta(hours=1))
    seen: list[RequestRecord] = []
    after = None
    while True:
        page = stores.requests.due_for_sweep(base + timedelta(seconds=10), after=after, limit=4)
        seen += page
        if len(page) < 4:
            break
        after = page[-1]
    mine = [r for r in seen if r.request_id in due]
    assert len(mine) == 9
    assert [(r.sweep_at, r.request_id) for r in mine] == sorted(
        (r.sweep_at, r.request_id)
        for r in mine  # type: ignore[misc]
    )


# ---- images -----------------------------------------------------------------------------


def test_images_are_created_in_batches_of_500_and_only_once(stores: Stores) -> None:
    request_id = new_request(stores, 1200)
    all_jobs = jobs(request_id, 1200)
    first = stores.images.create_missing(all_jobs)
    assert len(first) == 1200 and all(r.state is ImageState.PENDING for r in first)
    assert stores.images.count(request_id) == 1200
    done(stores, begin(stores, request_id, all_jobs[0].image_id), request_id, all_jobs[0].image_id)
    again = stores.images.create_missing(all_jobs)
    assert again[0].state is ImageState.DONE  # a second materialisation keeps results
    assert stores.images.count(request_id) == 1200


def test_a_slice_partly_materialised_gets_the_rest_and_keeps_what_exists(stores: Stores) -> None:
    request_id = new_request(stores, 600)
    all_jobs = jobs(request_id, 600)
    stores.images.create_missing(all_jobs[100:300])
    first = all_jobs[150].image_id
    done(stores, begin(stores, request_id, first), request_id, first)
    records = stores.images.create_missing(all_jobs)
    assert [r.image_id for r in records] == [job.image_id for job in all_jobs]
    assert [r.state for r in records].count(ImageState.DONE) == 1
    assert records[150].state is ImageState.DONE
    assert stores.images.count(request_id) == 600


def test_concurrent_materialisations_of_one_slice_agree(stores: Stores) -> None:
    request_id = new_request(stores, 300)
    slice_jobs = jobs(request_id, 300)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: stores.images.create_missing(slice_jobs), range(4)))
    assert all(len(r) == 300 for r in results)
    assert stores.images.count(request_id) == 300


def test_progress_is_counted_in_the_tallies_once_per_settled_image(stores: Stores) -> None:
    request_id = new_request(stores, 300)  # more images than tallies: some count three
    all_jobs = jobs(request_id, 300)
    stores.images.create_missing(all_jobs)
    assert stores.images.has_unsettled(request_id)
    assert tally_of(stores, request_id) == Tally(unsettled_shards=shard_count(300))
    before = datetime.now(UTC) - timedelta(minutes=1)
    settled: list[Any] = []
    for job in all_jobs[:-1]:
        attempt = begin(stores, request_id, job.image_id)
        if job.row % 10 == 0:
            settled.append(
                stores.images.record_failed(
                    attempt, request_id, job.image_id, code="t", message="x"
                )
            )
        else:
            settled.append(done(stores, attempt, request_id, job.image_id))
    # A duplicate's outcome is not recorded, so not counted either.
    stale = Attempt(1, None, all_jobs[0].shard)
    assert (
        stores.images.record_failed(stale, request_id, all_jobs[0].image_id, code="t", message="x")
        is None
    )
    tally = tally_of(stores, request_id)
    assert (tally.done, tally.failed) == (269, 30)
    assert (tally.source_bytes, tally.output_bytes) == (269, 269 * len(JPEG.data))
    assert tally.unsettled_shards == 1 and stores.images.has_unsettled(request_id)
    assert tally.updated_at is not None and tally.updated_at > before
    # Each write said whether it settled its tally's last image: once per tally.
    assert sum(r.shard_settled for r in settled) == shard_count(300) - 1
    last = all_jobs[-1]
    final = done(stores, begin(stores, request_id, last.image_id), request_id, last.image_id)
    assert final is not None and final.shard_settled and final.shard == last.shard
    assert not stores.images.has_unsettled(request_id)
    assert tally_of(stores, request_id).progress(300) == Progress(300, 270, 30)


def test_a_duplicate_attempt_never_overwrites_a_recorded_result(stores: Stores) -> None:
    request_id = new_request(stores, 1)
    (job,) = jobs(request_id, 1)
    stores.images.create_missing([job])
    first = begin(stores, request_id, job.image_id)
    second = begin(stores, request_id, job.image_id)  # a duplicated task, concurrently
    assert done(stores, second, request_id, job.image_id, url="u2") is not None
    late = stores.images.record_failed(first, request_id, job.image_id, code="t", message="late")
    assert late is None
    record = read(stores, request_id, job.image_id)
    assert (record.state, record.output_url, record.attempts) == (ImageState.DONE, "u2", 1)


def test_counting_an_attempt_first_is_conditional_on_the_image_as_read(stores: Stores) -> None:
    request_id = new_request(stores, 1)
    (job,) = jobs(request_id, 1)
    stores.images.create_missing([job])
    stale = read(stores, request_id, job.image_id)
    done(stores, begin(stores, request_id, job.image_id), request_id, job.image_id)
    # A redelivered copy that read the image before the other copy's outcome: refused.
    assert stores.images.begin_attempt(stale, count_now=True) is None
    assert read(stores, request_id, job.image_id).state is ImageState.DONE


def test_a_redelivered_task_counts_its_attempt_before_working(stores: Stores) -> None:
    request_id = new_request(stores, 1)
    (job,) = jobs(request_id, 1)
    stores.images.create_missing([job])
    for expected in (1, 2, 3):  # the worker dies every time, before any outcome
        attempt = stores.images.begin_attempt(
            read(stores, request_id, job.image_id), count_now=True
        )
        assert attempt is not None and attempt.number == expected
    record = read(stores, request_id, job.image_id)
    assert record.attempts == 3 and record.state is ImageState.PENDING


def test_a_retry_keeps_the_image_pending_with_its_last_error(stores: Stores) -> None:
    request_id = new_request(stores, 1)
    (job,) = jobs(request_id, 1)
    stores.images.create_missing([job])
    attempt = begin(stores, request_id, job.image_id)
    retry_at = datetime.now(UTC) + timedelta(seconds=30)
    assert stores.images.record_retry(
        attempt, request_id, job.image_id, code="timeout", message="slow host", retry_at=retry_at
    )
    record = read(stores, request_id, job.image_id)
    assert (record.state, record.attempts, record.error_code) == (
        ImageState.PENDING,
        1,
        "timeout",
    )
    assert record.retry_at is not None
    assert abs((record.retry_at - retry_at).total_seconds()) < 0.01
    assert begin(stores, request_id, job.image_id).number == 2


def test_a_late_retry_note_never_reopens_a_finished_image(stores: Stores) -> None:
    request_id = new_request(stores, 1)
    (job,) = jobs(request_id, 1)
    stores.images.create_missing([job])
    slow = begin(stores, request_id, job.image_id)
    done(stores, begin(stores, request_id, job.image_id), request_id, job.image_id)
    assert not stores.images.record_retry(
        slow, request_id, job.image_id, code="t", message="m", retry_at=datetime.now(UTC)
    )
    record = read(stores, request_id, job.image_id)
    assert record.state is ImageState.DONE and record.error_code is None


def test_pages_and_pending_ones_follow_input_order(stores: Stores) -> None:
    request_id = new_request(stores, 25)
    stores.images.create_missing(list(reversed(jobs(request_id, 25))))
    first = stores.images.page(request_id, after=None, limit=10)
    second = stores.images.page(request_id, after=first[-1].image_id, limit=10)
    assert [r.row for r in first + second] == list(range(20))
    done(stores, begin(stores, request_id, image_id(3, 0)), request_id, image_id(3, 0))
    pending = stores.images.pending(request_id, after=image_id(1, 0), limit=3)
    assert [r.row for r in pending] == [2, 4, 5]


def test_images_read_by_id_come_in_the_order_asked_without_the_missing_ones(
    stores: Stores,
) -> None:
    request_id = new_request(stores, 1200)
    # More than one call's worth (the adapter asks for 500 at a time), some never created.
    made = [job for job in jobs(request_id, 1200) if job.row % 7]
    stores.images.create_missing(made)
    asked = [image_id(row, 0) for row in reversed(range(1200))]
    found = stores.images.get_many(request_id, asked)
    assert [r.image_id for r in found] == [i for i in asked if int(i[:7]) % 7]
    assert {r.input_url for r in found} == {job.url for job in made}
    assert stores.images.get_many(request_id, []) == []


# ---- webhook deliveries ------------------------------------------------------------------


def test_one_claim_per_attempt_and_attempts_are_recorded(stores: Stores) -> None:
    request_id = new_request(stores, 1)
    settle(stores, request_id)
    now = datetime.now(UTC)
    delivery = stores.deliveries.get(request_id)
    assert delivery is not None
    with ThreadPoolExecutor(5) as pool:
        claims = list(
            pool.map(
                lambda _: stores.deliveries.claim(delivery, now=now, lease_seconds=60), range(5)
            )
        )
    winners = [c for c in claims if c is not None]
    assert len(winners) == 1
    attempt = DeliveryAttempt(1, now, now, 500, None, False)
    # Only the claim's holder records, once.
    assert (
        stores.deliveries.record_attempt(
            delivery, attempt, state=DeliveryState.PENDING, next_attempt_at=now
        )
        is False
    )
    assert stores.deliveries.record_attempt(
        winners[0], attempt, state=DeliveryState.PENDING,
        next_attempt_at=now + timedelta(seconds=5),
    ) is True  # fmt: skip
    stored = stores.deliveries.get(request_id)
    assert stored is not None
    assert [dataclasses.astuple(a)[0] for a in stored.attempts] == [1]
    assert stored.attempts[0].status_code == 500
    assert stored.claimed_until is None and stored.next_attempt_at is not None
    assert stored.due_at() == stored.next_attempt_at


# ---- upload idempotency keys ---------------------------------------------------------------


def a_key() -> UploadKey:
    now = datetime.now(UTC)
    return UploadKey(
        key_id=new_request_id() + new_request_id(),
        fingerprint="f",
        request_id=new_request_id(),
        state="processing",
        lease_until=now + timedelta(seconds=60),
        expires_at=now + timedelta(days=1),
    )


def test_a_key_is_reserved_once_and_read_back(stores: Stores) -> None:
    key = a_key()
    held = stores.upload_keys.reserve(key)
    assert held is not None
    assert stores.upload_keys.reserve(key) is None
    stored = stores.upload_keys.get(key.key_id)
    assert stored is not None and stored == key  # versions aside


def test_a_key_is_replaced_or_released_only_as_read(stores: Stores) -> None:
    held = stores.upload_keys.reserve(a_key())
    assert held is not None
    done = stores.upload_keys.replace(
        held, dataclasses.replace(held, state="done", total_rows=1, total_images=2)
    )
    assert done is not None
    assert stores.upload_keys.replace(held, dataclasses.replace(held, state="x")) is None
    stores.upload_keys.release(held)  # stale: must not forget the done key
    stored = stores.upload_keys.get(held.key_id)
    assert stored is not None and (stored.state, stored.total_images) == ("done", 2)
    stores.upload_keys.release(done)
    assert stores.upload_keys.get(held.key_id) is None


# ---- repeated images ---------------------------------------------------------------------------


def test_an_output_is_remembered_by_its_content_and_copied_to_another_slot(
    stores: Stores,
) -> None:
    request_id = new_request(stores, 2)
    first_job, second_job = jobs(request_id, 2)
    stores.images.create_missing([first_job, second_job])
    key = "ab" * 32
    attempt = begin(stores, request_id, first_job.image_id)
    assert isinstance(
        stores.images.record_done(
            attempt, request_id, first_job.image_id, output_url="u", output_path="p",
            image=JPEG, source_bytes=7, content_key=key,
        ),
        Recorded,
    )  # fmt: skip
    found = stores.images.record_done(
        begin(stores, request_id, second_job.image_id), request_id, second_job.image_id,
        output_url="u2", output_path="p2", image=JPEG, source_bytes=7, content_key=key,
    )  # fmt: skip
    assert isinstance(found, StoredElsewhere)
    known = found.output
    assert (known.output_url, known.output_path) == ("u", "p")
    assert (known.source_bytes, known.output_bytes) == (7, len(JPEG.data))
    # Each request owns its outputs: the same bytes in another request are recorded there.
    other = new_request(stores, 1)
    (other_job,) = jobs(other, 1)
    stores.images.create_missing([other_job])
    assert isinstance(
        stores.images.record_done(
            begin(stores, other, other_job.image_id), other, other_job.image_id,
            output_url="v", output_path="q", image=JPEG, source_bytes=7, content_key=key,
        ),
        Recorded,
    )  # fmt: skip
    copied = stores.images.record_copy(
        begin(stores, request_id, second_job.image_id), request_id, second_job.image_id,
        output=known,
    )  # fmt: skip
    assert copied is not None
    second = read(stores, request_id, second_job.image_id)
    assert (second.state, second.output_url, second.source_bytes) == (ImageState.DONE, "u", 7)
    tally = tally_of(stores, request_id)
    assert (tally.done, tally.source_bytes, tally.unsettled_shards) == (2, 14, 0)
    # A copy onto a slot that has its outcome already is dropped, as any stale write.
    again = stores.images.record_copy(
        Attempt(1, None, second_job.shard), request_id, second_job.image_id, output=known
    )
    assert again is None and tally_of(stores, request_id).done == 2


def test_recording_bytes_another_slot_recorded_first_writes_nothing_and_names_its_output(
    stores: Stores,
) -> None:
    # Two slots compressed the same bytes at the same moment: the second to record finds the
    # bytes' record in its commit, which then writes nothing at all (no outcome, no count).
    request_id = new_request(stores, 3)
    first_job, second_job, third_job = jobs(request_id, 3)
    stores.images.create_missing([first_job, second_job, third_job])
    key = "cd" * 32
    late = begin(stores, request_id, second_job.image_id)
    recorded = stores.images.record_done(
        begin(stores, request_id, first_job.image_id), request_id, first_job.image_id,
        output_url="u1", output_path="p1", image=JPEG, source_bytes=7, content_key=key,
    )  # fmt: skip
    assert isinstance(recorded, Recorded)
    found = stores.images.record_done(
        late, request_id, second_job.image_id, output_url="u2", output_path="p2", image=JPEG,
        source_bytes=7, content_key=key,
    )  # fmt: skip
    assert isinstance(found, StoredElsewhere)
    assert (found.output.output_url, found.output.output_path) == ("u1", "p1")
    assert read(stores, request_id, second_job.image_id).state is ImageState.PENDING
    assert tally_of(stores, request_id).done == 1
    again = stores.images.record_done(
        begin(stores, request_id, second_job.image_id), request_id, second_job.image_id,
        output_url="u2", output_path="p2", image=JPEG, source_bytes=7, content_key=key,
    )  # fmt: skip
    assert isinstance(again, StoredElsewhere) and again.output.output_path == "p1"  # it stands
    # The same, on a slot whose outcome another copy recorded meanwhile: that outcome stands.
    third = begin(stores, request_id, third_job.image_id)
    failed = stores.images.record_failed(
        begin(stores, request_id, third_job.image_id), request_id, third_job.image_id,
        code="x", message="m",
    )  # fmt: skip
    assert failed is not None
    stale = stores.images.record_done(
        third, request_id, third_job.image_id, output_url="u3", output_path="p3", image=JPEG,
        source_bytes=7, content_key=key,
    )  # fmt: skip
    assert stale is None
    assert read(stores, request_id, third_job.image_id).state is ImageState.FAILED


def test_a_repeat_remembers_which_slot_it_repeats_and_the_first_slot_its_repeats(
    stores: Stores,
) -> None:
    request_id = new_request(stores, 2)
    first_job, second_job = jobs(request_id, 2)
    first_job = first_job._replace(followers=(second_job.image_id,))
    repeat = second_job._replace(same_as=first_job.image_id)
    stores.images.create_missing([first_job, repeat])
    assert read(stores, request_id, repeat.image_id).same_as == first_job.image_id
    assert read(stores, request_id, repeat.image_id).followers == ()
    assert read(stores, request_id, first_job.image_id).same_as is None
    assert read(stores, request_id, first_job.image_id).followers == (repeat.image_id,)
