"""Limits shared by every process of the local profile, kept in its Redis.

Fetch slots (shared.ports.FetchLimiter): a counting semaphore per host and one for all hosts,
each a sorted set of slot tokens scored by their expiry. Taking a slot first drops expired
tokens, so a worker killed mid-fetch gives its slot back by itself once a fetch's deadline has
surely passed. The check and the take are one Lua script: atomic over all worker processes.

Upload rate (shared.ports.RateLimiter): a fixed-window counter per key, expiring with its
window.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from typing import Any

from shared.ports import RateDecision

# {fetch} is a hash tag: both keys of one script land on the same Redis Cluster slot.
FETCH_ALL = "imgsvc:{fetch}:all"
FETCH_HOST = "imgsvc:{fetch}:host:"
RATE = "imgsvc:rate:"
_POLL = 0.05

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 0 end
local lease = tonumber(ARGV[4])
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('ZADD', KEYS[2], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], lease)
redis.call('PEXPIRE', KEYS[2], lease)
return 1
"""

_HIT = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then return 0 end
if redis.call('INCR', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


class _RedisSlot:
    def __init__(self, client: Any, host_key: str, token: str) -> None:
        self._client = client
        self._host_key = host_key
        self._token = token
        self._held = True

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        pipe = self._client.pipeline()
        pipe.zrem(FETCH_ALL, self._token)
        pipe.zrem(self._host_key, self._token)
        pipe.execute()


class RedisFetchLimiter:
    def __init__(
        self,
        client: Any,
        *,
        max_concurrent: int,
        max_per_host: int,
        lease_seconds: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._max_all = max_concurrent
        self._max_host = max_per_host
        self._lease_ms = max(1, int(lease_seconds * 1000))
        self._sleep = sleep
        self._acquire = client.register_script(_ACQUIRE)

    def acquire(self, host: str, *, wait: float) -> _RedisSlot | None:
        host_key = FETCH_HOST + host
        deadline = time.monotonic() + wait
        while True:
            token = secrets.token_hex(8)
            args = [token, self._max_all, self._max_host, self._lease_ms]
            if self._acquire(keys=[FETCH_ALL, host_key], args=args):
                return _RedisSlot(self._client, host_key, token)
            if time.monotonic() + _POLL > deadline:
                return None
            self._sleep(_POLL)

    def in_use(self, host: str | None = None) -> int:
        """Slots held now (expired ones not yet dropped included)."""
        return int(self._client.zcard(FETCH_ALL if host is None else FETCH_HOST + host))


class RedisRateLimiter:
    def __init__(self, client: Any, name: str, *, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._prefix = f"{RATE}{name}:"
        self._clock = clock
        self._hit = client.register_script(_HIT)

    def hit(self, key: str, *, limit: int, window: float) -> RateDecision:
        now = self._clock()
        index = math.floor(now / window)
        window_end = (index + 1) * window
        ttl_ms = max(1, math.ceil((window_end - now) * 1000))
        allowed = self._hit(keys=[f"{self._prefix}{key}:{index}"], args=[limit, ttl_ms])
        return RateDecision(bool(allowed), 0.0 if allowed else window_end - now)
