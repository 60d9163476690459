"""The service's HTTP API as Python calls, with its two ways of going wrong told apart: the
service said no (`ApiError`, with its error code and problems) or did not answer at all
(`Unreachable`)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

DEFAULT_URL = "http://127.0.0.1:8000"
PAGE_SIZE = 500  # the API's largest page
# An upload is sent up to this many times, waiting 1 s, 2 s, 4 s ... between.
UPLOAD_ATTEMPTS = 4
RETRY_BASE = 1.0
RETRY_CAP = 8.0


class Unreachable(Exception):
    """No answer (connection refused, timeout), or a 5xx."""


@dataclass
class ApiError(Exception):
    status: int
    code: str
    message: str
    details: list[dict[str, Any]] = field(default_factory=list)
    body: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status} {self.code})"


class Client:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 30) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        self._session.headers["User-Agent"] = "imgsvc-cli"
        if api_key:
            self._session.headers["Authorization"] = f"Bearer {api_key}"

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._session.request(
                method, self.base_url + path, timeout=self.timeout, **kwargs
            )
        except requests.RequestException as exc:
            raise Unreachable(f"{self.base_url} did not answer: {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 500:
            detail = body["error"]["message"] if _is_error(body) else response.reason
            raise Unreachable(f"{self.base_url} answered {response.status_code}: {detail}")
        if response.status_code >= 400 or not isinstance(body, dict):
            if _is_error(body):
                error = body["error"]
                raise ApiError(
                    response.status_code,
                    str(error.get("code")),
                    str(error.get("message")),
                    list(error.get("details") or []),
                    body,
                )
            raise ApiError(response.status_code, "unexpected", f"HTTP {response.status_code}")
        return body

    def upload(
        self, csv_path: Path, webhook_url: str | None = None, *, attempts: int = UPLOAD_ATTEMPTS
    ) -> dict[str, Any]:
        """POST the CSV under an Idempotency-Key of its own, and send it again under the same
        key when the service did not answer (a timeout, a reset, a 5xx, or a 409 while the
        first attempt is still being accepted): a retry gets the first request back, never a
        second one."""
        data = {"webhook_url": webhook_url} if webhook_url else {}
        headers = {"Idempotency-Key": f'"{uuid.uuid4()}"'}
        body = csv_path.read_bytes()
        for attempt in range(1, attempts + 1):
            try:
                return self._call(
                    "POST",
                    "/upload",
                    files={"file": (csv_path.name, body, "text/csv")},
                    data=data,
                    headers=headers,
                )
            except Unreachable:
                if attempt == attempts:
                    raise
            except ApiError as refused:
                if refused.status != 409 or attempt == attempts:
                    raise
            time.sleep(min(RETRY_CAP, RETRY_BASE * 2 ** (attempt - 1)))
        raise AssertionError("unreachable")  # the loop returns or raises

    def status(
        self,
        request_id: str,
        *,
        details: bool = False,
        state: str | None = None,
        page_token: str | None = None,
        page_size: int = PAGE_SIZE,
    ) -> dict[str, Any]:
        query: dict[str, str] = {}
        if details:
            query = {"details": "1", "page_size": str(page_size)}
            if state:
                query["state"] = state
            if page_token:
                query["page_token"] = page_token
        return self._call("GET", f"/status/{request_id}", params=query)

    def images(self, request_id: str, *, state: str | None = None) -> Iterator[dict[str, Any]]:
        """Every image of the request (in `state`, if given), page after page."""
        token = None
        while True:
            page = self.status(request_id, details=True, state=state, page_token=token)
            yield from page.get("images", [])
            token = page.get("next_page_token")
            if not token:
                return

    def resend_webhook(self, request_id: str) -> dict[str, Any]:
        return self._call("POST", f"/requests/{request_id}/webhook/resend")

    def download(self, url: str, target: Path) -> int:
        """Fetch an output URL (the service's own bucket) to `target`; returns its size."""
        try:
            with requests.get(url, timeout=self.timeout, stream=True) as response:
                if response.status_code != 200:
                    raise ApiError(response.status_code, "download_failed", f"GET {url}")
                size = 0
                with target.open("wb") as file:
                    for chunk in response.iter_content(1 << 16):
                        file.write(chunk)
                        size += len(chunk)
                return size
        except requests.RequestException as exc:
            raise Unreachable(f"{url} did not answer: {exc}") from exc


def _is_error(body: object) -> bool:
    return isinstance(body, dict) and isinstance(body.get("error"), dict)
