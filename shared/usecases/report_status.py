"""Report where a request stands, with per-image details on request."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from shared.domain.model import (
    ByteTotals,
    ImageRecord,
    ImageState,
    Progress,
    RequestRecord,
    WebhookDelivery,
)
from shared.usecases.services import Services

MAX_PAGE = 500
DEFAULT_PAGE = 100


class UnknownRequest(LookupError):
    pass


@dataclass(frozen=True)
class ImagePage:
    images: list[ImageRecord]
    next_after: str | None


@dataclass(frozen=True)
class StatusReport:
    request: RequestRecord
    progress: Progress
    updated_at: datetime
    webhook: WebhookDelivery | None = None
    details: ImagePage | None = None
    bytes: ByteTotals | None = None


def visible_request(services: Services, request_id: str, owner: str | None) -> RequestRecord:
    """The request, if `owner` may see it; UnknownRequest otherwise."""
    request = services.requests.get(request_id)
    # Someone else's request is reported as unknown: its existence is not ours to reveal. The
    # owner must match exactly: a request made without a key (open access) is not visible to a
    # key holder once keys are turned on, nor a key holder's request to an anonymous caller.
    if request is None or request.owner != owner:
        raise UnknownRequest(request_id)
    return request


def report_status(
    services: Services,
    request_id: str,
    *,
    details: bool = False,
    after: str | None = None,
    page_size: int = DEFAULT_PAGE,
    owner: str | None = None,
    state: ImageState | None = None,
) -> StatusReport:
    """`state` narrows the details to the images in that state (the 30 failed ones among
    30,000), still in input order and paginated the same way."""
    request = visible_request(services, request_id, owner)
    updated_at = request.updated_at
    tally = None
    if request.final_progress is not None:
        progress = request.final_progress
    else:
        tally = services.images.tally(request_id, request.tally_shards)
        progress = tally.progress(request.total_images)
        if tally.updated_at is not None and tally.updated_at > updated_at:
            updated_at = tally.updated_at
    page = None
    webhook = None
    totals = None
    if details:
        size = max(1, min(page_size, MAX_PAGE))
        images = services.images.page(request_id, after=after, limit=size, state=state)
        page = ImagePage(
            _with_fresh_urls(services, images), images[-1].image_id if len(images) == size else None
        )
        webhook = services.deliveries.get(request_id)
        totals = (tally or services.images.tally(request_id, request.tally_shards)).bytes
    if request.output_path:
        # The URL stored at completion may be a signed one near its end: every read gets a
        # URL minted now, from where the CSV is stored.
        request = replace(request, csv_url=services.blobs.url_of(request.output_path))
    return StatusReport(request, progress, updated_at, webhook, page, totals)


def _with_fresh_urls(services: Services, images: list[ImageRecord]) -> list[ImageRecord]:
    stored = [image for image in images if image.output_path]
    urls = dict(
        zip(
            (image.image_id for image in stored),
            services.blobs.urls_of([image.output_path or "" for image in stored]),
            strict=True,
        )
    )
    return [
        replace(image, output_url=urls[image.image_id]) if image.image_id in urls else image
        for image in images
    ]
