"""Uploaded CSVs and results in Cloud Storage (or the gcp-storage-emulator locally).

Two buckets: uploads are private (they are the client's data and only the service reads
them back); outputs are what clients fetch, by public object URL or V4 signed URL.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, BinaryIO
from urllib.parse import quote

from google.api_core import exceptions as gexc
from google.cloud import storage  # type: ignore[attr-defined]

from shared.domain.errors import ErrorCode, ImageFailure
from shared.ports import BlobMissing

PUBLIC_HOST = "https://storage.googleapis.com"
# Signing through IAM is one HTTP call per URL: a page of details signs this many at once.
IAM_SIGNING_THREADS = 16
# Outputs never change once written (a retry writes identical bytes to the same name).
OUTPUT_CACHE_CONTROL = "public, max-age=86400"
# Streamed reads and writes go in pieces of this size (a multiple of 256 KB, as resumable
# uploads require).
STREAM_CHUNK = 1024 * 1024


class GcsBlobStore:
    def __init__(
        self,
        client: storage.Client,
        *,
        uploads_bucket: str,
        outputs_bucket: str,
        url_mode: str = "public",
        signed_url_ttl: float = 7 * 86400,
        emulator_host: str | None = None,
        signer: Any | None = None,
    ) -> None:
        """`signer`: credentials that sign URLs instead of the client's own (a service
        account key: the Storage emulator's client is anonymous and cannot sign)."""
        self._client = client
        self._uploads = client.bucket(uploads_bucket)
        self._outputs = client.bucket(outputs_bucket)
        self._url_mode = url_mode
        self._ttl = timedelta(seconds=signed_url_ttl)
        self._public_host = (
            _with_scheme(emulator_host).rstrip("/") if emulator_host else PUBLIC_HOST
        )
        self._signer: Any = signer if signer is not None else client._credentials
        self._refresh_lock = threading.Lock()

    def put_upload(self, path: str, data: bytes, content_type: str) -> None:
        self._uploads.blob(path).upload_from_string(data, content_type=content_type)

    def get_upload(self, path: str) -> bytes:
        try:
            data: bytes = self._uploads.blob(path).download_as_bytes()
        except gexc.NotFound as exc:
            raise BlobMissing(path) from exc
        return data

    def put_output(self, path: str, data: bytes, content_type: str) -> str:
        blob = self._outputs.blob(path)
        blob.cache_control = OUTPUT_CACHE_CONTROL
        try:
            blob.upload_from_string(data, content_type=content_type)
        except (gexc.GoogleAPICallError, OSError) as exc:
            # Storage hiccups are worth a retry of the image, not a failed image.
            raise ImageFailure(
                ErrorCode.STORAGE_ERROR, f"could not store the result: {exc}", transient=True
            ) from exc
        return self.url_of(path)

    def delete_output(self, path: str) -> None:
        try:
            self._outputs.blob(path).delete()
        except gexc.NotFound:
            pass
        except (gexc.GoogleAPICallError, OSError) as exc:
            raise ImageFailure(
                ErrorCode.STORAGE_ERROR, f"could not remove {path}: {exc}", transient=True
            ) from exc

    def open_upload(self, path: str) -> BinaryIO:
        blob = self._uploads.blob(path)
        try:
            blob.reload()  # so that a missing upload says so now, not at the first read
        except gexc.NotFound as exc:
            raise BlobMissing(path) from exc
        reader: BinaryIO = blob.open("rb", chunk_size=STREAM_CHUNK)
        return reader

    def put_output_stream(self, path: str, chunks: Iterable[bytes], content_type: str) -> str:
        blob = self._outputs.blob(path)
        blob.cache_control = OUTPUT_CACHE_CONTROL
        # A resumable upload, sent a chunk at a time: the object is never whole in memory.
        with blob.open("wb", content_type=content_type, chunk_size=STREAM_CHUNK) as writer:
            for chunk in chunks:
                writer.write(chunk)
        return self.url_of(path)

    def url_of(self, path: str) -> str:
        """A URL that a plain GET fetches now: the public object URL, or one signed this
        moment, good for the signed-URL lifetime from now."""
        if self._url_mode == "signed":
            return self._signed_url(path)
        return f"{self._public_host}/{self._outputs.name}/{quote(path)}"

    def urls_of(self, paths: Sequence[str]) -> list[str]:
        """`url_of` for each path, in order. Signing through IAM is a network call per URL,
        so many are signed at once; a key signs locally, one after the other."""
        if self._url_mode != "signed" or self._signs_locally() or len(paths) < 2:
            return [self.url_of(path) for path in paths]
        with ThreadPoolExecutor(min(IAM_SIGNING_THREADS, len(paths))) as pool:
            return list(pool.map(self.url_of, paths))

    def _signs_locally(self) -> bool:
        return hasattr(self._signer, "sign_bytes")

    def _signed_url(self, path: str) -> str:
        blob = self._outputs.blob(path)
        kwargs: dict[str, Any] = {"version": "v4", "expiration": self._ttl, "method": "GET"}
        if self._public_host != PUBLIC_HOST:
            # The emulator serves the object at its own host; it checks no signature.
            kwargs["api_access_endpoint"] = self._public_host
        if self._signs_locally():
            kwargs["credentials"] = self._signer
        else:
            # Cloud Functions' default credentials hold no private key: sign through the
            # IAM signBlob API (IAM Credentials) as the function's own service account, with
            # a token refreshed only when it has run out, not once per URL.
            import google.auth.transport.requests

            with self._refresh_lock:
                if not self._signer.valid:
                    self._signer.refresh(google.auth.transport.requests.Request())
                kwargs["service_account_email"] = self._signer.service_account_email
                kwargs["access_token"] = self._signer.token
        url: str = blob.generate_signed_url(**kwargs)
        return url

    def ensure_buckets(self) -> None:
        """Create both buckets if missing. Only for emulators: production buckets are made
        by deploy.sh with their IAM, never implicitly by the service."""
        for bucket in (self._uploads, self._outputs):
            with contextlib.suppress(gexc.Conflict):
                self._client.create_bucket(bucket.name)


def _with_scheme(host: str) -> str:
    return host if "://" in host else f"http://{host}"
