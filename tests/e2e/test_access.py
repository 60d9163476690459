"""API keys tried as a new user would (issue 5, "Done when"), through a real gateway started with
API_KEYS set, on the live stack: no key is 401, someone else's request is 404, one's own is 200,
and the keys' uploads are rate-limited. The keys never show up in any log of the stack.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from standardwebhooks.webhooks import Webhook

from local_profile import sample_images
from local_profile.image_host import ImageHost
from local_profile.recipes import Stack
from tests.conftest import WEBHOOK_SECRET, KeyedGateway, log_of
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.e2e


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def post_csv(
    base: str, csv_bytes: bytes, headers: dict[str, str], webhook_url: str | None = None
) -> requests.Response:
    return requests.post(
        f"{base}/upload",
        files={"file": ("products.csv", csv_bytes, "text/csv")},
        data={"webhook_url": webhook_url} if webhook_url else {},
        headers=headers,
        timeout=30,
    )


def status(base: str, request_id: str, headers: dict[str, str], **query: str) -> requests.Response:
    return requests.get(f"{base}/status/{request_id}", params=query, headers=headers, timeout=10)


def finished(base: str, request_id: str, headers: dict[str, str]) -> dict[str, Any]:
    def settled() -> dict[str, Any] | None:
        body: dict[str, Any] = status(base, request_id, headers).json()
        return body if body["status"] != "in progress" else None

    result: dict[str, Any] = wait_for(settled, 120, f"request {request_id} to finish")
    return result


def test_with_keys_no_key_is_401_others_requests_404_own_200(
    live: Stack, keyed_gateway: KeyedGateway
) -> None:
    base, keys = keyed_gateway.url, keyed_gateway.keys
    files = {"/chair.jpg": (sample_images.photo_jpeg(320, 240, 80, seed=7), "image/jpeg")}
    with ImageHost(files) as host:
        csv_bytes = (
            "Serial Number,Product Name,Input Image Urls\n"
            f"1,Chair,{host.base_url}/chair.jpg\n".encode()
        )
        anonymous = post_csv(base, csv_bytes, {})
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="imgsvc"'
        assert anonymous.json()["error"]["code"] == "unauthorized"
        guessed = post_csv(base, csv_bytes, auth("isk_guessed"))
        assert guessed.status_code == 401
        assert 'error="invalid_token"' in guessed.headers["WWW-Authenticate"]

        accepted = post_csv(base, csv_bytes, auth(keys["alice"]), f"{base}/webhook")
        assert accepted.status_code == 202, accepted.text
        request_id = accepted.json()["request_id"]

        assert status(base, request_id, {}).status_code == 401
        others = status(base, request_id, auth(keys["bob"]), details="1")
        assert others.status_code == 404
        assert others.json()["error"]["code"] == "not_found"
        own = finished(base, request_id, auth(keys["alice"]))
    assert own["status"] == "completed"
    assert own["progress"] == {"total": 1, "done": 1, "failed": 0, "pending": 0}
    mine = status(base, request_id, auth(keys["alice"]), details="1")
    assert mine.status_code == 200
    assert mine.headers["X-Content-Type-Options"] == "nosniff"
    assert mine.json()["images"][0]["state"] == "done"
    # Still someone else's once it is done; and the open gateway (no keys) is no way round.
    assert status(base, request_id, auth(keys["bob"])).status_code == 404
    assert status(live.services["gateway"].url or "", request_id, {}).status_code == 404

    # The reference receiver and the health check stay open, and the webhook arrived signed.
    def arrived() -> list[dict[str, Any]]:
        received = requests.get(f"{base}/webhook", timeout=10).json()["received"]
        return [m for m in received if m["webhook_id"] == f"msg_{request_id}"]

    [message] = wait_for(arrived, 30, "the webhook")
    assert message["verified"] is True
    headers = {k: message[k.replace("-", "_")] for k in ("webhook-id", "webhook-timestamp")}
    headers["webhook-signature"] = message["webhook_signature"]
    assert Webhook(WEBHOOK_SECRET).verify(message["body"], headers)["request_id"] == request_id
    assert requests.get(f"{base}/healthz", timeout=10).status_code == 200

    # No key, raw or as the client sends it, and no webhook secret, in any log of the stack.
    logs = log_of(live, "gateway-keys") + log_of(live, "worker") + log_of(live, "gateway")
    for secret in [*keys.values(), WEBHOOK_SECRET, WEBHOOK_SECRET.removeprefix("whsec_")]:
        assert secret not in logs


def test_uploads_beyond_a_keys_rate_are_429_with_retry_after(keyed_gateway: KeyedGateway) -> None:
    base, key = keyed_gateway.url, keyed_gateway.keys["carol"]
    # Every upload counts, even one that is refused for its content.
    invalid = b"Serial Number,Product Name,Input Image Urls\n1,,\n"
    for _ in range(keyed_gateway.upload_limit):
        assert post_csv(base, invalid, auth(key)).status_code == 400
    refused = post_csv(base, invalid, auth(key))
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    # Reading a status is not an upload, and the limit is carol's alone.
    assert status(base, "A" * 22, auth(key)).status_code == 404
    assert post_csv(base, invalid, auth(keyed_gateway.keys["bob"])).status_code == 400


def test_both_profiles_answer_json_with_nosniff_and_never_html(base_url: str) -> None:
    # The same shared HTTP layer behind the gateway and behind the Cloud Functions.
    answers = [
        requests.get(f"{base_url}/status/not-an-id", timeout=10),
        requests.get(f"{base_url}/status/{'A' * 22}", timeout=10),
        post_csv(
            base_url, b"Serial Number,Product Name,Input Image Urls\n1,x,javascript:<script>\n", {}
        ),
    ]
    assert "<script>" in answers[2].json()["error"]["details"][0]["message"]  # echoed, escaped
    assert [a.status_code for a in answers] == [400, 404, 400]
    for answer in answers:
        assert answer.headers["Content-Type"] == "application/json"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert b"<" not in answer.content
        assert set(answer.json()) == {"error"}
