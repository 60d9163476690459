"""The Cloud Storage adapter against gcp-storage-emulator."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.oauth2 import service_account

from shared.adapters.gcp.gcs_blobs import GcsBlobStore
from shared.config import Settings
from shared.ports import BlobMissing

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def blobs(settings: Settings) -> GcsBlobStore:
    client = storage.Client(project=settings.project, credentials=AnonymousCredentials())
    return GcsBlobStore(
        client,
        uploads_bucket=settings.uploads_bucket,
        outputs_bucket=settings.outputs_bucket,
        emulator_host=settings.storage_emulator_host,
    )


def test_an_upload_reads_back_byte_for_byte(blobs: GcsBlobStore) -> None:
    data = "\ufeffS. No.,Product Name\r\n1,Chäir\r\n".encode()
    blobs.put_upload("uploads/t1/input.csv", data, "text/csv")
    assert blobs.get_upload("uploads/t1/input.csv") == data


def test_a_missing_upload_is_reported_as_missing(blobs: GcsBlobStore) -> None:
    with pytest.raises(BlobMissing):
        blobs.get_upload("uploads/nothing-here/input.csv")


def test_an_output_url_is_fetchable_by_a_plain_get(blobs: GcsBlobStore) -> None:
    url = blobs.put_output("outputs/t2/7 a-1.jpg", b"\xff\xd8jpeg bytes", "image/jpeg")
    assert "/outputs/t2/7%20a-1.jpg" in url
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.content == b"\xff\xd8jpeg bytes"
    assert response.headers["Content-Type"].startswith("image/jpeg")


def test_a_removed_output_is_gone_and_removing_it_again_is_harmless(blobs: GcsBlobStore) -> None:
    url = blobs.put_output("outputs/t4/1-1.jpg", b"\xff\xd8jpeg bytes", "image/jpeg")
    kept = blobs.put_output("outputs/t4/2-1.jpg", b"\xff\xd8other bytes", "image/jpeg")
    blobs.delete_output("outputs/t4/1-1.jpg")
    assert requests.get(url, timeout=10).status_code == 404
    assert requests.get(kept, timeout=10).status_code == 200  # only that object
    blobs.delete_output("outputs/t4/1-1.jpg")  # gone already: nothing happens


def test_uploads_are_not_in_the_public_bucket(blobs: GcsBlobStore, settings: Settings) -> None:
    blobs.put_upload("uploads/t3/input.csv", b"secret,csv", "text/csv")
    public = f"{settings.storage_emulator_host}/{settings.outputs_bucket}/uploads/t3/input.csv"
    assert requests.get(public, timeout=10).status_code == 404


def test_signed_mode_gives_v4_signed_urls_for_the_configured_lifetime(settings: Settings) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    credentials = service_account.Credentials.from_service_account_info(
        {
            "type": "service_account",
            "client_email": "signer@demo-imgsvc.iam.gserviceaccount.com",
            "private_key": pem,
            "token_uri": "https://oauth2.googleapis.com/token",
            "project_id": "demo-imgsvc",
        }
    )
    client = storage.Client(project="demo-imgsvc", credentials=credentials)
    store = GcsBlobStore(
        client,
        uploads_bucket="u",
        outputs_bucket="imgsvc-outputs",
        url_mode="signed",
        signed_url_ttl=3600,
    )
    url = store.url_of("outputs/r/1-1.jpg")
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.path == "/imgsvc-outputs/outputs/r/1-1.jpg"
    assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"]
    assert query["X-Goog-Expires"] == ["3600"]
    assert query["X-Goog-Credential"][0].startswith("signer@demo-imgsvc.iam.gserviceaccount.com/")
    assert len(query["X-Goog-Signature"][0]) == 512  # 2048-bit RSA, hex
    signed_at = datetime.strptime(query["X-Goog-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - signed_at).total_seconds()) < 60
