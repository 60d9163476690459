"""Finalise a request once its last image has settled: output CSV, status, webhook.

Called whenever one of a request's tallies has counted its last image (the Firestore trigger on
the tallies in production, a Celery task locally), and by the sweeper, at least once and in any
order. The completion check is one query over the tallies; rendering is claimed with a lease,
so concurrent events render once and a finaliser that dies holding the claim blocks others only
until it expires; and the transition is a conditional write on the request document, so however
many calls race, exactly one writes `completed` and queues the one webhook message.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.domain import webhook
from shared.domain.blob_layout import output_csv_path
from shared.domain.csv_output import output_csv_chunks
from shared.domain.csv_table import ProductRow
from shared.domain.messages import DeliverWebhook
from shared.domain.model import (
    DeliveryState,
    ImageRecord,
    ImageState,
    Progress,
    RequestRecord,
    RequestStatus,
    WebhookDelivery,
    image_id,
)
from shared.usecases.services import Services
from shared.usecases.uploaded_csv import InputLost, uploaded_rows

log = logging.getLogger(__name__)

# How long a finaliser may hold the render before another may take over: a render of the
# largest request reads 100,000 image documents and writes the CSV, well within this.
RENDER_LEASE = 300.0
# Images read at a time while rendering, whatever the number of rows they take.
RENDER_BATCH = 1000


def on_shard_settled(services: Services, request_id: str) -> bool:
    """Returns True when this call finalised the request."""
    # Is any of the request's tallies still counting an unsettled image? One query over at
    # most 128 small documents, whatever the request's size; images not yet materialised count
    # as unsettled too, so no slice can be missed.
    if services.images.has_unsettled(request_id):
        return False
    request = services.requests.get(request_id)
    if request is None:
        log.warning("settled shard of unknown request %s", request_id)
        return False
    if request.status is not RequestStatus.IN_PROGRESS:
        _redispatch_webhook(services, request_id)
        return False
    return complete_request(services, request)


def complete_request(services: Services, request: RequestRecord) -> bool:
    now = services.clock.now()
    if request.render_holder and request.render_until and request.render_until > now:
        return False  # another finaliser is rendering; if it dies, the sweeper takes over
    holder = uuid.uuid4().hex
    claimed = services.requests.claim_render(
        request, holder=holder, until=now + timedelta(seconds=RENDER_LEASE)
    )
    if claimed is None:
        return False  # someone wrote the request meanwhile: a racer claimed it, or settled it
    request_id = request.request_id
    counts = _Counts()
    path = output_csv_path(request_id)
    try:
        with uploaded_rows(services, claimed) as (header, rows):
            merged = _with_outputs(services, request_id, rows)
            csv_url = services.blobs.put_output_stream(
                path, output_csv_chunks(header, _counted(merged, counts)), "text/csv; charset=utf-8"
            )
    except InputLost as lost:
        return fail_request(services, request_id, lost.code, lost.message, holder=holder)
    done, failed = counts.done, counts.failed
    settled = _settle(
        services,
        claimed,
        RequestStatus.COMPLETED,
        holder=holder,
        csv_url=csv_url,
        output_path=path,
        progress=Progress(total=request.total_images, done=done, failed=failed),
    )
    if settled:
        log.info("completed %s: %d done, %d failed", request_id, done, failed)
    return settled


def _with_outputs(
    services: Services, request_id: str, rows: Iterable[ProductRow]
) -> Iterator[tuple[ProductRow, list[ImageRecord]]]:
    """Each row with its images, a batch of rows at a time: a row names its images' ids (its
    index and each URL's position), so they are read by id and neither the rows nor the
    images are ever held whole. Reading by id rather than paging through the images in id
    order: a page of a query costs what a get does on Firestore, but the emulator scans the
    whole collection for each one (a second a page at 50,000 images, so a render of 100,000
    took over five minutes, longer than its lease; by id, 20 s)."""
    for batch in _batches(rows, RENDER_BATCH):
        ids = [_ids_of(row) for row in batch]
        found = services.images.get_many(request_id, [i for row_ids in ids for i in row_ids])
        by_id = {image.image_id: image for image in found}
        for row, row_ids in zip(batch, ids, strict=True):
            yield row, [by_id[i] for i in row_ids if i in by_id]


def _ids_of(row: ProductRow) -> list[str]:
    return [image_id(row.index, position) for position in range(len(row.urls))]


def _batches(rows: Iterable[ProductRow], images: int) -> Iterator[list[ProductRow]]:
    """Rows in batches of about `images` images (a row is never split)."""
    batch: list[ProductRow] = []
    count = 0
    for row in rows:
        batch.append(row)
        count += len(row.urls)
        if count >= images:
            yield batch
            batch, count = [], 0
    if batch:
        yield batch


@dataclass
class _Counts:
    done: int = 0
    failed: int = 0


def _counted(
    merged: Iterable[tuple[ProductRow, list[ImageRecord]]], counts: _Counts
) -> Iterator[tuple[ProductRow, list[str | None]]]:
    """Each row with one output slot per input URL (empty for a failed image), counting done
    and failed images into `counts` on the way."""
    for row, images in merged:
        slots: list[str | None] = [None] * len(row.urls)
        for image in images:
            if image.state is ImageState.DONE and image.position < len(slots):
                slots[image.position] = image.output_url
                counts.done += 1
            elif image.state is ImageState.FAILED:
                counts.failed += 1
        yield row, slots


def fail_request(
    services: Services, request_id: str, code: str, message: str, *, holder: str | None = None
) -> bool:
    """The request as a whole failed (not merely some images): no CSV, a `failed` webhook."""
    request = services.requests.get(request_id)
    if request is None:
        return False
    settled = _settle(
        services,
        request,
        RequestStatus.FAILED,
        holder=holder,
        progress=services.images.tally(request_id, request.tally_shards).progress(
            request.total_images
        ),
        error_code=code,
        error_message=message,
    )
    if settled:
        log.error("request %s failed: %s", request_id, message)
    return settled


def _settle(
    services: Services,
    request: RequestRecord,
    status: RequestStatus,
    *,
    holder: str | None,
    progress: Progress,
    csv_url: str | None = None,
    output_path: str | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
) -> bool:
    """Make the one transition out of `in progress`; only the caller that made it queues the
    webhook message, so however many race, one message goes out. If that message is lost
    (the caller dies before queueing it), the sweeper finds the delivery due: the request
    keeps a `sweep_at` until its webhook is delivered or given up."""
    delivery = _delivery(request, status, csv_url)
    settled = services.requests.settle(
        request.request_id,
        holder=holder,
        completed=status is RequestStatus.COMPLETED,
        csv_url=csv_url,
        output_path=output_path,
        progress=progress,
        delivery=delivery,
        sweep_at=_watch_delivery(services) if delivery is not None else None,
        error_code=error_code,
        error_message=error_message,
    )
    if settled and delivery is not None:
        services.queue.send([DeliverWebhook(request.request_id)])
    return settled


def _watch_delivery(services: Services) -> datetime:
    return services.clock.now() + timedelta(seconds=services.settings.sweep_grace)


def _delivery(
    request: RequestRecord, status: RequestStatus, csv_url: str | None
) -> WebhookDelivery | None:
    if not request.webhook_url:
        return None
    return WebhookDelivery(
        request_id=request.request_id,
        message_id=webhook.message_id(request.request_id),
        url=request.webhook_url,
        payload=webhook.payload(request.request_id, status, csv_url),
        state=DeliveryState.PENDING,
    )


def _redispatch_webhook(services: Services, request_id: str) -> None:
    # A repeated event for a settled request may mean the finaliser crashed between settling
    # and queueing the webhook. Queueing again is harmless: delivery claims each attempt.
    delivery = services.deliveries.get(request_id)
    if delivery is not None and delivery.state is DeliveryState.PENDING and not delivery.attempts:
        services.queue.send([DeliverWebhook(request_id)])
