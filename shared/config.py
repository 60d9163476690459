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
    max_url_length: int = 2048
    max_image_bytes: int = 25 * 1024 * 1024
    max_image_pixels: int = 50_000_000


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
    gateway_port: int = 8000
    public_base_url: str | None = None
    log_level: str = "INFO"

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

        def size(name: str, default: int) -> int:
            value = get(name)
            return _size(value) if value is not None else default

        d = cls()
        limits = Limits(
            max_upload_bytes=size("MAX_UPLOAD_BYTES", d.limits.max_upload_bytes),
            max_rows=int(num("MAX_ROWS", d.limits.max_rows)),
            max_urls_per_row=int(num("MAX_URLS_PER_ROW", d.limits.max_urls_per_row)),
            max_url_length=int(num("MAX_URL_LENGTH", d.limits.max_url_length)),
            max_image_bytes=size("MAX_IMAGE_BYTES", d.limits.max_image_bytes),
            max_image_pixels=int(num("MAX_IMAGE_PIXELS", d.limits.max_image_pixels)),
        )
        fetch = FetchPolicy(
            allowed_networks=parse_networks(get("FETCH_ALLOWED_NETWORKS", "") or ""),
            connect_timeout=duration("FETCH_CONNECT_TIMEOUT", d.fetch.connect_timeout),
            total_timeout=duration("FETCH_TOTAL_TIMEOUT", d.fetch.total_timeout),
            max_redirects=int(num("FETCH_MAX_REDIRECTS", d.fetch.max_redirects)),
            retries=int(num("FETCH_RETRIES", d.fetch.retries)),
            retry_backoff=duration("FETCH_RETRY_BACKOFF", d.fetch.retry_backoff),
        )
        schedule = get("WEBHOOK_RETRY_SCHEDULE")
        secrets = tuple((get("WEBHOOK_SECRET", "") or "").split())
        if any(not secret.startswith("whsec_") for secret in secrets):
            raise ConfigError("WEBHOOK_SECRET must look like whsec_<base64> (space-separated)")
        mode = get("OUTPUT_URL_MODE", d.output_url_mode) or d.output_url_mode
        if mode not in ("public", "signed"):
            raise ConfigError("OUTPUT_URL_MODE must be 'public' or 'signed'")
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
            signed_url_ttl=duration("SIGNED_URL_TTL", d.signed_url_ttl),
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
            gateway_port=int(num("GATEWAY_PORT", d.gateway_port)),
            public_base_url=get("PUBLIC_BASE_URL"),
            log_level=get("LOG_LEVEL", d.log_level) or d.log_level,
        )
