"""What production needs besides the right answers, checked on the running stacks: which codec
compresses (the staged wheel's DCT path in the cloud profile, the built module locally), and
log lines that Cloud Logging reads as structured entries tied to their request and trace."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from local_profile import sample_images
from local_profile.image_host import ImageHost
from local_profile.recipes import Stack
from tests.conftest import CLOUD_PROJECT, log_of
from tests.e2e.helpers import wait_until_finished

pytestmark = pytest.mark.e2e

TRACE = "0af7651916cd43dd8448eb211c80319c"


def json_lines(stack: Stack, name: str) -> list[dict[str, Any]]:
    """The service's own lines of a function's log (functions-framework and gunicorn write
    theirs as text)."""
    return [json.loads(line) for line in log_of(stack, name).splitlines() if line.startswith("{")]


def test_the_local_gateway_says_it_runs_the_dct_codec(gateway_url: str) -> None:
    health = requests.get(f"{gateway_url}/healthz", timeout=10).json()
    assert health == {"ok": True, "codec": "dct"}


def test_cloud_functions_log_json_lines_with_their_request_image_and_trace(cloud: Stack) -> None:
    photos = {"/a.jpg": (sample_images.photo_jpeg(320, 240, 80, seed=7), "image/jpeg")}
    with ImageHost(photos) as host:
        product_csv = f"Serial Number,Product Name,Input Image Urls\n1,A,{host.url('/a.jpg')}\n"
        answer = requests.post(
            f"{cloud.base_url}/upload",
            files={"file": ("p.csv", product_csv, "text/csv")},
            headers={"X-Cloud-Trace-Context": f"{TRACE}/42;o=1"},
            timeout=30,
        )
        assert answer.status_code == 202, answer.text
        request_id = answer.json()["request_id"]
        assert wait_until_finished(cloud.base_url, request_id)["status"] == "completed"

    (accepted,) = [
        e
        for e in json_lines(cloud, "fn-upload")
        if e["message"].startswith(f"accepted {request_id}")
    ]
    assert accepted["severity"] == "INFO"
    assert accepted["request_id"] == request_id
    assert accepted["logging.googleapis.com/trace"] == f"projects/{CLOUD_PROJECT}/traces/{TRACE}"
    assert accepted["logging.googleapis.com/spanId"] == f"{42:016x}"

    completed = [
        e
        for e in json_lines(cloud, "fn-finalize")
        if e["message"].startswith(f"completed {request_id}")
    ]
    assert len(completed) == 1
    assert completed[0]["request_id"] == request_id
    # Told by the settling of the last tally, whose event names no image.
    assert "image_id" not in completed[0]

    # The staged wheel loaded in process_image: the codec line is an INFO, not the error.
    codec = [
        e for e in json_lines(cloud, "fn-process_image") if e["message"].startswith("image codec:")
    ]
    assert codec and {e["severity"] for e in codec} == {"INFO"}
    assert all("DCT re-quantization" in e["message"] for e in codec)
