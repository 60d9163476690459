"""Fetch slots counted inside one process (implements shared.ports.FetchLimiter).

For a Cloud Function instance, whose threads are the only fetchers it has; across instances
the Cloud Tasks queue's max-concurrent-dispatches is the cap (see SECURITY.md). The local
profile's worker processes share the Redis limiter instead.
"""

from __future__ import annotations

import threading
import time
from collections import Counter


class _ProcessSlot:
    def __init__(self, limiter: ProcessFetchLimiter, host: str) -> None:
        self._limiter = limiter
        self._host = host
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._limiter._release(self._host)


class ProcessFetchLimiter:
    def __init__(self, max_concurrent: int, max_per_host: int) -> None:
        self._max_all = max_concurrent
        self._max_host = max_per_host
        self._changed = threading.Condition()
        self._all = 0
        self._per_host: Counter[str] = Counter()

    def acquire(self, host: str, *, wait: float) -> _ProcessSlot | None:
        deadline = time.monotonic() + wait
        with self._changed:
            while self._all >= self._max_all or self._per_host[host] >= self._max_host:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(remaining)
            self._all += 1
            self._per_host[host] += 1
        return _ProcessSlot(self, host)

    def _release(self, host: str) -> None:
        with self._changed:
            self._all -= 1
            self._per_host[host] -= 1
            if self._per_host[host] <= 0:
                del self._per_host[host]
            self._changed.notify_all()

    def in_use(self, host: str | None = None) -> int:
        with self._changed:
            return self._all if host is None else self._per_host[host]
