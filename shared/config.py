"""Every setting of the service, read from the environment in one place.

The table in README.md ("Configuration") mirrors this file; keep them together.
Defaults are the safe ones: production leaves FETCH_ALLOWED_NETWORKS empty, so nothing on a
private network can be fetched; the local profile sets it to loopback explicitly.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.domain import signed_url, webhook

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(ValueError):
    pass


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(text: str) -> float:
    """'5s', '30m', '2h', '250ms' or a bare number of seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"not a duration: {text!r} (use e.g. 5s, 5m, 2h)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    networks = []
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError as exc:
            raise ConfigError(f"FETCH_ALLOWED_NETWORKS: {part!r} is not a CIDR") from exc
    return tuple(networks)


_KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def parse_api_keys(text: str) -> tuple[tuple[str, str], ...]:
    """API_KEYS: comma-separated `<key_id>:<sha256 hex of the key>`. Only digests are ever
    configured; the keys themselves are shown once, by `python -m local_profile.apikeys new`."""
    entries: list[tuple[str, str]] = []
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        key_id, _, digest = part.partition(":")
        key_id, digest = key_id.strip(), digest.strip().lower()
        if not _KEY_ID.match(key_id) or not _SHA256_HEX.match(digest):
            # The entry is not repeated: a key pasted here by mistake must not reach a log.
            raise ConfigError(
                "API_KEYS entries look like <key_id>:<64 hex digits of sha256(key)>; "
                f"entry {len(entries) + 1} does not"
            )
        entries.append((key_id, digest))
    return tuple(entries)


def parse_rate(text: str) -> tuple[int, float] | None:
    """'30/1m' -> (30, 60.0); 'off' or '0' -> None (no limit)."""
    value = text.strip().lower()
    if value in ("off", "0", "none"):
        return None
    count, _, window = value.partition("/")
    try:
        limit = int(count)
        seconds = parse_duration(window)
    except (ValueError, ConfigError) as exc:
        raise ConfigError(f"not a rate: {text!r} (use e.g. 30/1m, or off)") from exc
    if limit < 1 or seconds <= 0:
        raise ConfigError(f"not a rate: {text!r} (use e.g. 30/1m, or off)")
    return limit, seconds


def _size(text: str) -> int:
    match = re.match(r"^\s*(\d+)\s*([kKmMgG]?)[bB]?\s*$", text)
    if not match:
        raise ConfigError(f"not a size: {text!r} (use e.g. 25MB)")
    factor = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2).lower()]
    return int(match.group(1)) * factor


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 30 * 1024 * 1024
    max_rows: int = 100_000
    max_urls_per_row: int = 20
    # Images in one request, all rows together: 100,000 rows of 20 URLs would be 2,000,000,
    # more than one request should hold (docs/scaling.md).
    max_images_per_request: int = 100_000
    max_url_length: int = 2048
    max_image_bytes: int = 25 * 1024 * 1024
    max_image_pixels: int = 50_000_000
    # Scans per JPEG, counted from the markers before decoding (scan bombs: each scan is a
    # pass over the whole picture; real progressive files have about ten).
    max_jpeg_scans: int = 100
    # Pictures with real transparency are written as WebP with alpha up to this many pixels;
    # libwebp needs about 18 bytes a pixel for them (900 MB at 50 MP), so larger ones are
    # flattened onto white into a JPEG (about 7 bytes a pixel, decoded RGBA included).
    max_transparent_pixels: int = 16_000_000
    # Optimal Huffman tables for every JPEG written: about 6% fewer bytes on photographs, no
    # pixel changed, for a second entropy pass (the DCT path fell below 1.7x Pillow-naive's
    # throughput with it in make bench: BENCHMARKS.md). Off unless OPTIMAL_HUFFMAN_TABLES=1.
    optimal_huffman_tables: bool = False


