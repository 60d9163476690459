"""The sweeper: what a lost message would have done is found again from the store."""

from __future__ import annotations

import contextlib
from datetime import timedelta

import pytest

from shared.domain.errors import ErrorCode, ImageFailure, RetryLater
from shared.domain.messages import MalformedMessage, ProcessImage, Sweep, from_payload, to_payload
from shared.domain.model import DeliveryState, ImageState, RequestStatus
from shared.entrypoints.tasks import handle
from shared.usecases.accept_upload import accept_upload
from shared.usecases.deliver_webhook import deliver_webhook
from shared.usecases.fan_out import materialize_slice
from shared.usecases.finalize_request import complete_request
from shared.usecases.process_image import process_image
from shared.usecases.sweep import PAGE, sweep
from tests.fakes import FakeWorld, run_queue
from tests.unit.test_use_cases import CSV, world

STALL = 60.0


def swept_world() -> FakeWorld:
    return world(stall_after=STALL, sweep_grace=30.0)


def status_of(w: FakeWorld, request_id: str) -> RequestStatus:
    record = w.requests.get(request_id)
    assert record is not None
    return record.status


def test_a_request_that_is_progressing_is_left_alone() -> None:
    w = swept_world()
    accept_upload(w.services, CSV)
    materialize_slice(w.services, w.queue.slices.pop(0))
    w.queue.images.clear()  # the messages are lost...
    w.clock.advance(30)  # ...but it has not been long
    report = sweep(w.services)
    assert report.looked_at == 0 and report.redriven == []
    assert not w.queue.images


def test_lost_image_tasks_are_queued_again_counted_first_and_the_request_completes() -> None:
    w = swept_world()
    request_id = accept_upload(w.services, CSV).request_id
    materialize_slice(w.services, w.queue.slices.pop(0))
    first = w.queue.images.pop(0)
    process_image(w.services, *first)
    w.queue.images.clear()  # the other three messages vanish with a crashed broker
    w.clock.advance(STALL + 1)
    assert sweep(w.services).redriven == [request_id]
    requeued = [m for m, _ in w.queue.sent if isinstance(m, ProcessImage)][-3:]
    assert sorted(m.image_id for m in requeued) == ["0000000-01", "0000000-02", "0000001-00"]
    # A re-driven image may follow an attempt its worker died in: it is counted first.
    assert {m.round for m in requeued} == {1}
    run_queue(w)
    assert status_of(w, request_id) is RequestStatus.COMPLETED


def test_a_lost_slice_is_materialised_again_from_the_stored_csv() -> None:
    w = swept_world()
    request_id = accept_upload(w.services, CSV).request_id
    w.queue.slices.clear()  # the fan-out message is lost
    w.clock.advance(STALL + 1)
    assert sweep(w.services).redriven == [request_id]
    run_queue(w)
    record = w.requests.get(request_id)
    assert record is not None and record.status is RequestStatus.COMPLETED
    assert record.final_progress is not None and record.final_progress.done == 4


def test_a_lost_final_event_still_finalises_the_request() -> None:
    w = swept_world()
    request_id = accept_upload(w.services, CSV).request_id
    materialize_slice(w.services, w.queue.slices.pop(0))
    for image in list(w.queue.images):
        process_image(w.services, *image)
    w.queue.images.clear()
    w.queue.settled.clear()  # every "image settled" event is lost
    w.clock.advance(STALL + 1)
    sweep(w.services)
    assert status_of(w, request_id) is RequestStatus.COMPLETED


def test_an_image_whose_retry_is_still_ahead_is_not_queued_again() -> None:
    w = swept_world()
    w.fetcher.answers["https://img.test/a.jpg"] = ImageFailure(
        ErrorCode.UPSTREAM_ERROR, "503", transient=True, retry_after=250
    )
    request_id = accept_upload(w.services, CSV).request_id
    materialize_slice(w.services, w.queue.slices.pop(0))
    for image in list(w.queue.images):
        with contextlib.suppress(RetryLater):  # a.jpg: its retry message is then lost
            process_image(w.services, *image)
    w.queue.images.clear()
    w.queue.settled.clear()
    w.clock.advance(STALL + 1)  # stalled, but a.jpg's retry is 250 s away
    assert sweep(w.services).redriven == [request_id]
    assert not [m for m, _ in w.queue.sent if isinstance(m, ProcessImage) and m.round]
    w.clock.advance(250)  # the retry's time passed and nothing came: the hint was lost
    sweep(w.services)
    again = [m for m, _ in w.queue.sent if isinstance(m, ProcessImage) and m.round]
    assert [m.image_id for m in again] == ["0000000-00"]


