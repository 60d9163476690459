"""Races the pipeline must survive, placed where they hurt: at the port call in between.

Each test lets one copy of a task read, then makes the other thing happen at the next port call
the first copy makes (the fake's own methods are wrapped, the store stays honest), and checks
what a user would see.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from shared.domain.errors import ErrorCode, ImageFailure, RetryLater
from shared.domain.model import ImageState, RequestStatus
from shared.usecases.accept_upload import accept_upload
from shared.usecases.fan_out import materialize_slice
from shared.usecases.finalize_request import on_shard_settled
from shared.usecases.process_image import process_image
from tests.fakes import FakeWorld
from tests.unit.test_use_cases import CSV, world

IMAGE = "0000000-00"


def once_before(target: object, name: str, happening: Callable[[], None]) -> None:
    """Make `happening` happen once, just before the next call of `target.name`."""
    original = getattr(target, name)
    fired = False

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        nonlocal fired
        if not fired:
            fired = True
            happening()
        return original(*args, **kwargs)

    setattr(target, name, wrapped)


def one_request(w: FakeWorld) -> str:
    request_id = accept_upload(w.services, CSV).request_id
    materialize_slice(w.services, w.queue.slices.pop(0))
    return request_id


def test_a_redelivered_copy_never_overwrites_the_outcome_another_copy_recorded() -> None:
    w = world()
    w.fetcher.answers["https://img.test/a.jpg"] = [
        b"a",  # the first copy's fetch
        ImageFailure(ErrorCode.CORRUPT_IMAGE, "not what it was"),  # the stale copy's
    ]
    request_id = one_request(w)
    # The stale copy has read the image (pending) when the other copy records `done`.
    once_before(w.fetch_limiter, "acquire", lambda: process_image(w.services, request_id, IMAGE))
    state = process_image(w.services, request_id, IMAGE, count_first=True)
    record = w.images.get(request_id, IMAGE)
    assert record is not None
    assert record.state is ImageState.DONE and record.output_url
    assert state is ImageState.DONE
    assert w.fetcher.calls.count("https://img.test/a.jpg") == 1  # the stale copy did no work


def test_a_late_retry_note_never_reopens_an_image_another_copy_finished() -> None:
    w = world()
    request_id = one_request(w)
    slow = ImageFailure(ErrorCode.TIMEOUT, "slow", transient=True)
    w.fetcher.answers["https://img.test/a.jpg"] = [slow, b"a"]

    # The first copy's fetch times out; while it was waiting, a second copy finished.
    def finish_elsewhere() -> None:
        w.fetcher.answers["https://img.test/a.jpg"] = [b"a"]
        process_image(w.services, request_id, IMAGE)
        w.fetcher.answers["https://img.test/a.jpg"] = [slow]

    once_before(w.fetcher, "fetch", finish_elsewhere)
    process_image(w.services, request_id, IMAGE)
    record = w.images.get(request_id, IMAGE)
    assert record is not None
    assert record.state is ImageState.DONE and record.error_code is None


@pytest.mark.parametrize("count_first", [False, True])
def test_a_stale_failure_never_replaces_done_after_the_request_completed(
    count_first: bool,
) -> None:
    w = world()
    request_id = one_request(w)
    w.fetcher.answers["https://img.test/a.jpg"] = [ImageFailure(ErrorCode.HTTP_ERROR, "404")]

    def everything_else_completes() -> None:
        w.fetcher.answers["https://img.test/a.jpg"] = [b"a"]
        for _, image in list(w.queue.images):
            process_image(w.services, request_id, image)
        for request, _shard in list(w.queue.settled):
            on_shard_settled(w.services, request)
        w.fetcher.answers["https://img.test/a.jpg"] = [ImageFailure(ErrorCode.HTTP_ERROR, "404")]

    once_before(w.fetcher, "fetch", everything_else_completes)
    process_image(w.services, request_id, IMAGE, count_first=count_first)
    request = w.requests.get(request_id)
    assert request is not None and request.status is RequestStatus.COMPLETED
    record = w.images.get(request_id, IMAGE)
    assert record is not None and record.state is ImageState.DONE
    # The status details and the output CSV agree.
    assert request.final_progress is not None and request.final_progress.done == 4
    data, _ = w.blobs.outputs[f"outputs/{request_id}/output.csv"]
    assert record.output_url is not None and record.output_url.encode() in data


def test_not_completed_while_a_slice_is_yet_to_be_materialised() -> None:
    w = world()
    rows = "\r\n".join(f"{i},Item,https://img.test/a.jpg" for i in range(501))
    csv_bytes = f"Serial Number,Product Name,Input Image Urls\r\n{rows}\r\n".encode()
    request_id = accept_upload(w.services, csv_bytes).request_id
    first, second = w.queue.slices
    w.queue.slices.clear()
    materialize_slice(w.services, first)
    for _, image in list(w.queue.images):
        process_image(w.services, request_id, image)
    w.queue.images.clear()
    # Every image that exists is settled, and the last slice is committed just as the
    # finaliser looks: the tallies count the images of that slice too.
    once_before(w.images, "has_unsettled", lambda: materialize_slice(w.services, second))
    assert on_shard_settled(w.services, request_id) is False
    request = w.requests.get(request_id)
    assert request is not None and request.status is RequestStatus.IN_PROGRESS
    assert w.images.has_unsettled(request_id)


def test_a_retry_that_finds_an_outcome_recorded_meanwhile_asks_for_no_retry() -> None:
    w = world()
    request_id = one_request(w)
    slow = ImageFailure(ErrorCode.TIMEOUT, "slow", transient=True)
    w.fetcher.answers["https://img.test/a.jpg"] = [slow]

    def finish_elsewhere() -> None:
        w.fetcher.answers["https://img.test/a.jpg"] = [b"a"]
        process_image(w.services, request_id, IMAGE)
        w.fetcher.answers["https://img.test/a.jpg"] = [slow]

    once_before(w.images, "record_retry", finish_elsewhere)
    try:
        process_image(w.services, request_id, IMAGE)
    except RetryLater:
        pytest.fail("a retry was asked for an image that another copy finished")
    record = w.images.get(request_id, IMAGE)
    assert record is not None and record.state is ImageState.DONE
