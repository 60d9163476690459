"""The composition root: the one place that turns Settings into adapters.

Entry points call `build_services()` once per process (after fork, for Celery's prefork
workers: gRPC channels do not survive a fork) and hand the result to the use cases, which never
ask which profile they run in.

Importing this module loads no client library: a Cloud Function imports it at start-up, and
each adapter's libraries are loaded when the adapter is built. Adapters that only some
functions use (the fetcher and the webhook sender, the Cloud Tasks client, Pillow) are built
the first time they are used, so a function that never uses one never loads it: status never
loads Cloud Tasks, urllib3 or Pillow (BENCHMARKS.md, "Cold start").
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, cast

from shared.config import ConfigError, Limits, Settings
from shared.ports import (
    FetchLimiter,
    ImageCodec,
    ImageEvents,
    ImageFetcher,
    RateLimiter,
    TaskQueue,
    WebhookTransport,
)
from shared.usecases.services import Services, SystemClock

if TYPE_CHECKING:
    from shared.adapters.egress.address_guard import AddressGuard
    from shared.adapters.gcp.gcs_blobs import GcsBlobStore

_T = TypeVar("_T")

log = logging.getLogger(__name__)


def _point_clients_at_emulators(settings: Settings) -> None:
    # The client libraries read the emulator hosts from the environment; make sure the
    # settings (which may come from a .env file) are what they see.
    if settings.firestore_emulator_host:
        os.environ["FIRESTORE_EMULATOR_HOST"] = settings.firestore_emulator_host
    if settings.storage_emulator_host:
        os.environ["STORAGE_EMULATOR_HOST"] = settings.storage_emulator_host


class _Deferred(Generic[_T]):
    """Stands for an adapter that is built the first time any of its attributes is used
    (once, whichever thread gets there first), so that its libraries load only in a process
    that needs them."""

    def __init__(self, make: Callable[[], _T]) -> None:
        self._make = make
        self._built: _T | None = None
        self._lock = threading.Lock()

    def built(self) -> _T:
        if self._built is None:
            with self._lock:
                if self._built is None:
                    self._built = self._make()
        return self._built

    def __getattr__(self, name: str) -> Any:
        return getattr(self.built(), name)


def deferred(make: Callable[[], _T]) -> _T:
    """What `make()` returns, built on first use (to the type checker, the thing itself)."""
    return cast(_T, _Deferred(make))


def build_blob_store(settings: Settings) -> GcsBlobStore:
    from google.cloud import storage  # type: ignore[attr-defined]

    from shared.adapters.gcp.gcs_blobs import GcsBlobStore

    _point_clients_at_emulators(settings)
    signer = None
    if settings.storage_emulator_host:
        from google.auth.credentials import AnonymousCredentials

        gcs = storage.Client(
            project=settings.project,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        )
        if settings.output_url_mode == "signed":
            signer = _emulator_signer(settings)
    else:
        gcs = storage.Client(project=settings.project)
    return GcsBlobStore(
        gcs,
        uploads_bucket=settings.uploads_bucket,
        outputs_bucket=settings.outputs_bucket,
        url_mode=settings.output_url_mode,
        signed_url_ttl=settings.signed_url_ttl,
        emulator_host=settings.storage_emulator_host,
        signer=signer,
    )


def _emulator_signer(settings: Settings) -> Any:
    # The emulator's client is anonymous and cannot sign; production signs through IAM.
    if not settings.signing_key_file:
        raise ConfigError(
            "OUTPUT_URL_MODE=signed against the Storage emulator needs "
            "GOOGLE_APPLICATION_CREDENTIALS: a service-account key file to sign URLs with"
        )
    from google.oauth2 import service_account

    return service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
        settings.signing_key_file
    )


def _firestore_client(settings: Settings) -> Any:
    from google.cloud import firestore

    _point_clients_at_emulators(settings)
    return firestore.Client(project=settings.project)


def _pillow_codec(limits: Limits) -> ImageCodec:
    from shared.adapters.codec.pillow_codec import PillowCodec

    return PillowCodec(limits)


CodecName = Literal["dct", "pillow"]


def build_codec(limits: Limits) -> ImageCodec:
    """JPEGs re-quantized in the DCT domain where the native module loads, Pillow for the rest
    (and for everything where it does not): the choice and its figures are in BENCHMARKS.md.

    The choice is logged once per process. Falling back is an error, not a warning: in a
    Cloud Function it means the staged wheel is missing or broken, and every JPEG then costs
    about twice the CPU."""
    # Pillow and numpy cost a tenth of a second to load, which a function that never
    # compresses, and process_image until its first picture that is not a plain JPEG, need
    # not pay.
    general = deferred(lambda: _pillow_codec(limits))
    try:
        from jpeg_requantize import LIBJPEG_VERSION

        from shared.adapters.codec.jpeg_requantizer import JpegRequantizer
    except ImportError as exc:
        log.error(
            "image codec: Pillow only, every JPEG takes the slow path: jpeg_requantize "
            "does not load (%s); locally `make install` builds it, deploys stage its wheel",
            exc,
        )
        return general
    log.info(
        "image codec: DCT re-quantization (jpeg_requantize over libjpeg %s), Pillow for the rest",
        LIBJPEG_VERSION,
    )
    return JpegRequantizer(limits, general)


def codec_name(codec: ImageCodec) -> CodecName:
    """Which codec a process runs, for /healthz."""
    try:
        from shared.adapters.codec.jpeg_requantizer import JpegRequantizer
    except ImportError:  # not built: build_codec has fallen back to Pillow
        return "pillow"
    return "dct" if isinstance(codec, JpegRequantizer) else "pillow"


@dataclass(frozen=True)
class Backend:
    """What differs between the profiles besides the Google clients: where work is queued,
    who reports settled images, and where fetch slots and upload counts are shared."""

    queue: TaskQueue
    events: ImageEvents
    fetch_limiter: FetchLimiter
    upload_rate: RateLimiter


# A fetch slot whose holder died frees itself after the longest a fetch can take, plus this.
SLOT_LEASE_MARGIN = 30.0


def build_backend(settings: Settings, db: Any) -> Backend:
    """Decided once, by TASK_BACKEND.

    Locally, the Celery worker's processes and the gateway share one Redis: the broker, the
    delayed tasks, the fetch slots and the upload counters. Cloud Functions have no shared
    memory: fetch slots are counted per instance (the Cloud Tasks queue's
    max-concurrent-dispatches caps the whole), the upload rate in Firestore (SECURITY.md), and
    the Firestore trigger reports settled images by itself.
    """
    fetch = settings.fetch
    if settings.task_backend == "cloudtasks":
        from shared.adapters.egress.process_limits import ProcessFetchLimiter
        from shared.adapters.gcp.cloud_tasks_queue import CloudTasksQueue
        from shared.adapters.gcp.firestore_events import FirestoreTriggerEvents
        from shared.adapters.gcp.firestore_rate_limit import FirestoreRateLimiter

        # Built on first use: status never queues, and only upload counts uploads.
        return Backend(
            queue=deferred(lambda: CloudTasksQueue(settings)),
            events=FirestoreTriggerEvents(),
            fetch_limiter=ProcessFetchLimiter(fetch.max_concurrent, fetch.max_per_host),
            upload_rate=deferred(lambda: FirestoreRateLimiter(db, "upload")),
        )
    if settings.task_backend == "celery":
        import redis

        from shared.adapters.local.celery_queue import CeleryTaskQueue, make_celery
        from shared.adapters.local.redis_limits import RedisFetchLimiter, RedisRateLimiter

        client = redis.Redis.from_url(settings.redis_url)
        queue = CeleryTaskQueue(make_celery(settings), client)
        return Backend(
            queue=queue,
            events=queue,
            fetch_limiter=RedisFetchLimiter(
                client,
                max_concurrent=fetch.max_concurrent,
                max_per_host=fetch.max_per_host,
                lease_seconds=fetch.total_timeout + SLOT_LEASE_MARGIN,
            ),
            upload_rate=RedisRateLimiter(client, "upload"),
        )
    raise ConfigError(f"unknown task backend {settings.task_backend!r}")


def _warn_about_access(settings: Settings) -> None:
    if settings.open_access:
        log.warning("API_KEYS is not set: the API is open to anyone who can reach it")
    elif not settings.api_keys:
        log.error("API_KEYS is not set: every /upload and /status call will be refused (401)")


@functools.cache
def instance_services() -> Services:
    """One Services per process, built on first use (a Cloud Function instance's cold start
    pays for it once, at its first request, not at import), after logging is set up for
    where it runs."""
    from shared import logs

    settings = Settings.from_env()
    logs.configure(settings)
    return build_services(settings)


def build_services(settings: Settings | None = None, *, ensure_buckets: bool = False) -> Services:
    from shared.adapters.gcp.firestore_store import (
        FirestoreDeliveries,
        FirestoreImages,
        FirestoreRequests,
    )
    from shared.adapters.gcp.firestore_upload_keys import FirestoreUploadKeys

    settings = settings or Settings.from_env()
    clock = SystemClock()
    db = _firestore_client(settings)
    blobs = build_blob_store(settings)
    if ensure_buckets:
        blobs.ensure_buckets()
    backend = build_backend(settings, db)
    if not settings.webhook_secrets:
        log.warning("WEBHOOK_SECRET is not set: webhooks will be sent unsigned")
    _warn_about_access(settings)
    guard = deferred(lambda: _address_guard(settings))
    return Services(
        settings=settings,
        requests=FirestoreRequests(db, clock),
        images=FirestoreImages(db, clock),
        deliveries=FirestoreDeliveries(db),
        blobs=blobs,
        # The safe HTTP client (urllib3) only where images are fetched or webhooks sent.
        fetcher=deferred(lambda: _image_fetcher(settings, guard)),
        codec=build_codec(settings.limits),
        queue=backend.queue,
        events=backend.events,
        webhooks=deferred(lambda: _webhook_transport(settings, guard)),
        webhook_guard=guard,
        clock=clock,
        fetch_limiter=backend.fetch_limiter,
        upload_rate=backend.upload_rate,
        upload_keys=FirestoreUploadKeys(db),
    )


def _address_guard(settings: Settings) -> AddressGuard:
    from shared.adapters.egress.address_guard import AddressGuard, no_lookups

    return AddressGuard(
        settings.fetch.allowed_networks,
        resolver=no_lookups if settings.fetch.dns == "off" else None,
    )


def _image_fetcher(settings: Settings, guard: AddressGuard) -> ImageFetcher:
    from shared.adapters.egress.safe_http import HttpImageFetcher

    return HttpImageFetcher(settings.fetch, settings.limits, guard)


def _webhook_transport(settings: Settings, guard: AddressGuard) -> WebhookTransport:
    from shared.adapters.egress.safe_http import HttpWebhookTransport

    return HttpWebhookTransport(settings.fetch, settings.webhook_timeout, guard)
