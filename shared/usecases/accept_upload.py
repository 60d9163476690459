"""Accept an upload: validate, keep the CSV, record the request, fan out. Answers at once."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from shared import logs
from shared.domain.blob_layout import upload_path
from shared.domain.csv_table import parse_product_csv
from shared.domain.errors import ImageFailure
from shared.domain.model import RequestRecord, RequestStatus, new_request_id
from shared.domain.tally import shard_count
from shared.usecases.fan_out import queue_slices
from shared.usecases.finalize_request import fail_request
from shared.usecases.services import Services

log = logging.getLogger(__name__)


class UploadRejected(Exception):
    """The upload is refused for a reason other than the CSV's content."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class FanOutFailed(Exception):
    """The request was recorded but its work could not be queued; it is marked failed."""


@dataclass(frozen=True)
class Accepted:
    request_id: str
    total_rows: int
    total_images: int


def effective_webhook(services: Services, webhook_url: str | None) -> str | None:
    return webhook_url or services.settings.default_webhook_url


def accept_upload(
    services: Services,
    csv_bytes: bytes,
    *,
    webhook_url: str | None = None,
    owner: str | None = None,
    request_id: str | None = None,
) -> Accepted:
    """Raises CsvInvalid (every problem listed) or UploadRejected; nothing is stored then.

    `request_id`: the id to record it under (an idempotent upload picks it before)."""
    limits = services.settings.limits
    table = parse_product_csv(csv_bytes, limits)
    if table.url_count > limits.max_images_per_request:
        raise UploadRejected(
            "too_many_images",
            f"the CSV names {table.url_count:,} images; a request may hold at most "
            f"{limits.max_images_per_request:,} (split it into several uploads)",
        )
    webhook = effective_webhook(services, webhook_url)
    if webhook:
        try:
            services.webhook_guard.check_url(webhook)
        except ImageFailure as failure:
            raise UploadRejected(
                "invalid_webhook_url", f"webhook_url cannot be used: {failure.message}"
            ) from failure

    request_id = request_id or new_request_id()
    logs.annotate(request_id=request_id)
    now = services.clock.now()
    path = upload_path(request_id)
    services.blobs.put_upload(path, csv_bytes, "text/csv")
    services.requests.create(
        RequestRecord(
            request_id=request_id,
            status=RequestStatus.IN_PROGRESS,
            total_images=table.url_count,
            total_rows=len(table.rows),
            input_path=path,
            created_at=now,
            updated_at=now,
            webhook_url=webhook,
            owner=owner,
            # If every message about it is lost, the sweeper still finds it then.
            sweep_at=now + timedelta(seconds=services.settings.stall_after),
            tally_shards=shard_count(table.url_count),
        )
    )
    try:
        queue_slices(services, request_id, table)
    except Exception as exc:
        # Nothing will ever process this request: say so instead of leaving it "in progress".
        log.exception("fan-out of %s failed", request_id)
        fail_request(services, request_id, "fan_out_failed", "the work could not be queued")
        raise FanOutFailed(request_id) from exc
    log.info("accepted %s: %d rows, %d images", request_id, len(table.rows), table.url_count)
    return Accepted(request_id, len(table.rows), table.url_count)
