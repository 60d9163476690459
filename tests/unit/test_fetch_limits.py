"""Concurrent fetches in all and per host (issue 5, "Limits"): the settings, the in-process
limiter of a Cloud Function instance, and what an image does when no slot is free: it waits
briefly, then goes back to the queue without using up an attempt; it never fails for it."""

from __future__ import annotations

import contextlib
import threading

import pytest

from shared.adapters.egress.process_limits import ProcessFetchLimiter
from shared.config import ConfigError, FetchPolicy, Settings
from shared.domain.errors import ErrorCode, ImageFailure, RetryLater
from shared.domain.model import ImageState
from shared.usecases.accept_upload import accept_upload
from shared.usecases.fan_out import materialize_slice
from shared.usecases.process_image import SLOT_WAIT, fetch_host, process_image
from tests.fakes import FakeWorld, fake_world

CSV = b"Serial Number,Product Name,Input Image Urls\n1,Lamp,https://img.test/a.jpg\n"


def one_image(w: FakeWorld) -> tuple[str, str]:
    w.fetcher.answers["https://img.test/a.jpg"] = b"a"
    accept_upload(w.services, CSV)
    materialize_slice(w.services, w.queue.slices.pop())
    return w.queue.images.pop()


# --- settings ---------------------------------------------------------------------------------


def test_fetch_concurrency_settings_have_safe_defaults_and_are_configurable() -> None:
    assert (FetchPolicy().max_concurrent, FetchPolicy().max_per_host) == (32, 6)
    fetch = Settings.from_env({"FETCH_MAX_CONCURRENT": "8", "FETCH_MAX_PER_HOST": "2"}).fetch
    assert (fetch.max_concurrent, fetch.max_per_host) == (8, 2)
    with pytest.raises(ConfigError):
        Settings.from_env({"FETCH_MAX_PER_HOST": "0"})


def test_fetch_dns_setting() -> None:
    assert Settings().fetch.dns == "system"
    assert Settings.from_env({"FETCH_DNS": "OFF"}).fetch.dns == "off"
    with pytest.raises(ConfigError):
        Settings.from_env({"FETCH_DNS": "sometimes"})


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://IMG.test/a.jpg", "img.test"),
        ("https://img.test.:8443/a.jpg", "img.test"),
        ("http://[::1]:80/a", "::1"),
        ("not a url", ""),
        ("http://[broken/", ""),
    ],
)
def test_fetches_are_counted_by_the_host_of_the_input_url(url: str, host: str) -> None:
    assert fetch_host(url) == host


# --- the use case -----------------------------------------------------------------------------


def test_an_image_whose_host_is_busy_goes_back_to_the_queue_without_an_attempt() -> None:
    w = fake_world()
    request_id, image_id = one_image(w)
    w.fetch_limiter.full = True

    with pytest.raises(RetryLater) as later:
        process_image(w.services, request_id, image_id)

    assert 5 <= later.value.after_seconds <= 10
    assert w.fetch_limiter.waits == [SLOT_WAIT]  # it waited a little first
    assert w.fetcher.calls == []
    record = w.images.get(request_id, image_id)
    assert record is not None
    assert (record.state, record.attempts, record.error_code) == (ImageState.PENDING, 0, None)

    w.fetch_limiter.full = False
    assert process_image(w.services, request_id, image_id) is ImageState.DONE


def test_even_a_redelivered_image_is_not_counted_while_its_host_is_busy() -> None:
    w = fake_world()
    request_id, image_id = one_image(w)
    w.fetch_limiter.full = True
    for _ in range(10):  # many more than IMAGE_MAX_ATTEMPTS
        with pytest.raises(RetryLater):
            process_image(w.services, request_id, image_id, count_first=True)
    record = w.images.get(request_id, image_id)
    assert record is not None and record.attempts == 0


@pytest.mark.parametrize(
    "answer",
    [b"a", b"broken", ImageFailure(ErrorCode.TIMEOUT, "slow", transient=True)],
    ids=["done", "codec-failure", "transient-failure"],
)
def test_the_slot_is_given_back_whatever_the_fetch_led_to(answer: object) -> None:
    w = fake_world()
    request_id, image_id = one_image(w)
    w.fetcher.answers["https://img.test/a.jpg"] = answer
    with contextlib.suppress(RetryLater):
        process_image(w.services, request_id, image_id)
    assert w.fetch_limiter.held == {"img.test": 0}


# --- one instance's limiter -------------------------------------------------------------------


def test_process_limiter_caps_each_host_and_the_total() -> None:
    limiter = ProcessFetchLimiter(max_concurrent=3, max_per_host=2)
    a1 = limiter.acquire("a.test", wait=0)
    a2 = limiter.acquire("a.test", wait=0)
    assert a1 is not None and a2 is not None
    assert limiter.acquire("a.test", wait=0) is None  # the host is full
    b1 = limiter.acquire("b.test", wait=0)
    assert b1 is not None
    assert limiter.acquire("c.test", wait=0) is None  # everything is full
    a1.release()
    a1.release()  # twice is harmless
    assert limiter.in_use() == 2
    assert limiter.acquire("c.test", wait=0) is not None


def test_process_limiter_waits_for_a_slot_to_free_up() -> None:
    limiter = ProcessFetchLimiter(max_concurrent=1, max_per_host=1)
    held = limiter.acquire("a.test", wait=0)
    assert held is not None
    waiting = threading.Event()
    got: list[object] = []

    def waiter() -> None:
        waiting.set()
        got.append(limiter.acquire("a.test", wait=30))

    thread = threading.Thread(target=waiter)
    thread.start()
    waiting.wait()
    held.release()
    thread.join(30)
    assert got and got[0] is not None
