"""Limits that hold across processes (issue 5, "Limits" and "Access"): fetch slots and the
upload rate in a real Redis (the local profile), the upload rate in the Firestore emulator (the
cloud). Each limiter object stands for one process; they share only the store."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis
from google.cloud import firestore

from local_profile.recipes import Stack
from shared.adapters.egress.safe_http import HttpImageFetcher
from shared.adapters.gcp.firestore_rate_limit import FirestoreRateLimiter
from shared.adapters.local.redis_limits import RedisFetchLimiter, RedisRateLimiter
from shared.config import FetchPolicy, Limits, Settings, parse_networks

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n" + bytes(200)


@pytest.fixture
def redis_db(backing: Stack) -> Iterator[redis.Redis]:
    # A database of the session's own Redis that the live worker does not use, emptied for
    # each test, so that no fetch of the end-to-end tests takes one of these slots.
    base = backing.env["REDIS_URL"].rsplit("/", 1)[0]
    client = redis.Redis.from_url(f"{base}/7")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def limiter(
    client: redis.Redis, *, total: int = 10, per_host: int = 2, lease: float = 60.0
) -> RedisFetchLimiter:
    # A connection of its own: another process of the same stack.
    own = redis.Redis(
        connection_pool=redis.ConnectionPool(**client.connection_pool.connection_kwargs)
    )
    return RedisFetchLimiter(own, max_concurrent=total, max_per_host=per_host, lease_seconds=lease)


# --- fetch slots in Redis ---------------------------------------------------------------------


def test_slots_are_shared_by_every_process(redis_db: redis.Redis) -> None:
    worker_a, worker_b = (
        limiter(redis_db, total=3, per_host=2),
        limiter(redis_db, total=3, per_host=2),
    )
    first = worker_a.acquire("img.test", wait=0)
    second = worker_b.acquire("img.test", wait=0)
    assert first is not None and second is not None
    assert worker_a.acquire("img.test", wait=0) is None  # the host has its two
    other = worker_b.acquire("cdn.test", wait=0)
    assert other is not None
    assert worker_a.acquire("third.test", wait=0) is None  # three in all
    first.release()
    assert worker_b.acquire("img.test", wait=0) is not None
    assert worker_a.in_use() == 3


def test_a_slot_whose_holder_died_frees_itself_after_its_lease(redis_db: redis.Redis) -> None:
    dying = limiter(redis_db, per_host=1, lease=0.2)
    assert dying.acquire("img.test", wait=0) is not None  # never released: its worker died
    survivor = limiter(redis_db, per_host=1)
    assert survivor.acquire("img.test", wait=0) is None
    time.sleep(0.4)
    assert survivor.acquire("img.test", wait=0) is not None


def test_a_waiting_fetch_gets_the_slot_another_process_gives_back(redis_db: redis.Redis) -> None:
    holder, waiter = limiter(redis_db, per_host=1), limiter(redis_db, per_host=1)
    held = holder.acquire("img.test", wait=0)
    assert held is not None
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(waiter.acquire("img.test", wait=30)))
    thread.start()
    time.sleep(0.2)
    held.release()
    thread.join(30)
    assert result and result[0] is not None


class CountingHandler(BaseHTTPRequestHandler):
    """Serves a small PNG slowly and records how many requests it was serving at once."""

    lock = threading.Lock()
    current = 0
    peak = 0
    served = 0

    def do_GET(self) -> None:
        cls = type(self)
        with cls.lock:
            cls.current += 1
            cls.peak = max(cls.peak, cls.current)
        time.sleep(0.15)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)
        with cls.lock:
            cls.current -= 1
            cls.served += 1

    def log_message(self, *args: object) -> None:
        return


def test_a_host_never_sees_more_fetches_at_once_than_its_limit(redis_db: redis.Redis) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), CountingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/a.png"
    policy = FetchPolicy(allowed_networks=parse_networks("127.0.0.1/32"))

    def one_worker(_: int) -> bytes:
        # Eight workers, each its own process as far as the limiter can tell.
        slots = limiter(redis_db, per_host=2)
        fetcher = HttpImageFetcher(policy, Limits())
        while True:
            slot = slots.acquire("127.0.0.1", wait=0.1)
            if slot is not None:
                break
        try:
            return fetcher.fetch(url).data
        finally:
            slot.release()

    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(one_worker, range(8)))
    finally:
        server.shutdown()
        server.server_close()
    assert results == [PNG] * 8
    assert CountingHandler.served == 8
    assert CountingHandler.peak == 2


# --- the upload rate --------------------------------------------------------------------------


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def check_fixed_window(make: object) -> None:
    clock = Clock(1_000_040.0)  # 20 s into a 60 s window (1,000,020 is where one starts)
    gateway_a, gateway_b = make(clock), make(clock)  # type: ignore[operator]
    key = f"k{uuid.uuid4().hex[:8]}"
    assert gateway_a.hit(key, limit=3, window=60).allowed
    assert gateway_b.hit(key, limit=3, window=60).allowed
    assert gateway_a.hit(key, limit=3, window=60).allowed
    refused = gateway_b.hit(key, limit=3, window=60)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(40.0)
    assert gateway_a.hit(f"{key}-other", limit=3, window=60).allowed
    clock.now += 40.0  # the next window
    assert gateway_a.hit(key, limit=3, window=60).allowed


def test_redis_upload_rate_is_a_fixed_window_shared_by_every_gateway(
    redis_db: redis.Redis,
) -> None:
    check_fixed_window(lambda clock: RedisRateLimiter(redis_db, "upload", clock=clock))


@pytest.fixture(scope="module")
def db(settings: Settings) -> firestore.Client:
    return firestore.Client(project=settings.project)


def test_firestore_upload_rate_is_a_fixed_window_shared_by_every_instance(
    db: firestore.Client,
) -> None:
    check_fixed_window(lambda clock: FirestoreRateLimiter(db, "upload", clock=clock))


def test_firestore_upload_rate_is_exact_under_concurrent_uploads(db: firestore.Client) -> None:
    key = f"k{uuid.uuid4().hex[:8]}"
    instances = [FirestoreRateLimiter(db, "upload") for _ in range(4)]
    with ThreadPoolExecutor(8) as pool:
        decisions = list(
            pool.map(lambda i: instances[i % 4].hit(key, limit=5, window=3600), range(12))
        )
    assert sum(d.allowed for d in decisions) == 5
