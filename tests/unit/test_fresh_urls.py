"""Output URLs that keep working: the status API mints each URL it shows when asked, from
where the file is stored, instead of replaying the one stored at processing time; the webhook
says when its signed CSV URL dies."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from shared.config import Settings
from shared.domain import webhook
from shared.domain.model import RequestStatus
from shared.usecases.accept_upload import accept_upload
from shared.usecases.report_status import report_status
from tests.fakes import FakeBlobs, FakeWorld, fake_world, run_queue

CSV = (
    b"Serial Number,Product Name,Input Image Urls\r\n"
    b'1,Chair,"https://img.test/a.jpg,https://img.test/b.jpg"\r\n'
)
SIGNED = (
    "https://storage.googleapis.com/b/outputs/r/output.csv?X-Goog-Algorithm=GOOG4-RSA-SHA256"
    "&X-Goog-Credential=sa%40p.iam.gserviceaccount.com%2F20261201%2Fauto%2Fstorage%2Fgoog4_request"
    "&X-Goog-Date=20261201T101500Z&X-Goog-Expires=604800&X-Goog-SignedHeaders=host"
    "&X-Goog-Signature=ab12"
)


class MintingBlobs(FakeBlobs):
    """Each URL asked for is a new one, as a signed URL minted at that moment would be."""

    def __init__(self) -> None:
        super().__init__()
        self._minted = itertools.count(1)

    def url_of(self, path: str) -> str:
        return f"https://storage.test/out/{path}?minted={next(self._minted)}"

    def urls_of(self, paths: Sequence[str]) -> list[str]:
        return [self.url_of(path) for path in paths]


def completed() -> tuple[FakeWorld, str]:
    w = fake_world(Settings())
    w.services.blobs = w.blobs = MintingBlobs()
    for name in "ab":
        w.fetcher.answers[f"https://img.test/{name}.jpg"] = name.encode()
    request_id = accept_upload(w.services, CSV).request_id
    run_queue(w)
    return w, request_id


def test_each_status_read_gets_urls_minted_then_not_the_stored_ones() -> None:
    w, request_id = completed()
    stored = w.requests.get(request_id)
    assert stored is not None and stored.status is RequestStatus.COMPLETED

    first = report_status(w.services, request_id, details=True)
    second = report_status(w.services, request_id, details=True)

    urls = {first.request.csv_url, second.request.csv_url, stored.csv_url}
    assert len(urls) == 3  # two reads, two fresh URLs, neither the one stored at completion
    assert all(
        url and url.startswith(f"https://storage.test/out/{stored.output_path}?") for url in urls
    )
    assert first.details is not None and second.details is not None
    for before, after in zip(first.details.images, second.details.images, strict=True):
        assert before.output_url != after.output_url
        assert (after.output_url or "").startswith(f"https://storage.test/out/{after.output_path}?")


def test_a_pending_or_failed_image_gets_no_url() -> None:
    w = fake_world(Settings())
    w.services.blobs = w.blobs = MintingBlobs()
    w.fetcher.answers["https://img.test/a.jpg"] = b"a"
    w.fetcher.answers["https://img.test/b.jpg"] = b"broken"
    request_id = accept_upload(w.services, CSV).request_id
    run_queue(w)
    report = report_status(w.services, request_id, details=True)
    assert report.details is not None
    good, bad = report.details.images
    assert good.output_url and bad.output_url is None and bad.output_path is None


def test_the_webhook_says_when_a_signed_csv_url_dies() -> None:
    body = webhook.payload("r", RequestStatus.COMPLETED, SIGNED)
    assert body["csv_url_expires_at"] == "2026-12-08T10:15:00Z"  # signed + 7 days
    public = webhook.payload("r", RequestStatus.COMPLETED, "https://storage.test/o.csv")
    assert "csv_url_expires_at" not in public  # a public URL does not expire
