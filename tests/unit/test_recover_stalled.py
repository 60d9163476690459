"""Stalled requests are taken up again, and only stalled ones."""

from __future__ import annotations

from shared.domain.model import RequestStatus
from shared.usecases.accept_upload import accept_upload
from shared.usecases.fan_out import materialize_slice
from shared.usecases.process_image import process_image
from shared.usecases.recover_stalled import recover_stalled
from tests.fakes import run_queue
from tests.unit.test_use_cases import CSV, world


def test_a_request_that_is_progressing_is_left_alone() -> None:
    w = world()
    accept_upload(w.services, CSV)
    materialize_slice(w.services, w.queue.slices.pop(0))
    w.queue.images.clear()  # the messages are lost...
    w.clock.advance(30)  # ...but it has not been long
    assert recover_stalled(w.services, stalled_after=60) == []
    assert not w.queue.images


def test_lost_image_tasks_are_queued_again_and_the_request_completes() -> None:
    w = world()
    request_id = accept_upload(w.services, CSV).request_id
    materialize_slice(w.services, w.queue.slices.pop(0))
    first = w.queue.images.pop(0)
    process_image(w.services, *first)
    w.queue.images.clear()  # the other three messages vanish with a crashed broker
    w.clock.advance(61)
    assert recover_stalled(w.services, stalled_after=60) == [request_id]
    assert sorted(i for _, i in w.queue.images) == ["0000000-01", "0000000-02", "0000001-00"]
    run_queue(w)
    record = w.requests.get(request_id)
    assert record is not None and record.status is RequestStatus.COMPLETED


def test_a_lost_slice_is_materialised_again_from_the_stored_csv() -> None:
    w = world()
    request_id = accept_upload(w.services, CSV).request_id
    w.queue.slices.clear()  # the fan-out message is lost
    w.clock.advance(61)
    assert recover_stalled(w.services, stalled_after=60) == [request_id]
    run_queue(w)
    record = w.requests.get(request_id)
    assert record is not None and record.status is RequestStatus.COMPLETED
    assert record.final_progress is not None and record.final_progress.done == 4


def test_a_lost_final_event_still_finalises_the_request() -> None:
    w = world()
    request_id = accept_upload(w.services, CSV).request_id
    materialize_slice(w.services, w.queue.slices.pop(0))
    for image in list(w.queue.images):
        process_image(w.services, *image)
    w.queue.images.clear()
    w.queue.settled.clear()  # every "image settled" event is lost
    w.clock.advance(61)
    recover_stalled(w.services, stalled_after=60)
    record = w.requests.get(request_id)
    assert record is not None and record.status is RequestStatus.COMPLETED


def test_settled_requests_are_never_touched() -> None:
    w = world()
    accept_upload(w.services, CSV)
    run_queue(w)
    w.clock.advance(3600)
    assert recover_stalled(w.services, stalled_after=60) == []
