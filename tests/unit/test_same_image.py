"""Repeated images done once: a URL repeated in a request is fetched and compressed once, and
the same bytes under different URLs are stored once."""

from __future__ import annotations

import csv
import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.errors import RetryLater
from shared.domain.messages import CopyImage, MaterializeSlice, from_payload, to_payload
from shared.domain.model import ImageState
from shared.domain.same_image import _parsed_key, image_key
from shared.entrypoints.tasks import handle
from shared.usecases import fan_out
from shared.usecases.accept_upload import accept_upload
from shared.usecases.fan_out import materialize_slice
from shared.usecases.process_image import FOLLOW_WAIT, FOLLOW_WAIT_TOLD, process_image
from tests.fakes import FakeCodec, FakeWorld, run_queue
from tests.unit.test_use_cases import world

HEADER = b"Serial Number,Product Name,Input Image Urls\r\n"


class CountingCodec(FakeCodec):
    def __init__(self) -> None:
        self.calls = 0

    def compress(self, data: bytes):  # type: ignore[no-untyped-def]
        self.calls += 1
        return super().compress(data)


def counted_world() -> tuple[FakeWorld, CountingCodec]:
    w = world()
    codec = CountingCodec()
    w.services.codec = codec
    return w, codec


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://img.test/a.jpg", "HTTPS://IMG.TEST/a.jpg"),
        ("https://img.test/a.jpg", "https://img.test:443/a.jpg"),
        ("http://img.test/a.jpg", "http://img.test:80/a.jpg"),
        ("https://img.test/a.jpg", "https://img.test./a.jpg"),
        ("https://img.test/a.jpg", "https://img.test/a.jpg#front"),
        ("https://img.test/%7Euser/a.jpg", "https://img.test/~user/a.jpg"),
        ("https://img.test/a%2fb.jpg", "https://img.test/a%2Fb.jpg"),
        ("https://img.test", "https://img.test/"),
        ("http://[::1]:8080/a.jpg", "http://[::1]:8080/a.jpg"),
    ],
)
def test_urls_that_name_the_same_image_share_a_key(a: str, b: str) -> None:
    assert image_key(a) == image_key(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://img.test/a.jpg", "https://img.test/A.jpg"),  # paths may be case-sensitive
        ("https://img.test/a.jpg?x=1&y=2", "https://img.test/a.jpg?y=2&x=1"),  # query as written
        ("https://img.test/a.jpg", "http://img.test/a.jpg"),
        ("https://img.test/a.jpg", "https://img.test:8443/a.jpg"),
        ("https://img.test/a%2Fb.jpg", "https://img.test/a/b.jpg"),  # an escaped slash is not one
    ],
)
def test_urls_that_may_name_different_images_do_not(a: str, b: str) -> None:
    assert image_key(a) != image_key(b)


def test_a_repeated_url_is_fetched_and_compressed_once_and_every_slot_gets_its_output() -> None:
    w, codec = counted_world()
    csv_bytes = HEADER + (
        b'1,Chair,"https://img.test/a.jpg,https://img.test/b.jpg"\r\n'
        b"2,Desk,HTTPS://IMG.TEST/a.jpg\r\n"
        b'3,Lamp,"https://img.test/b.jpg#side,https://img.test/a.jpg"\r\n'
    )
    request_id = accept_upload(w.services, csv_bytes).request_id
    run_queue(w)
    assert sorted(w.fetcher.calls) == ["https://img.test/a.jpg", "https://img.test/b.jpg"]
    assert codec.calls == 2
    assert len([p for p in w.blobs.outputs if not p.endswith(".csv")]) == 2
    images = {i.image_id: i for i in w.images.iterate(request_id)}
    a, b = images["0000000-00"], images["0000000-01"]
    assert a.same_as is None and b.same_as is None
    assert images["0000001-00"].same_as == a.image_id
    assert images["0000002-00"].same_as == b.image_id
    assert images["0000002-01"].same_as == a.image_id
    for copy, first in [("0000001-00", a), ("0000002-00", b), ("0000002-01", a)]:
        assert images[copy].state is ImageState.DONE
        assert images[copy].output_url == first.output_url
        assert images[copy].output_bytes == first.output_bytes
    data, _ = w.blobs.outputs[f"outputs/{request_id}/output.csv"]
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert rows[2][-1] == a.output_url
    assert rows[3][-1] == f"{b.output_url},{a.output_url}"
    record = w.requests.get(request_id)
    assert record is not None and record.final_progress is not None
    assert record.final_progress.done == 5  # every slot counts


