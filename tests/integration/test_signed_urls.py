"""OUTPUT_URL_MODE=signed against the Storage emulator: every URL is a V4 signature of the
configured key that verifies as Cloud Storage would check it, fetchable by a plain GET, and
saying itself when it dies."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from cryptography.exceptions import InvalidSignature

from shared.bootstrap import build_blob_store
from shared.config import ConfigError, Settings
from shared.domain import signed_url
from tests.v4_signature import ServiceAccount, throwaway_service_account, verify_v4

pytestmark = pytest.mark.integration

SIGNER = "imgsvc-worker@demo-imgsvc.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> ServiceAccount:
    return throwaway_service_account(tmp_path_factory.mktemp("signer"), SIGNER)


def signed_settings(settings: Settings, signer: ServiceAccount, ttl: float = 3600) -> Settings:
    return Settings.from_env(
        {
            "GOOGLE_CLOUD_PROJECT": settings.project,
            "UPLOADS_BUCKET": settings.uploads_bucket,
            "OUTPUTS_BUCKET": settings.outputs_bucket,
            "STORAGE_EMULATOR_HOST": settings.storage_emulator_host or "",
            "OUTPUT_URL_MODE": "signed",
            "SIGNED_URL_TTL": f"{ttl:g}s",
            "GOOGLE_APPLICATION_CREDENTIALS": str(signer.key_file),
        }
    )


def test_a_stored_output_gets_a_verifiable_signed_url_that_fetches_it(
    settings: Settings, signer: ServiceAccount
) -> None:
    blobs = build_blob_store(signed_settings(settings, signer))

    url = blobs.put_output("outputs/signed-1/7 a-1.jpg", b"\xff\xd8signed", "image/jpeg")

    signed = verify_v4(url, signer.public_key)
    assert signed.signer == SIGNER
    assert signed.expires_at - signed.signed_at == timedelta(hours=1)
    assert signed_url.expires_at(url) == signed.expires_at
    assert url.startswith(f"{settings.storage_emulator_host}/{settings.outputs_bucket}/")
    response = requests.get(url, timeout=10)
    assert (response.status_code, response.content) == (200, b"\xff\xd8signed")


def test_a_tampered_url_does_not_verify(settings: Settings, signer: ServiceAccount) -> None:
    url = build_blob_store(signed_settings(settings, signer)).url_of("outputs/signed-2/a-1.jpg")
    verify_v4(url, signer.public_key)
    with pytest.raises(InvalidSignature):
        verify_v4(url.replace("signed-2", "signed-3"), signer.public_key)
    with pytest.raises(InvalidSignature):
        verify_v4(url.replace("X-Goog-Expires=3600", "X-Goog-Expires=604800"), signer.public_key)


def test_urls_minted_later_live_until_later(settings: Settings, signer: ServiceAccount) -> None:
    blobs = build_blob_store(signed_settings(settings, signer, ttl=600))
    paths = [f"outputs/signed-4/{n}-1.jpg" for n in range(3)]
    first = blobs.urls_of(paths)
    time.sleep(1.1)  # X-Goog-Date counts whole seconds
    second = blobs.urls_of(paths)

    for path, before, after in zip(paths, first, second, strict=True):
        assert path.split("/")[-1] in before
        earlier, later = verify_v4(before, signer.public_key), verify_v4(after, signer.public_key)
        assert later.expires_at > earlier.expires_at
        assert later.expires_at - later.signed_at == timedelta(minutes=10)


def test_signing_against_the_emulator_needs_a_key_file(settings: Settings) -> None:
    keyless = Settings.from_env(
        {"STORAGE_EMULATOR_HOST": settings.storage_emulator_host or "", "OUTPUT_URL_MODE": "signed"}
    )
    with pytest.raises(ConfigError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        build_blob_store(keyless)


@pytest.mark.parametrize("ttl", ["8d", "0s"])
def test_a_lifetime_cloud_storage_would_refuse_is_a_configuration_error(ttl: str) -> None:
    with pytest.raises(ConfigError, match="SIGNED_URL_TTL"):
        Settings.from_env({"SIGNED_URL_TTL": ttl})


def test_the_key_file_path_is_read_from_the_standard_variable(tmp_path: Path) -> None:
    settings = Settings.from_env({"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "k.json")})
    assert settings.signing_key_file == str(tmp_path / "k.json")
