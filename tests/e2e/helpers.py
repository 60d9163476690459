"""What the end-to-end tests do over and over: upload, follow, fetch."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import requests


def upload(base: str, csv_bytes: bytes, webhook_url: str | None = None) -> requests.Response:
    data = {"webhook_url": webhook_url} if webhook_url else {}
    return requests.post(
        f"{base}/upload", files={"file": ("products.csv", csv_bytes, "text/csv")}, data=data,
        timeout=30,
    )  # fmt: skip


def wait_until_finished(base: str, request_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = requests.get(f"{base}/status/{request_id}", timeout=10).json()
        if status["status"] != "in progress":
            return dict(status)
        time.sleep(0.2)
    raise AssertionError(f"request {request_id} still in progress after {timeout}s: {status}")


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def webhooks_for(base: str, request_id: str) -> list[dict[str, Any]]:
    received = requests.get(f"{base}/webhook", timeout=10).json()["received"]
    return [m for m in received if m["webhook_id"] == f"msg_{request_id}"]


def details(base: str, request_id: str) -> dict[str, Any]:
    return dict(requests.get(f"{base}/status/{request_id}?details=1", timeout=10).json())


def read_csv(url: str) -> list[list[str]]:
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    return list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"), newline="")))