def test_when_the_first_slot_fails_the_repeats_fail_with_it_and_say_why() -> None:
    w = world()
    csv_bytes = (
        HEADER + b"1,Chair,https://img.test/gone.jpg\r\n2,Desk,https://img.test/gone.jpg\r\n"
    )
    request_id = accept_upload(w.services, csv_bytes).request_id
    run_queue(w)
    assert w.fetcher.calls == ["https://img.test/gone.jpg"]
    copy = w.images.get(request_id, "0000001-00")
    assert copy is not None and copy.state is ImageState.FAILED
    assert copy.error_code == "http_error"
    assert copy.error_message is not None and "the same image as row 1, URL 1" in copy.error_message


def test_a_repeat_waits_for_its_first_slot_without_using_up_attempts() -> None:
    w = world()
    csv_bytes = HEADER + b"1,Chair,https://img.test/a.jpg\r\n2,Desk,https://img.test/a.jpg\r\n"
    request_id = accept_upload(w.services, csv_bytes).request_id
    materialize_slice(w.services, w.queue.slices.pop(0))
    for _ in range(10):  # the sweeper's rounds count attempts first for re-driven images
        with pytest.raises(RetryLater):
            process_image(w.services, request_id, "0000001-00", count_first=True)
    waiting = w.images.get(request_id, "0000001-00")
    assert waiting is not None and waiting.attempts == 0 and waiting.state is ImageState.PENDING
    assert process_image(w.services, request_id, "0000000-00") is ImageState.DONE
    assert process_image(w.services, request_id, "0000001-00") is ImageState.DONE
    assert w.fetcher.calls == ["https://img.test/a.jpg"]


def test_the_same_bytes_under_different_urls_are_stored_once() -> None:
    w, codec = counted_world()
    for url in ("https://img.test/a.jpg", "https://cdn.test/a-copy.jpg", "https://img.test/b.jpg"):
        w.fetcher.answers[url] = b"logo" if "b.jpg" not in url else b"other"
    csv_bytes = HEADER + (
        b"1,Chair,https://img.test/a.jpg\r\n2,Desk,https://cdn.test/a-copy.jpg\r\n"
        b"3,Lamp,https://img.test/b.jpg\r\n"
    )
    request_id = accept_upload(w.services, csv_bytes).request_id
    run_queue(w)
    assert len(w.fetcher.calls) == 3  # different URLs: each is fetched...
    assert codec.calls == 3  # ...and compressed (nothing is looked up before: see _store_once)
    stored = [p for p in w.blobs.outputs if not p.endswith(".csv")]
    assert len(stored) == 2  # but the repeated bytes are stored once
    first, copy = (w.images.get(request_id, i) for i in ("0000000-00", "0000001-00"))
    assert first is not None and copy is not None
    assert copy.state is ImageState.DONE and copy.output_url == first.output_url
    assert copy.same_as is None  # another URL: not a repeat of the slot, a repeat of its bytes


