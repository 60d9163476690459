"""The collaborators every use case may need, wired once by shared.bootstrap."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.config import Settings
from shared.ports import (
    BlobStore,
    Clock,
    DeliveryRepository,
    FetchLimiter,
    ImageCodec,
    ImageEvents,
    ImageFetcher,
    ImageRepository,
    RateLimiter,
    RequestRepository,
    TaskQueue,
    UploadKeys,
    UrlGuard,
    WebhookTransport,
)


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass
class Services:
    settings: Settings
    requests: RequestRepository
    images: ImageRepository
    deliveries: DeliveryRepository
    blobs: BlobStore
    fetcher: ImageFetcher
    codec: ImageCodec
    queue: TaskQueue
    events: ImageEvents
    webhooks: WebhookTransport
    webhook_guard: UrlGuard
    clock: Clock
    fetch_limiter: FetchLimiter
    upload_rate: RateLimiter
    upload_keys: UploadKeys
