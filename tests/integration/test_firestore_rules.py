"""firestore.rules, loaded into Google's Firestore emulator, refuse every client-SDK request.

The client SDKs speak the same REST API as below; without admin credentials the rules apply.
The service itself uses server credentials (here the emulator's `Bearer owner`), which the
rules do not restrict: that contrast shows the test can tell the difference.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from local_profile.recipes import Stack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "demo-imgsvc-rules"
OWNER = {"Authorization": "Bearer owner"}


@pytest.fixture(scope="module")
def documents(backing: Stack) -> str:
    host = f"http://{backing.env['FIRESTORE_EMULATOR_HOST']}"
    answer = requests.put(
        f"{host}/emulator/v1/projects/{PROJECT}:securityRules",
        json={
            "rules": {
                "files": [
                    {"name": "firestore.rules", "content": (ROOT / "firestore.rules").read_text()}
                ]
            }
        },
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    base = f"{host}/v1/projects/{PROJECT}/databases/(default)/documents"
    seeded = requests.post(
        f"{base}/requests?documentId=REQ",
        json={"fields": {"status": {"stringValue": "in progress"}}},
        headers=OWNER,
        timeout=30,
    )
    assert seeded.status_code == 200, seeded.text
    return base


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/requests/REQ", None),
        ("GET", "/requests", None),
        ("GET", "/requests/REQ/images", None),
        ("POST", "/requests?documentId=NEW", {"fields": {"status": {"stringValue": "x"}}}),
        ("PATCH", "/requests/REQ", {"fields": {"status": {"stringValue": "completed"}}}),
        ("DELETE", "/requests/REQ", None),
        ("POST", "/requests/REQ/images?documentId=0000000-00", {"fields": {}}),
    ],
)
def test_clients_can_neither_read_nor_write(
    documents: str, method: str, path: str, body: dict[str, object] | None
) -> None:
    answer = requests.request(method, f"{documents}{path}", json=body, timeout=30)
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"]["status"] == "PERMISSION_DENIED"


def test_the_service_with_server_credentials_is_not_restricted(documents: str) -> None:
    answer = requests.get(f"{documents}/requests/REQ", headers=OWNER, timeout=30)
    assert answer.status_code == 200
    assert answer.json()["fields"]["status"]["stringValue"] == "in progress"