def test_the_same_bytes_compressed_at_the_same_moment_are_stored_once_and_the_first_stands() -> (
    None
):
    # Nothing is claimed before compressing: two slots with the same bytes may both compress
    # them. The first to record its outcome wins; the other copies its output and removes
    # its own object, so the bytes are stored once and every slot shows one output.
    w, codec = counted_world()
    for url in ("https://img.test/a.jpg", "https://cdn.test/a-copy.jpg"):
        w.fetcher.answers[url] = b"logo"
    csv_bytes = HEADER + b"1,Chair,https://img.test/a.jpg\r\n2,Desk,https://cdn.test/a-copy.jpg\r\n"
    request_id = accept_upload(w.services, csv_bytes).request_id
    materialize_slice(w.services, w.queue.slices.pop(0))
    w.queue.images.clear()
    store = w.blobs.put_output
    raced = []

    def the_other_slot_finishes_first(path: str, data: bytes, content_type: str) -> str:
        url = store(path, data, content_type)
        if not raced:  # while the first slot is between storing and recording
            raced.append(path)
            assert process_image(w.services, request_id, "0000001-00") is ImageState.DONE
        return url

    w.blobs.put_output = the_other_slot_finishes_first  # type: ignore[method-assign]
    assert process_image(w.services, request_id, "0000000-00") is ImageState.DONE
    first, second = (w.images.get(request_id, i) for i in ("0000000-00", "0000001-00"))
    assert first is not None and second is not None
    assert codec.calls == 2  # the race's price: compressed twice...
    assert first.output_path == second.output_path == f"outputs/{request_id}/2-1.jpg"
    assert first.output_url == second.output_url
    assert [p for p in w.blobs.outputs] == [second.output_path]  # ...but stored once
    assert raced == [f"outputs/{request_id}/1-1.jpg"]  # the loser's own object, removed
    record = w.requests.get(request_id)
    assert record is not None
    tally = w.images.tally(request_id, record.tally_shards)
    assert (tally.done, tally.failed) == (2, 0)


def test_the_same_bytes_in_another_request_are_stored_again() -> None:
    w, codec = counted_world()
    csv_bytes = HEADER + b"1,Chair,https://img.test/a.jpg\r\n"
    first = accept_upload(w.services, csv_bytes).request_id
    second = accept_upload(w.services, csv_bytes).request_id
    run_queue(w)
    assert codec.calls == 2  # each request owns its outputs
    one, two = (w.images.get(r, "0000000-00") for r in (first, second))
    assert one is not None and two is not None and one.output_url != two.output_url


def test_the_first_slot_tells_its_repeats_when_it_settles_so_they_do_not_wait() -> None:
    w = world()
    w.fetcher.answers["https://img.test/logo.jpg"] = b"logo"
    rows = b"".join(b"%d,Item,https://img.test/logo.jpg\r\n" % (n + 1) for n in range(4))
    request_id = accept_upload(w.services, HEADER + rows).request_id
    materialize_slice(w.services, w.queue.slices.pop(0))
    copies = ["0000001-00", "0000002-00", "0000003-00"]
    for copy in copies:  # the repeats come first: nothing to copy yet, so they wait
        with pytest.raises(RetryLater):
            process_image(w.services, request_id, copy)
    w.queue.sent.clear()
    assert process_image(w.services, request_id, "0000000-00") is ImageState.DONE
    told = [m for m, _ in w.queue.sent if isinstance(m, CopyImage)]
    assert told == [CopyImage(request_id, copy) for copy in copies]
    for message in told:  # the copies' tasks, as the queue hands them out
        handle(w.services, from_payload(to_payload(message)))
    first = w.images.get(request_id, "0000000-00")
    assert first is not None
    for copy in copies:
        record = w.images.get(request_id, copy)
        assert record is not None and record.state is ImageState.DONE
        assert record.output_url == first.output_url
    assert w.fetcher.calls == ["https://img.test/logo.jpg"]


def test_a_repeat_that_will_be_told_looks_again_later_than_one_that_will_not() -> None:
    w = world()
    w.fetcher.answers["https://img.test/logo.jpg"] = b"logo"
    noted = fan_out.FOLLOWERS_NOTED
    fan_out.FOLLOWERS_NOTED = 1
    try:
        rows = b"".join(b"%d,Item,https://img.test/logo.jpg\r\n" % (n + 1) for n in range(3))
        request_id = accept_upload(w.services, HEADER + rows).request_id
    finally:
        fan_out.FOLLOWERS_NOTED = noted
    materialize_slice(w.services, w.queue.slices.pop(0))
    first = w.images.get(request_id, "0000000-00")
    assert first is not None and first.followers == ("0000001-00",)
    waits = {}
    for copy in ("0000001-00", "0000002-00"):
        with pytest.raises(RetryLater) as later:
            process_image(w.services, request_id, copy)
        waits[copy] = later.value.after_seconds
    assert waits == {"0000001-00": FOLLOW_WAIT_TOLD, "0000002-00": FOLLOW_WAIT}
    process_image(w.services, request_id, "0000000-00")
    sent = [m for m, _ in w.queue.sent if isinstance(m, CopyImage)]
    assert sent == [CopyImage(request_id, "0000001-00")]  # the one beyond the list looks itself


