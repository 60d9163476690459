"""The use cases over in-memory fakes: the rules of the pipeline, without I/O."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from shared.config import Limits, Settings
from shared.domain.blob_layout import output_image_path
from shared.domain.csv_table import CsvInvalid, parse_product_csv
from shared.domain.errors import ErrorCode, ImageFailure, RetryLater
from shared.domain.model import (
    DeliveryState,
    ImageSlice,
    ImageState,
    RequestStatus,
    new_request_id,
)
from shared.usecases.accept_upload import UploadRejected, accept_upload
from shared.usecases.deliver_webhook import deliver_webhook
from shared.usecases.fan_out import materialize_slice, plan_slices
from shared.usecases.finalize_request import on_shard_settled
from shared.usecases.process_image import process_image
from shared.usecases.report_status import UnknownRequest, report_status
from tests.fakes import FakeWorld, fake_world, run_queue

SECRET = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQ="
CSV = (
    b"Serial Number,Product Name,Input Image Urls\r\n"
    b'1,Chair,"https://img.test/a.jpg,https://img.test/b.jpg,https://img.test/c.jpg"\r\n'
    b"2,Desk,https://img.test/d.jpg\r\n"
)


def world(**overrides: object) -> FakeWorld:
    settings = Settings(webhook_secrets=(SECRET,), webhook_retry_schedule=(5, 60), **overrides)  # type: ignore[arg-type]
    w = fake_world(settings)
    for name in "abcd":
        w.fetcher.answers[f"https://img.test/{name}.jpg"] = name.encode()
    return w


def output_rows(w: FakeWorld, request_id: str) -> list[list[str]]:
    data, _ = w.blobs.outputs[f"outputs/{request_id}/output.csv"]
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))


# ---- accepting an upload ---------------------------------------------------------------


def test_upload_records_the_request_and_queues_every_image_in_order() -> None:
    w = world()
    accepted = accept_upload(w.services, CSV, webhook_url="https://hooks.test/x")
    record = w.requests.get(accepted.request_id)
    assert record is not None
    assert (record.status, record.total_images, record.total_rows) == (
        RequestStatus.IN_PROGRESS,
        4,
        2,
    )
    assert w.blobs.uploads[record.input_path] == CSV
    jobs = [job for s in w.queue.slices for job in s.jobs]
    assert [j.url for j in jobs] == [f"https://img.test/{n}.jpg" for n in "abcd"]
    assert [(j.row, j.position) for j in jobs] == [(0, 0), (0, 1), (0, 2), (1, 0)]


def test_invalid_csv_stores_and_queues_nothing() -> None:
    w = world()
    with pytest.raises(CsvInvalid):
        accept_upload(w.services, b"Serial Number,Product Name,Input Image Urls\r\n1,,\r\n")
    assert not w.blobs.uploads and not w.requests.records and not w.queue.slices


def test_webhook_url_to_a_blocked_address_is_refused_before_anything_is_stored() -> None:
    w = world()
    w.guard.blocked.add("http://169.254.169.254/hook")
    with pytest.raises(UploadRejected) as rejected:
        accept_upload(w.services, CSV, webhook_url="http://169.254.169.254/hook")
    assert rejected.value.code == "invalid_webhook_url"
    assert not w.blobs.uploads and not w.requests.records


def test_more_images_than_a_request_may_hold_are_refused_with_the_limit_and_the_count() -> None:
    w = world(limits=Limits(max_images_per_request=3))
    with pytest.raises(UploadRejected) as rejected:
        accept_upload(w.services, CSV)  # 4 images
    assert rejected.value.code == "too_many_images"
    assert "4 images" in rejected.value.message and "at most 3" in rejected.value.message
    assert not w.blobs.uploads and not w.requests.records and not w.queue.slices


def test_request_ids_are_unguessable_and_url_safe() -> None:
    w = world()
    ids = {accept_upload(w.services, CSV).request_id for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i) == 22 and all(c.isalnum() or c in "-_" for c in i) for i in ids)


def test_no_request_id_starts_with_a_dash_that_a_command_line_would_take_for_an_option() -> None:
    # One random id in 64 would: 10,000 draws miss every such one by chance once in 10^68.
    assert not [i for i in (new_request_id() for _ in range(10_000)) if i.startswith("-")]


def test_slices_hold_at_most_500_images_and_stay_small_with_long_urls() -> None:
    urls = [",".join(f"https://h.test/{i}/{n}.jpg" for n in range(3)) for i in range(400)]
    rows = "".join(f'{i},P{i},"{cell}"\r\n' for i, cell in enumerate(urls))

    table = parse_product_csv(
        b"Serial Number,Product Name,Input Image Urls\r\n" + rows.encode(), Settings().limits
    )
    slices = list(plan_slices("r" * 22, table))
    assert [len(s.jobs) for s in slices] == [500, 500, 200]
    long_rows = "".join(f"{i},P,https://h.test/{'x' * 2000}{i}.jpg\r\n" for i in range(300))
    table = parse_product_csv(
        b"Serial Number,Product Name,Input Image Urls\r\n" + long_rows.encode(), Settings().limits
    )
    slices = list(plan_slices("r" * 22, table))
    assert all(sum(len(j.url) for j in s.jobs) <= 256 * 1024 for s in slices)
    assert sum(len(s.jobs) for s in slices) == 300


# ---- processing images ------------------------------------------------------------------


def test_every_image_is_compressed_stored_and_recorded() -> None:
    w = world()
    request_id = accept_upload(w.services, CSV).request_id
    run_queue(w)
    image = w.images.get(request_id, "0000000-01")
    assert image is not None and image.state is ImageState.DONE
    assert image.output_url == f"https://storage.test/out/outputs/{request_id}/1-2.jpg"
    assert (image.source_quality, image.output_quality, image.source_bytes) == (90, 45, 1)
    assert w.blobs.outputs[f"outputs/{request_id}/1-2.jpg"][0] == b"jpeg:b"


def test_a_broken_image_fails_alone_and_the_request_still_completes() -> None:
    w = world()
    w.fetcher.answers["https://img.test/b.jpg"] = b"broken bytes"
    request_id = accept_upload(w.services, CSV).request_id
    run_queue(w)
    failed = w.images.get(request_id, "0000000-01")
    assert failed is not None and failed.state is ImageState.FAILED
    assert failed.error_code == ErrorCode.CORRUPT_IMAGE
    record = w.requests.get(request_id)
    assert record is not None and record.status is RequestStatus.COMPLETED
    assert record.final_progress is not None
    assert (record.final_progress.done, record.final_progress.failed) == (3, 1)


def test_transient_failures_are_retried_then_give_up_after_max_attempts() -> None:
    w = world(image_max_attempts=3)
    w.fetcher.answers["https://img.test/d.jpg"] = ImageFailure(
        ErrorCode.UPSTREAM_ERROR, "HTTP 503", transient=True
    )
    request_id = accept_upload(w.services, CSV).request_id
    run_queue(w)
    image = w.images.get(request_id, "0000001-00")
    assert image is not None and image.state is ImageState.FAILED
    assert image.attempts == 3
    assert image.error_code == "upstream_error"
    assert "gave up after 3 attempts" in (image.error_message or "")
    assert w.fetcher.calls.count("https://img.test/d.jpg") == 3


def test_a_transient_failure_that_recovers_ends_done() -> None:
    w = world()
    w.fetcher.answers["https://img.test/a.jpg"] = [
        ImageFailure(ErrorCode.TIMEOUT, "timed out", transient=True),
        b"a",
    ]
    request_id = accept_upload(w.services, CSV).request_id
    run_queue(w)
    image = w.images.get(request_id, "0000000-00")
    assert image is not None and image.state is ImageState.DONE and image.attempts == 2


def test_retry_delay_grows_and_honours_retry_after() -> None:
    w = world()
    w.fetcher.answers["https://img.test/a.jpg"] = ImageFailure(
        ErrorCode.UPSTREAM_ERROR, "429", transient=True, retry_after=42
    )
    request_id = accept_upload(w.services, CSV).request_id
    materialize_slice(w.services, w.queue.slices.pop(0))
    with pytest.raises(RetryLater) as later:
        process_image(w.services, request_id, "0000000-00")
    assert later.value.after_seconds == 42


def test_a_duplicated_image_task_does_not_fetch_again_but_repeats_the_event() -> None:
    w = world()
    request_id = accept_upload(w.services, CSV).request_id
    run_queue(w)
    calls = len(w.fetcher.calls)
    state = process_image(w.services, request_id, "0000000-00")
    assert state is ImageState.DONE
    assert len(w.fetcher.calls) == calls
    image = w.images.get(request_id, "0000000-00")
    assert image is not None and w.queue.settled == [(request_id, image.shard)]


def test_materialising_a_slice_twice_creates_nothing_twice_and_keeps_results() -> None:
    w = world()
    request_id = accept_upload(w.services, CSV).request_id
    image_slice = w.queue.slices[0]
    run_queue(w)
    materialize_slice(w.services, image_slice)
    assert w.images.count(request_id) == 4
    assert not w.queue.images  # every image is settled: nothing to process again
    image = w.images.get(request_id, "0000000-00")
    assert image is not None and image.state is ImageState.DONE


def test_output_paths_follow_serial_and_position_and_slug_unsafe_serials() -> None:
    w = world()
    request_id = accept_upload(
        w.services,
        b"Serial Number,Product Name,Input Image Urls\r\nA/1 x,Lamp,https://img.test/a.jpg\r\n",
    ).request_id
    materialize_slice(w.services, w.queue.slices.pop(0))
    image = w.images.get(request_id, "0000000-00")
    assert image is not None
    assert output_image_path(image, "jpg") == f"outputs/{request_id}/A_1_x~r1-1.jpg"


# ---- finalising ---------------------------------------------------------------------------


def test_output_csv_keeps_order_and_leaves_an_empty_slot_for_a_failed_image() -> None:
    w = world()
    w.fetcher.answers["https://img.test/b.jpg"] = b"broken"
    request_id = accept_upload(w.services, CSV).request_id
    run_queue(w)
    rows = output_rows(w, request_id)
    assert rows[0] == ["Serial Number", "Product Name", "Input Image Urls", "Output Image Urls"]
    base = f"https://storage.test/out/outputs/{request_id}"
    assert rows[1][3] == f"{base}/1-1.jpg,,{base}/1-3.jpg"
    assert rows[2][3] == f"{base}/2-1.jpg"


def test_a_request_larger_than_one_read_of_the_finaliser_has_every_slot_in_place() -> None:
    # 2,100 images in rows of 3: the finaliser reads about 1,000 at a time, never splitting
    # a row, so reads end at rows' boundaries that are not multiples of 1,000.
    w = world()
    rows = []
    for row in range(700):
        urls = [f"https://img.test/{row}/{n}.jpg" for n in range(3)]
        for n, url in enumerate(urls):
            broken = (row * 3 + n) % 7 == 0
            w.fetcher.answers[url] = b"broken" if broken else f"{row}-{n}".encode()
        rows.append(f'S{row},P{row},"{",".join(urls)}"\r\n')
    csv_bytes = b"Serial Number,Product Name,Input Image Urls\r\n" + "".join(rows).encode()
    request_id = accept_upload(w.services, csv_bytes).request_id
    run_queue(w)
    base = f"https://storage.test/out/outputs/{request_id}"
    table = output_rows(w, request_id)
    assert len(table) == 701
    for row, cells in enumerate(table[1:]):
        assert cells[0] == f"S{row}"
        assert cells[3].split(",") == [
            "" if (row * 3 + n) % 7 == 0 else f"{base}/S{row}-{n + 1}.jpg" for n in range(3)
        ]


def test_the_output_csv_is_streamed_row_by_row_to_storage() -> None:
    w = world()
    request_id = accept_upload(w.services, CSV).request_id
    run_queue(w)
    assert w.blobs.streamed == [f"outputs/{request_id}/output.csv"]


def test_a_csv_that_no_longer_parses_fails_the_request_even_mid_way() -> None:
    w = world()
    request_id = accept_upload(w.services, CSV).request_id
    record = w.requests.get(request_id)
    assert record is not None
    # The stored CSV changed behind our back: its second row now has no URL.
    w.blobs.uploads[record.input_path] = CSV.replace(b"2,Desk,https://img.test/d.jpg", b"2,Desk,")
    run_queue(w)
    failed = w.requests.get(request_id)
    assert failed is not None and failed.status is RequestStatus.FAILED
    assert failed.error_code == "input_unreadable"


def test_the_request_is_finalised_exactly_once_however_many_events_arrive() -> None:
    w = world()
    request_id = accept_upload(w.services, CSV, webhook_url="https://hooks.test/x").request_id
    run_queue(w)
    for _ in range(9):
        assert on_shard_settled(w.services, request_id) is False
    assert w.requests.transitions == 1
    assert len(w.blobs.outputs) == 5  # four images and one output CSV
    # Late events may queue the webhook task again (it could have been lost in a crash);
    # every copy runs, and exactly one message goes out.
    for queued_id, _ in w.queue.webhooks:
        deliver_webhook(w.services, queued_id)
    assert len(w.webhooks.sent) == 1


def test_not_finalised_while_images_are_still_to_be_materialised() -> None:
    w = world()
    request_id = accept_upload(w.services, CSV).request_id
    (only_slice,) = w.queue.slices
    # Pretend the first three images were all there was so far.
    materialize_slice(w.services, ImageSlice(request_id, 0, only_slice.jobs[:3]))
    w.queue.slices.clear()
    run_queue(w)
    record = w.requests.get(request_id)
    assert record is not None and record.status is RequestStatus.IN_PROGRESS
    materialize_slice(w.services, only_slice)
    run_queue(w)
    record = w.requests.get(request_id)
    assert record is not None and record.status is RequestStatus.COMPLETED


def test_a_request_whose_upload_vanished_fails_with_a_failed_webhook() -> None:
    w = world()
    request_id = accept_upload(w.services, CSV, webhook_url="https://hooks.test/x").request_id
    w.blobs.uploads.clear()
    run_queue(w)
    record = w.requests.get(request_id)
    assert record is not None and record.status is RequestStatus.FAILED
    assert record.error_code == "input_missing"
    delivery = w.deliveries.get(request_id)
    assert delivery is not None and delivery.payload == {
        "request_id": request_id,
        "status": "failed",
    }


# ---- webhook -----------------------------------------------------------------------------


def completed_with_webhook(w: FakeWorld) -> str:
    request_id = accept_upload(w.services, CSV, webhook_url="https://hooks.test/x").request_id
    run_queue(w)
    return request_id


def test_webhook_is_signed_per_standard_webhooks_and_verifies() -> None:
    w = world()
    # The receiver library refuses timestamps more than 5 minutes from its own clock.
    w.clock.moment = datetime.now(UTC)
    request_id = completed_with_webhook(w)
    assert deliver_webhook(w.services, request_id) is DeliveryState.DELIVERED
    url, body, headers = w.webhooks.sent[0]
    assert url == "https://hooks.test/x"
    assert Webhook(SECRET).verify(body, headers)["request_id"] == request_id


def test_failed_webhook_attempts_follow_the_schedule_then_give_up() -> None:
    w = world()
    request_id = completed_with_webhook(w)
    w.queue.webhooks.clear()
    w.webhooks.statuses = [500, None, 503]
    assert deliver_webhook(w.services, request_id) is DeliveryState.PENDING
    assert w.queue.webhooks == [(request_id, 5)]
    # Not due yet: a duplicate task sends nothing, and comes back when it is due.
    w.clock.advance(2)
    assert deliver_webhook(w.services, request_id) is DeliveryState.PENDING
    assert w.queue.webhooks == [(request_id, 5), (request_id, 3)]
    assert len(w.webhooks.sent) == 1
    w.clock.advance(3)
    assert deliver_webhook(w.services, request_id) is DeliveryState.PENDING
    assert w.queue.webhooks[-1] == (request_id, 60)
    w.clock.advance(60)
    assert deliver_webhook(w.services, request_id) is DeliveryState.GAVE_UP
    delivery = w.deliveries.get(request_id)
    assert delivery is not None
    assert [(a.number, a.status_code, a.succeeded) for a in delivery.attempts] == [
        (1, 500, False),
        (2, None, False),
        (3, 503, False),
    ]
    assert delivery.attempts[1].error == "connection refused"
    ids = {headers["webhook-id"] for _, _, headers in w.webhooks.sent}
    assert ids == {f"msg_{request_id}"}


def test_a_claimed_attempt_is_not_made_twice_by_a_duplicate_task() -> None:
    w = world()
    request_id = completed_with_webhook(w)
    delivery = w.deliveries.get(request_id)
    assert delivery is not None
    claimed = w.deliveries.claim(delivery, now=w.clock.now(), lease_seconds=40)
    assert claimed is not None
    w.queue.webhooks.clear()
    # Another process holds the attempt: this copy sends nothing, and comes back when the
    # claim runs out, instead of being finished for good.
    assert deliver_webhook(w.services, request_id) is DeliveryState.PENDING
    assert not w.webhooks.sent
    assert w.queue.webhooks == [(request_id, 40)]
    w.clock.advance(40)  # the claimant died: its lease ran out
    assert deliver_webhook(w.services, request_id) is DeliveryState.DELIVERED
    assert len(w.webhooks.sent) == 1


# ---- status --------------------------------------------------------------------------------


def test_status_counts_progress_and_pages_through_details() -> None:
    w = world()
    w.fetcher.answers["https://img.test/c.jpg"] = b"broken"
    request_id = accept_upload(w.services, CSV).request_id
    materialize_slice(w.services, w.queue.slices.pop(0))
    report = report_status(w.services, request_id)
    assert (report.progress.total, report.progress.done, report.progress.pending) == (4, 0, 4)
    run_queue(w)
    report = report_status(w.services, request_id, details=True, page_size=3)
    assert report.request.status is RequestStatus.COMPLETED
    assert (report.progress.done, report.progress.failed, report.progress.pending) == (3, 1, 0)
    assert report.details is not None
    assert [i.image_id for i in report.details.images] == ["0000000-00", "0000000-01", "0000000-02"]
    rest = report_status(
        w.services, request_id, details=True, after=report.details.next_after, page_size=3
    )
    assert rest.details is not None and [i.image_id for i in rest.details.images] == ["0000001-00"]
    assert rest.details.next_after is None


def test_status_of_someone_elses_request_is_unknown() -> None:
    w = world()
    request_id = accept_upload(w.services, CSV, owner="key-a").request_id
    assert report_status(w.services, request_id, owner="key-a").request.request_id == request_id
    with pytest.raises(UnknownRequest):
        report_status(w.services, request_id, owner="key-b")
    with pytest.raises(UnknownRequest):
        report_status(w.services, "x" * 22)


def test_webhook_payload_is_the_specs_shape() -> None:
    w = world()
    request_id = completed_with_webhook(w)
    deliver_webhook(w.services, request_id)
    _, body, _ = w.webhooks.sent[0]
    record = w.requests.get(request_id)
    assert record is not None
    assert json.loads(body) == {
        "request_id": request_id,
        "status": "completed",
        "csv_url": record.csv_url,
    }
