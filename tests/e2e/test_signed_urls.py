"""OUTPUT_URL_MODE=signed on the local stack: a gateway that signs (with a throwaway service
account key, as the emulator cannot check signatures) mints a fresh V4 URL for the output CSV
and every output image on each status read, each verifying against the key, fetchable, and
living until later than the one read before."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import requests

from local_profile import sample_images
from local_profile.image_host import ImageHost
from local_profile.recipes import Stack
from shared.domain import signed_url
from shared.domain.times import iso
from tests.e2e.helpers import details, upload, wait_until_finished
from tests.v4_signature import ServiceAccount, throwaway_service_account, verify_v4

pytestmark = pytest.mark.e2e

SIGNER = "imgsvc-status@demo-imgsvc.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> ServiceAccount:
    return throwaway_service_account(tmp_path_factory.mktemp("signer"), SIGNER)


@pytest.fixture(scope="module")
def signing_gateway(live: Stack, signer: ServiceAccount) -> Iterator[str]:
    url = live.start_gateway(
        name="gateway-signed",
        extra_env={
            "OUTPUT_URL_MODE": "signed",
            "SIGNED_URL_TTL": "2h",
            "GOOGLE_APPLICATION_CREDENTIALS": str(signer.key_file),
        },
    )
    try:
        yield url
    finally:
        live.stop("gateway-signed")


def test_status_mints_fresh_signed_urls_on_every_read(
    gateway_url: str, signing_gateway: str, signer: ServiceAccount
) -> None:
    photos = {f"/s{i}.jpg": (sample_images.photo_jpeg(200, 150, 85, seed=i), "image/jpeg")
              for i in range(2)}  # fmt: skip
    with ImageHost(photos) as host:
        rows = "".join(f"{i},S{i},{host.url(f'/s{i}.jpg')}\n" for i in range(2))
        answer = upload(
            gateway_url, ("Serial Number,Product Name,Input Image Urls\n" + rows).encode()
        )
        request_id = answer.json()["request_id"]
        assert wait_until_finished(gateway_url, request_id)["status"] == "completed"

    reads = []
    for _ in range(2):
        reads.append(details(signing_gateway, request_id))
        time.sleep(1.1)  # X-Goog-Date counts whole seconds

    earlier, later = (verify_v4(read["csv_url"], signer.public_key) for read in reads)
    assert earlier.signer == later.signer == SIGNER
    assert later.expires_at > earlier.expires_at
    assert later.expires_at - later.signed_at == timedelta(hours=2)  # SIGNED_URL_TTL
    assert signed_url.expires_at(reads[1]["csv_url"]) == later.expires_at
    assert reads[1]["csv_url_expires_at"] == iso(later.expires_at)
    csv_text = requests.get(reads[1]["csv_url"], timeout=10).content.decode("utf-8-sig")
    assert csv_text.splitlines()[0].endswith("Output Image Urls")

    for before, after in zip(reads[0]["images"], reads[1]["images"], strict=True):
        first, second = (verify_v4(i["output_url"], signer.public_key) for i in (before, after))
        assert second.expires_at > first.expires_at
        assert after["output_url_expires_at"] == iso(second.expires_at)
        fetched = requests.get(after["output_url"], timeout=10)
        assert fetched.status_code == 200 and fetched.content[:3] == b"\xff\xd8\xff"

    # The public gateway of the same stack still hands out plain object URLs.
    public = details(gateway_url, request_id)
    assert "X-Goog-Signature" not in public["csv_url"] and "csv_url_expires_at" not in public
    assert all(image["output_url_expires_at"] is None for image in public["images"])