@dataclass(frozen=True)
class FetchPolicy:
    allowed_networks: tuple[IPNetwork, ...] = ()
    connect_timeout: float = 5.0
    total_timeout: float = 30.0
    max_redirects: int = 5
    # Quick retries inside one attempt (connection reset, a 503 blip); longer outages are
    # left to the task queue's retry with backoff.
    retries: int = 2
    retry_backoff: float = 0.5
    user_agent: str = "imgsvc/1.0 (+https://github.com/imgsvc)"
    # Fetches in progress at once, over all workers and per host of the input URL (a stranger's
    # CSV of 100,000 URLs on one host must not turn the service into a flood against it).
    max_concurrent: int = 32
    max_per_host: int = 6
    # "system" resolves names with getaddrinfo; "off" accepts IP literals only, every name is a
    # dns_failure: the test stacks run so, and so can never send a DNS query.
    dns: str = "system"


@dataclass(frozen=True)
class Settings:
    project: str = "demo-imgsvc"
    uploads_bucket: str = "imgsvc-uploads"
    outputs_bucket: str = "imgsvc-outputs"
    firestore_emulator_host: str | None = None
    storage_emulator_host: str | None = None
    # "public" (object URL, bucket readable by allUsers) or "signed" (V4 signed URLs).
    output_url_mode: str = "public"
    signed_url_ttl: float = 7 * 86400
    # A service-account key file (GOOGLE_APPLICATION_CREDENTIALS) to sign URLs with where the
    # Storage client cannot: against the emulator. Production signs through IAM instead.
    signing_key_file: str | None = None
    limits: Limits = field(default_factory=Limits)
    fetch: FetchPolicy = field(default_factory=FetchPolicy)
    # How many times one image is tried before it fails for good (transient errors only).
    image_max_attempts: int = 5
    # Several secrets (space-separated in WEBHOOK_SECRET) sign every message at once, so a
    # receiver can move to a new secret before the old one is retired.
    webhook_secrets: tuple[str, ...] = ()
    default_webhook_url: str | None = None
    webhook_retry_schedule: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000)
    webhook_timeout: float = 10.0
    # "celery" (local profile) or "cloudtasks" (production)
    task_backend: str = "celery"
    redis_url: str = "redis://127.0.0.1:6379/0"
    cloud_tasks_location: str = "us-central1"
    cloud_tasks_queue: str = "images"
    cloud_tasks_fanout_queue: str = "fan-out"
    cloud_tasks_webhook_queue: str = "webhooks"
    cloud_tasks_emulator_host: str | None = None
    process_image_url: str | None = None
    finalize_url: str | None = None
    tasks_service_account: str | None = None
    # Celery (local profile): a task held by a worker that died is handed out again after the
    # visibility timeout; kombu looks for such tasks every restore interval. Short enough that
    # a dead worker's tasks come back within the 2-minute promise (docs/decisions.md), long
    # enough that no task runs past it (a copy of one that does is harmless: all idempotent).
    celery_visibility_timeout: float = 60.0
    celery_restore_interval: float = 10.0
    # The sweeper (shared/usecases/sweep.py): a request in progress whose images have not
    # changed for `stall_after` is re-driven from Firestore; a hint (an image retry, a webhook
    # attempt) overdue by `sweep_grace` counts as lost. It runs every `sweep_interval` (the
    # local ticker; in production Cloud Scheduler's job each minute, which asks for one more
    # sweep half a minute later: deploy.sh).
    stall_after: float = 60.0
    sweep_grace: float = 30.0
    sweep_interval: float = 30.0
    # A local worker with tasks waiting that has begun none for this long is restarted by its
    # supervisor (every task ends within a fetch's deadline and a compression).
    worker_stuck_after: float = 120.0
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    gateway_threads: int = 8
    log_level: str = "INFO"
    # "json" (one object per line, as Cloud Logging reads it), "text", or "auto": JSON where
    # Cloud Run says it runs the process (K_SERVICE), text elsewhere. See shared/logs.py.
    log_format: str = "auto"
    # (key_id, sha256 hex) pairs from API_KEYS; empty means open access where that is allowed
    # (see `open_access`).
    api_keys: tuple[tuple[str, str], ...] = ()
    # Uploads per key per window (UPLOAD_RATE_LIMIT, e.g. 30/1m); None: no limit.
    upload_rate_limit: tuple[int, float] | None = (30, 60.0)

    @property
    def open_access(self) -> bool:
        """No key needed: only with no API_KEYS configured *and* the Firestore emulator, i.e.
        on a developer's machine. Against real Firestore a missing API_KEYS locks every caller
        out rather than opening the service to the internet."""
        return not self.api_keys and self.firestore_emulator_host is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str, default: str | None = None) -> str | None:
            value = env.get(name)
            return value if value not in (None, "") else default

        def num(name: str, default: float) -> float:
            value = get(name)
            try:
                return float(value) if value is not None else default
            except ValueError as exc:
                raise ConfigError(f"{name} must be a number, got {value!r}") from exc

        def duration(name: str, default: float) -> float:
            value = get(name)
            return parse_duration(value) if value is not None else default

        def flag(name: str, default: bool) -> bool:
            value = (get(name) or "").strip().lower()
            if not value:
                return default
            if value not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ConfigError(f"{name} must be 1 or 0 (true or false), got {value!r}")
            return value in ("1", "true", "yes", "on")

        def size(name: str, default: int) -> int:
            value = get(name)
            return _size(value) if value is not None else default

        d = cls()
        limits = Limits(
            max_upload_bytes=size("MAX_UPLOAD_BYTES", d.limits.max_upload_bytes),
            max_rows=int(num("MAX_ROWS", d.limits.max_rows)),
            max_urls_per_row=int(num("MAX_URLS_PER_ROW", d.limits.max_urls_per_row)),
            max_images_per_request=int(
                num("MAX_IMAGES_PER_REQUEST", d.limits.max_images_per_request)
            ),
            max_url_length=int(num("MAX_URL_LENGTH", d.limits.max_url_length)),
            max_image_bytes=size("MAX_IMAGE_BYTES", d.limits.max_image_bytes),
            max_image_pixels=int(num("MAX_IMAGE_PIXELS", d.limits.max_image_pixels)),
            max_jpeg_scans=int(num("MAX_JPEG_SCANS", d.limits.max_jpeg_scans)),
            max_transparent_pixels=int(
                num("MAX_TRANSPARENT_PIXELS", d.limits.max_transparent_pixels)
            ),
            optimal_huffman_tables=flag("OPTIMAL_HUFFMAN_TABLES", d.limits.optimal_huffman_tables),
        )
        if limits.max_jpeg_scans < 1:
            raise ConfigError("MAX_JPEG_SCANS must be at least 1")
        fetch = FetchPolicy(
            allowed_networks=parse_networks(get("FETCH_ALLOWED_NETWORKS", "") or ""),
            connect_timeout=duration("FETCH_CONNECT_TIMEOUT", d.fetch.connect_timeout),
            total_timeout=duration("FETCH_TOTAL_TIMEOUT", d.fetch.total_timeout),
            max_redirects=int(num("FETCH_MAX_REDIRECTS", d.fetch.max_redirects)),
            retries=int(num("FETCH_RETRIES", d.fetch.retries)),
            retry_backoff=duration("FETCH_RETRY_BACKOFF", d.fetch.retry_backoff),
            max_concurrent=int(num("FETCH_MAX_CONCURRENT", d.fetch.max_concurrent)),
            max_per_host=int(num("FETCH_MAX_PER_HOST", d.fetch.max_per_host)),
            dns=(get("FETCH_DNS", d.fetch.dns) or d.fetch.dns).lower(),
        )
        if fetch.dns not in ("system", "off"):
            raise ConfigError("FETCH_DNS must be 'system' or 'off'")
        if fetch.max_concurrent < 1 or fetch.max_per_host < 1:
            raise ConfigError("FETCH_MAX_CONCURRENT and FETCH_MAX_PER_HOST must be at least 1")
        rate = get("UPLOAD_RATE_LIMIT")
        schedule = get("WEBHOOK_RETRY_SCHEDULE")
        secrets = tuple((get("WEBHOOK_SECRET", "") or "").split())
        if any(not secret.startswith(webhook.SECRET_PREFIX) for secret in secrets):
            raise ConfigError(
                f"WEBHOOK_SECRET must look like {webhook.SECRET_PREFIX}<base64> (space-separated)"
            )
        visibility = duration("CELERY_VISIBILITY_TIMEOUT", d.celery_visibility_timeout)
        mode = get("OUTPUT_URL_MODE", d.output_url_mode) or d.output_url_mode
        if mode not in ("public", "signed"):
            raise ConfigError("OUTPUT_URL_MODE must be 'public' or 'signed'")
        signed_url_ttl = duration("SIGNED_URL_TTL", d.signed_url_ttl)
        if not 1 <= signed_url_ttl <= signed_url.MAX_LIFETIME_SECONDS:
            # Cloud Storage refuses longer V4 signatures: every URL would be broken.
            raise ConfigError("SIGNED_URL_TTL must be between 1s and 7d")
        log_format = (get("LOG_FORMAT", d.log_format) or d.log_format).lower()
        if log_format not in ("auto", "json", "text"):
            raise ConfigError("LOG_FORMAT must be 'auto', 'json' or 'text'")
        backend = get("TASK_BACKEND", d.task_backend) or d.task_backend
        if backend not in ("celery", "cloudtasks"):
            raise ConfigError("TASK_BACKEND must be 'celery' or 'cloudtasks'")
        return cls(
            project=get("GOOGLE_CLOUD_PROJECT") or get("GCLOUD_PROJECT") or d.project,
            uploads_bucket=get("UPLOADS_BUCKET", d.uploads_bucket) or d.uploads_bucket,
            outputs_bucket=get("OUTPUTS_BUCKET", d.outputs_bucket) or d.outputs_bucket,
            firestore_emulator_host=get("FIRESTORE_EMULATOR_HOST"),
            storage_emulator_host=get("STORAGE_EMULATOR_HOST"),
            output_url_mode=mode,
            signed_url_ttl=signed_url_ttl,
            signing_key_file=get("GOOGLE_APPLICATION_CREDENTIALS"),
            limits=limits,
            fetch=fetch,
            image_max_attempts=int(num("IMAGE_MAX_ATTEMPTS", d.image_max_attempts)),
            webhook_secrets=secrets,
            default_webhook_url=get("DEFAULT_WEBHOOK_URL"),
            webhook_retry_schedule=(
                tuple(parse_duration(p) for p in schedule.split(",") if p.strip())
                if schedule is not None
                else d.webhook_retry_schedule
            ),
            webhook_timeout=duration("WEBHOOK_TIMEOUT", d.webhook_timeout),
            task_backend=backend,
            redis_url=get("REDIS_URL", d.redis_url) or d.redis_url,
            cloud_tasks_location=get("CLOUD_TASKS_LOCATION", d.cloud_tasks_location)
            or d.cloud_tasks_location,
            cloud_tasks_queue=get("CLOUD_TASKS_QUEUE", d.cloud_tasks_queue) or d.cloud_tasks_queue,
            cloud_tasks_fanout_queue=get("CLOUD_TASKS_FANOUT_QUEUE", d.cloud_tasks_fanout_queue)
            or d.cloud_tasks_fanout_queue,
            cloud_tasks_webhook_queue=get("CLOUD_TASKS_WEBHOOK_QUEUE", d.cloud_tasks_webhook_queue)
            or d.cloud_tasks_webhook_queue,
            cloud_tasks_emulator_host=get("CLOUD_TASKS_EMULATOR_HOST"),
            process_image_url=get("PROCESS_IMAGE_URL"),
            finalize_url=get("FINALIZE_URL"),
            tasks_service_account=get("TASKS_SERVICE_ACCOUNT"),
            celery_visibility_timeout=visibility,
            celery_restore_interval=duration("CELERY_RESTORE_INTERVAL", d.celery_restore_interval),
            stall_after=duration("STALL_AFTER", d.stall_after),
            sweep_grace=duration("SWEEP_GRACE", d.sweep_grace),
            sweep_interval=duration("SWEEP_INTERVAL", d.sweep_interval),
            worker_stuck_after=duration("WORKER_STUCK_AFTER", d.worker_stuck_after),
            gateway_host=get("GATEWAY_HOST", d.gateway_host) or d.gateway_host,
            gateway_port=int(num("GATEWAY_PORT", d.gateway_port)),
            gateway_threads=int(num("GATEWAY_THREADS", d.gateway_threads)),
            log_level=(get("LOG_LEVEL", d.log_level) or d.log_level).upper(),
            log_format=log_format,
            api_keys=parse_api_keys(get("API_KEYS", "") or ""),
            upload_rate_limit=parse_rate(rate) if rate is not None else d.upload_rate_limit,
        )
