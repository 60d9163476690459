"""The upload rate limit in the cloud: a fixed-window counter document per key and window
(implements shared.ports.RateLimiter).

    rate_limits/{name}-{key_id}-{window}    {"count": n, "expires_at": end of the window}

Each upload is one write that increments the counter on the server and returns the new count
(a field transform's result), so counts are exact across all function instances without a
transaction: contended transactions stall (the emulator locks documents) where increments do
not. An event past the limit is counted too, which changes nothing: the window is full either
way. Uploads are rare, so one write per upload on a document of its own is far below
Firestore's one-write-per-second-per-document guidance. A TTL policy on `expires_at`
(deploy.sh) deletes old windows; until it runs they are merely unused.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

from google.cloud import firestore

from shared.ports import RateDecision

RATE_LIMITS = "rate_limits"


class FirestoreRateLimiter:
    def __init__(
        self, client: firestore.Client, name: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = client
        self._name = name
        self._clock = clock

    def hit(self, key: str, *, limit: int, window: float) -> RateDecision:
        now = self._clock()
        index = math.floor(now / window)
        window_end = (index + 1) * window
        ref = self._db.collection(RATE_LIMITS).document(f"{self._name}-{key}-{index}")
        result = ref.set(
            {
                "count": firestore.Increment(1),
                "expires_at": datetime.fromtimestamp(window_end, UTC),
            },
            merge=True,
        )
        count = int(result.transform_results[0].integer_value)
        allowed = count <= limit
        return RateDecision(allowed, 0.0 if allowed else window_end - now)