def test_a_redelivered_first_slot_tells_its_repeats_again() -> None:
    """Its worker may have died between recording the outcome and telling them."""
    w = world()
    rows = HEADER + b"1,Chair,https://img.test/a.jpg\r\n2,Desk,https://img.test/a.jpg\r\n"
    request_id = accept_upload(w.services, rows).request_id
    materialize_slice(w.services, w.queue.slices.pop(0))
    process_image(w.services, request_id, "0000000-00")
    w.queue.sent.clear()
    process_image(w.services, request_id, "0000000-00", count_first=True)
    assert [m for m, _ in w.queue.sent if isinstance(m, CopyImage)] == [
        CopyImage(request_id, "0000001-00")
    ]


def test_a_slice_keeps_its_jobs_followers_through_the_queue_and_old_slices_still_read() -> None:
    w = world()
    rows = HEADER + b'1,Chair,"https://img.test/a.jpg,https://img.test/b.jpg"\r\n'
    rows += b"2,Desk,https://img.test/a.jpg\r\n"
    accept_upload(w.services, rows)
    image_slice = w.queue.slices.pop(0)
    payload = to_payload(MaterializeSlice(image_slice))
    again = from_payload(payload)
    assert isinstance(again, MaterializeSlice) and again.slice == image_slice
    assert image_slice.jobs[0].followers == ("0000001-00",)
    # A slice queued before followers existed: seven fields a job.
    old = json.loads(json.dumps(payload))
    old["slice"]["jobs"] = [job[:7] for job in old["slice"]["jobs"]]
    read = from_payload(old)
    assert isinstance(read, MaterializeSlice)
    assert [j.followers for j in read.slice.jobs] == [(), (), ()]
    assert [j.same_as for j in read.slice.jobs] == [None, None, "0000000-00"]


def _urls(
    schemes: list[str],
    hosts: list[str],
    ports: list[str],
    path: st.SearchStrategy[str],
    *,
    queries: list[str],
    fragments: list[str],
) -> st.SearchStrategy[str]:
    return st.builds(
        "{}://{}{}{}{}{}".format,
        *(st.sampled_from(x) for x in (schemes, hosts, ports)),
        path,
        *(st.sampled_from(x) for x in (queries, fragments)),
    )


# URLs the fast path takes or only just misses (a default port, an empty query), and others.
NEARLY_NORMAL = _urls(
    ["http", "https"],
    ["img.test", "a-b.c9", "127.0.0.1", "x"],
    ["", ":8080", ":1", ":65535", ":99999", ":80", ":443"],
    st.from_regex(r"/[a-zA-Z0-9._~/-]{0,10}", fullmatch=True),
    queries=["", "?a=1&B=2", "?", "?x/y"],
    fragments=[""],
)
ANY_URL = _urls(
    ["http", "https", "HTTP", "ftp", ""],
    ["img.test", "IMG.test", "img.test.", "[::1]", "u@h", ""],
    ["", ":80", ":443", ":8080", ":09", ":x"],
    st.text(alphabet="/aZ.%2f7E~ \t-_", max_size=12),
    queries=["", "?", "?a=1&B=%7e"],
    fragments=["", "#", "#f"],
)


@given(st.one_of(NEARLY_NORMAL, ANY_URL, st.text(max_size=40)))
def test_a_url_keyed_without_parsing_gets_the_key_parsing_gives(url: str) -> None:
    assert image_key(url) == _parsed_key(url)