def test_each_re_drive_of_a_request_waits_twice_as_long_before_the_next() -> None:
    w = swept_world()
    request_id = accept_upload(w.services, CSV).request_id
    w.fetcher.answers.clear()
    moments = []
    for _ in range(4):
        w.queue.slices.clear()  # every re-drive is lost too
        w.clock.advance(STALL * 64)
        report = sweep(w.services)
        assert report.redriven == [request_id]
        record = w.requests.get(request_id)
        assert record is not None and record.sweep_at is not None
        moments.append((record.sweep_at - w.clock.now()).total_seconds())
    assert moments == [STALL, STALL * 2, STALL * 4, STALL * 8]


def test_every_due_request_is_looked_at_however_many_there_are() -> None:
    w = swept_world()
    ids = [accept_upload(w.services, CSV).request_id for _ in range(2 * PAGE + 50)]
    w.queue.slices.clear()  # every fan-out message is lost
    w.clock.advance(STALL + 1)
    report = sweep(w.services)
    assert report.looked_at == len(ids)
    assert sorted(report.redriven) == sorted(ids)
    run_queue(w)
    assert {status_of(w, i) for i in ids} == {RequestStatus.COMPLETED}


def test_an_idle_sweep_reads_nothing_however_many_requests_have_finished() -> None:
    w = swept_world()
    for _ in range(30):
        accept_upload(w.services, CSV, webhook_url="https://hooks.test/x")
    run_queue(w)
    while w.queue.webhooks:
        deliver_webhook(w.services, w.queue.webhooks.pop(0)[0])
    w.clock.advance(3600)
    sweep(w.services)  # the last look at each: delivered, nothing left to watch
    assert not any(r.sweep_at for r in w.requests.records.values())
    assert sweep(w.services).looked_at == 0


def test_a_lost_webhook_retry_is_found_and_the_webhook_delivered() -> None:
    w = swept_world()
    request_id = accept_upload(w.services, CSV, webhook_url="https://hooks.test/x").request_id
    run_queue(w)
    w.webhooks.statuses = [503]
    w.queue.webhooks.clear()
    assert deliver_webhook(w.services, request_id) is DeliveryState.PENDING
    w.queue.webhooks.clear()  # Redis restarts empty: the scheduled retry is gone
    w.clock.advance(5 + 30 + 1)  # the retry's time, plus the grace for a late hint
    assert sweep(w.services).webhooks_requeued == [request_id]
    (queued,) = w.queue.webhooks
    assert deliver_webhook(w.services, queued[0]) is DeliveryState.DELIVERED
    assert [a.status_code for a in w.deliveries.items[request_id].attempts] == [503, 200]


def test_a_webhook_whose_first_message_was_lost_is_still_delivered() -> None:
    w = swept_world()
    request_id = accept_upload(w.services, CSV, webhook_url="https://hooks.test/x").request_id
    run_queue(w)
    w.queue.webhooks.clear()  # the finaliser died right after settling
    w.clock.advance(31)
    assert sweep(w.services).webhooks_requeued == [request_id]
    assert deliver_webhook(w.services, request_id) is DeliveryState.DELIVERED


def test_a_webhook_attempt_whose_process_died_is_made_again_after_its_claim() -> None:
    w = swept_world()
    request_id = accept_upload(w.services, CSV, webhook_url="https://hooks.test/x").request_id
    run_queue(w)
    delivery = w.deliveries.get(request_id)
    assert delivery is not None
    # A process claims the attempt and dies before recording anything.
    assert w.deliveries.claim(delivery, now=w.clock.now(), lease_seconds=40) is not None
    w.queue.webhooks.clear()
    w.clock.advance(40 + 30 + 1)
    assert sweep(w.services).webhooks_requeued == [request_id]
    assert deliver_webhook(w.services, request_id) is DeliveryState.DELIVERED
    assert len(w.webhooks.sent) == 1


