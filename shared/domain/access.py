"""Who is calling: API keys presented as `Authorization: Bearer <key>`, checked against digests.

Only the SHA-256 of each key is configured (API_KEYS) or stored anywhere; the key itself is
shown once, when it is made. A fast hash is enough here, unlike for passwords: a key is 256
random bits, so a leaked digest cannot be turned back into a key by guessing.

The key id (the part before the colon in API_KEYS) is who the caller is: it is stored as the
owner of every request the caller makes, and only the same id may read that request. Two keys
may share an id, so a client can move to a new key without losing sight of its requests.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

KEY_PREFIX = "isk_"  # "imgsvc key": lets secret scanners and people recognise a leaked key


class AccessDenied(Exception):
    """No usable credentials. `code` follows RFC 6750: `invalid_token` when a key was presented
    and is not one of ours, None when there was none (or it was not a Bearer credential)."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class NewKey:
    key: str  # shown once, never stored
    entry: str  # `<key_id>:<digest>`, the line to add to API_KEYS


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_api_key(key_id: str) -> NewKey:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return NewKey(key, f"{key_id}:{key_digest(key)}")


def bearer_token(authorization: str | None) -> str | None:
    """The credentials of an `Authorization: Bearer <token>` header, None for anything else."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


class ApiKeyring:
    """Decides which key id a request comes from.

    `open_access` (no keys configured, on a developer's machine) lets everyone in as nobody in
    particular: their requests have no owner. Otherwise a request without a known key is
    refused; with no keys configured at all, that is every request.
    """

    def __init__(self, entries: Sequence[tuple[str, str]], *, open_access: bool) -> None:
        self._entries = tuple((key_id, bytes.fromhex(digest)) for key_id, digest in entries)
        self.open_access = open_access and not self._entries

    def identify(self, authorization: str | None) -> str | None:
        """The caller's key id (None under open access); raises AccessDenied."""
        if self.open_access:
            return None
        token = bearer_token(authorization)
        if token is None:
            raise AccessDenied("send an API key as 'Authorization: Bearer <key>'")
        presented = hashlib.sha256(token.encode("utf-8")).digest()
        found: str | None = None
        # Every entry is compared, in constant time, whatever matched: how long the check takes
        # says nothing about which digest came close.
        for key_id, digest in self._entries:
            if hmac.compare_digest(presented, digest) and found is None:
                found = key_id
        if found is None:
            raise AccessDenied("the API key is not valid", code="invalid_token")
        return found
