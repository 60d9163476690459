"""Idempotency keys of uploads in Firestore (shared.ports.UploadKeys).

    upload_keys/{sha256 of owner and key}    one per key a client sent, for a day

The document id is a digest: the key is the client's string, and neither it nor the owner
belongs in a document path. A TTL policy on `expires_at` (deploy.sh) deletes old keys; until
it runs, an expired key counts as absent.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from shared.domain.model import UploadKey

UPLOAD_KEYS = "upload_keys"


def _to(key: UploadKey) -> dict[str, Any]:
    return {
        "fingerprint": key.fingerprint,
        "request_id": key.request_id,
        "state": key.state,
        "lease_until": key.lease_until,
        "expires_at": key.expires_at,
        "total_rows": key.total_rows,
        "total_images": key.total_images,
    }


def _from(key_id: str, data: dict[str, Any], version: object) -> UploadKey:
    return UploadKey(
        key_id=key_id,
        fingerprint=data["fingerprint"],
        request_id=data["request_id"],
        state=data["state"],
        lease_until=data["lease_until"],
        expires_at=data["expires_at"],
        total_rows=data.get("total_rows"),
        total_images=data.get("total_images"),
        version=version,
    )


class FirestoreUploadKeys:
    def __init__(self, client: firestore.Client) -> None:
        self._db = client

    def _ref(self, key_id: str) -> Any:
        return self._db.collection(UPLOAD_KEYS).document(key_id)

    def reserve(self, key: UploadKey) -> UploadKey | None:
        try:
            result = self._ref(key.key_id).create(_to(key))
        except gexc.Conflict:
            return None
        return dataclasses.replace(key, version=result.update_time)

    def get(self, key_id: str) -> UploadKey | None:
        snap = self._ref(key_id).get()
        return _from(key_id, snap.to_dict() or {}, snap.update_time) if snap.exists else None

    def replace(self, current: UploadKey, new: UploadKey) -> UploadKey | None:
        try:
            # Every field is written: an update of all of them replaces the key as a whole.
            result = self._ref(current.key_id).update(
                _to(new), option=self._db.write_option(last_update_time=current.version)
            )
        except (gexc.FailedPrecondition, gexc.NotFound):
            return None
        return dataclasses.replace(new, version=result.update_time)

    def release(self, current: UploadKey) -> None:
        # Taken over or gone already: nothing of ours to forget.
        with contextlib.suppress(gexc.FailedPrecondition, gexc.NotFound):
            self._ref(current.key_id).delete(
                option=self._db.write_option(last_update_time=current.version)
            )