def test_a_finaliser_that_died_holding_the_render_is_taken_over_after_its_lease() -> None:
    w = swept_world()
    request_id = accept_upload(w.services, CSV).request_id
    materialize_slice(w.services, w.queue.slices.pop(0))
    for image in list(w.queue.images):
        process_image(w.services, *image)
    w.queue.images.clear()
    w.queue.settled.clear()
    record = w.requests.get(request_id)
    assert record is not None
    # A finaliser claims the render and dies.
    until = w.clock.now() + timedelta(seconds=300)
    assert w.requests.claim_render(record, holder="dead", until=until) is not None
    w.clock.advance(STALL + 1)
    sweep(w.services)
    assert status_of(w, request_id) is RequestStatus.IN_PROGRESS  # the claim is still live
    w.clock.advance(300)
    sweep(w.services)
    assert status_of(w, request_id) is RequestStatus.COMPLETED


def test_a_render_claimed_by_a_live_finaliser_is_not_rendered_twice() -> None:
    w = swept_world()
    request_id = accept_upload(w.services, CSV).request_id
    materialize_slice(w.services, w.queue.slices.pop(0))
    for image in list(w.queue.images):
        process_image(w.services, *image)
    record = w.requests.get(request_id)
    assert record is not None
    until = w.clock.now() + timedelta(seconds=300)
    assert w.requests.claim_render(record, holder="busy", until=until) is not None
    claimed = w.requests.get(request_id)
    assert claimed is not None
    assert complete_request(w.services, claimed) is False
    assert f"outputs/{request_id}/output.csv" not in w.blobs.outputs


def test_an_image_that_kills_its_worker_every_time_fails_for_good() -> None:
    w = swept_world()
    request_id = accept_upload(w.services, CSV).request_id
    materialize_slice(w.services, w.queue.slices.pop(0))
    image_id = "0000000-00"
    # Each redelivery counts its attempt before the work, then the worker dies in it.
    for _ in range(5):
        record = w.images.get(request_id, image_id)
        assert record is not None
        assert w.images.begin_attempt(record, count_now=True) is not None
    fetches = len(w.fetcher.calls)
    assert process_image(w.services, request_id, image_id, count_first=True) is ImageState.FAILED
    assert len(w.fetcher.calls) == fetches  # decided before any work
    record = w.images.get(request_id, image_id)
    assert record is not None and record.error_code == "worker_lost"
    assert record.error_message is not None
    assert "gave up after 5 attempts; the worker died while processing it" in record.error_message
    # Counted in its tally, once: the finaliser hears of it when its tally settles.
    request = w.requests.get(request_id)
    assert request is not None
    assert w.images.tally(request_id, request.tally_shards).failed == 1


def test_a_sweep_asked_to_be_followed_queues_one_plain_sweep_that_much_later() -> None:
    """Cloud Scheduler runs the job once a minute; its message asks for a second sweep half a
    minute later, and that one asks for nothing (no chain that could multiply)."""
    w = swept_world()
    sweep(w.services, again_in=30)
    assert [(m, delay) for m, delay in w.queue.sent if isinstance(m, Sweep)] == [(Sweep(), 30)]
    w.queue.sent.clear()
    handle(w.services, from_payload(to_payload(Sweep())))
    assert not [m for m, _ in w.queue.sent if isinstance(m, Sweep)]


def test_the_scheduler_body_is_read_and_a_wrong_again_in_is_refused() -> None:
    assert from_payload({"kind": "sweep", "again_in": 30}) == Sweep(again_in=30.0)
    assert from_payload({"kind": "sweep"}) == Sweep()
    for wrong in (-1, 86_400, "soon"):
        with pytest.raises(MalformedMessage):
            from_payload({"kind": "sweep", "again_in": wrong})
