"""The two API additions of issue 11 on both profiles, through their front door: the details
filtered by state, and the webhook message sent again to a receiver, as a second series."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from local_profile import sample_images
from local_profile.image_host import ImageHost
from tests.e2e.helpers import upload, wait_for, wait_until_finished, webhooks_for

pytestmark = pytest.mark.e2e


def details(base: str, request_id: str, **query: str) -> dict[str, Any]:
    answer = requests.get(
        f"{base}/status/{request_id}", params={"details": "1", **query}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_failed_images_are_one_call_away_and_a_resend_delivers_the_message_again(
    base_url: str,
) -> None:
    files = {"/a.jpg": (sample_images.photo_jpeg(200, 150, 80, seed=1), "image/jpeg")}
    with ImageHost(files, hold={"/slow.jpg"}) as host:
        host.files["/slow.jpg"] = files["/a.jpg"]
        csv_bytes = (
            "Serial Number,Product Name,Input Image Urls\n"
            f'1,Chair,"{host.url("/a.jpg")},{host.url("/gone-1.jpg")}"\n'
            f'2,Lamp,"{host.url("/gone-2.jpg")},{host.url("/slow.jpg")}"\n'
        ).encode()
        request_id = upload(base_url, csv_bytes, f"{base_url}/webhook").json()["request_id"]
        resend = f"{base_url}/requests/{request_id}/webhook/resend"
        early = requests.post(resend, timeout=10)
        assert early.status_code == 409 and early.json()["error"]["code"] == "in_progress"
        host.release()
        wait_until_finished(base_url, request_id)

    failed = details(base_url, request_id, state="failed")
    assert [(i["row"], i["position"]) for i in failed["images"]] == [(1, 2), (2, 1)]
    assert all(i["error"]["code"] == "http_error" for i in failed["images"])
    assert [i["state"] for i in details(base_url, request_id, state="done")["images"]] == [
        "done",
        "done",
    ]
    bad = requests.get(f"{base_url}/status/{request_id}?details=1&state=lost", timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_query"

    first = wait_for(lambda: webhooks_for(base_url, request_id), 30, "the webhook")
    wait_for(
        lambda: details(base_url, request_id)["webhook"]["state"] == "delivered",
        30,
        "the first series to end",
    )
    again = requests.post(resend, timeout=10)
    assert again.status_code == 202, again.text
    messages = wait_for(
        lambda: (m := webhooks_for(base_url, request_id)) and len(m) > len(first) and m,
        30,
        "the message sent again",
    )
    assert {m["webhook_id"] for m in messages} == {f"msg_{request_id}"}
    assert messages[-1]["body"] == messages[0]["body"] and messages[-1]["verified"] is True
    hook = wait_for(
        lambda: (h := details(base_url, request_id)["webhook"])["state"] == "delivered" and h,
        30,
        "the second series to end",
    )
    assert [s["state"] for s in hook["earlier_series"]] == ["delivered"]
    assert [a["succeeded"] for a in hook["attempts"]] == [True]
