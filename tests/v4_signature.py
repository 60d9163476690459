"""A throwaway service account to sign with, and a check of V4 signed URLs written from
Google's description of the signing process, not from the client library: the Storage emulator
checks no signature, so the tests check each URL's signature against the signer's public key,
as Cloud Storage would."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


@dataclass(frozen=True)
class ServiceAccount:
    email: str
    key_file: Path
    public_key: rsa.RSAPublicKey


def throwaway_service_account(folder: Path, email: str) -> ServiceAccount:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    key_file = folder / "signer.json"
    key_file.write_text(
        json.dumps(
            {
                "type": "service_account",
                "client_email": email,
                "private_key": pem,
                "private_key_id": "throwaway",
                "token_uri": "https://oauth2.googleapis.com/token",
                "project_id": email.split("@")[1].split(".", maxsplit=1)[0],
            }
        )
    )
    return ServiceAccount(email, key_file, key.public_key())


@dataclass(frozen=True)
class SignedUrl:
    signer: str
    signed_at: datetime
    expires_at: datetime


def verify_v4(url: str, public_key: rsa.RSAPublicKey) -> SignedUrl:
    """Raises InvalidSignature unless `url` is a GET URL signed by `public_key`'s owner."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    params = dict(query)
    assert params["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    assert params["X-Goog-SignedHeaders"] == "host"
    signature = bytes.fromhex(params["X-Goog-Signature"])
    canonical_query = "&".join(
        f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}"
        for name, value in sorted(query)
        if name != "X-Goog-Signature"
    )
    canonical_request = "\n".join(
        ["GET", parts.path, canonical_query, f"host:{parts.netloc}\n", "host", "UNSIGNED-PAYLOAD"]
    )
    credential = params["X-Goog-Credential"]
    scope = credential.split("/", 1)[1]
    string_to_sign = "\n".join(
        [
            "GOOG4-RSA-SHA256",
            params["X-Goog-Date"],
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    public_key.verify(signature, string_to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())
    signed_at = datetime.strptime(params["X-Goog-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return SignedUrl(
        signer=credential.split("/", 1)[0],
        signed_at=signed_at,
        expires_at=signed_at + timedelta(seconds=int(params["X-Goog-Expires"])),
    )
