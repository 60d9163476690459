"""Both profiles end to end, through their front door, as a client sees it.

Images come from a loopback HTTP server; everything else is the real stack: the Firestore and
Storage emulators, and either Redis, the Celery worker and the gateway (local) or the Cloud
Tasks emulator, the four staged functions and the Eventarc and Hosting stand-ins (cloud).
Tests that take `base_url` run once per profile; those about Celery itself run locally.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
import requests
from PIL import Image
from standardwebhooks.webhooks import Webhook

from local_profile import sample_images
from local_profile.image_host import ImageHost
from local_profile.recipes import Stack
from shared.domain.quality import estimate_jpeg_quality
from tests.conftest import WEBHOOK_SECRET
from tests.e2e.helpers import (
    details,
    read_csv,
    upload,
    wait_for,
    wait_until_finished,
    webhooks_for,
)

pytestmark = pytest.mark.e2e

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "samples"


def quirky_csv(images: str) -> bytes:
    # BOM, CRLF, an `S. No.` header, a passthrough column, a quoted comma in a name, a
    # formula-looking name, spaces and a trailing comma in a URL list, and a broken link
    # between two good ones.
    text = (
        "\ufeffS. No.,Product Name,Input Image Urls,Brand\r\n"
        f'1,"Chair, oak","{images}/front.jpg, {images}/gone.jpg ,{images}/side.jpg,",Acme\r\n'
        f'2,"=HYPERLINK(""http://x"")",{images}/logo.png,Acme\r\n'
        f"3,Phone photo,{images}/rotated.jpg,\r\n"
    )
    return text.encode("utf-8")


@pytest.fixture(scope="module")
def image_host() -> ImageHost:
    files = {
        "/front.jpg": (sample_images.photo_jpeg(640, 480, 90, seed=1), "image/jpeg"),
        "/side.jpg": (sample_images.photo_jpeg(480, 640, 70, seed=2), "image/jpeg"),
        "/logo.png": (sample_images.transparent_png(200, 120, seed=3), "image/png"),
        "/rotated.jpg": (sample_images.rotated_jpeg(300, 200, 80), "application/octet-stream"),
    }
    with ImageHost(files) as host:
        yield host


def test_quirky_csv_end_to_end(base_url: str, image_host: ImageHost) -> None:
    answer = upload(base_url, quirky_csv(image_host.base_url), f"{base_url}/webhook")
    assert answer.status_code == 202, answer.text
    request_id = answer.json()["request_id"]
    assert answer.headers["Location"] == f"/status/{request_id}"

    status = wait_until_finished(base_url, request_id)
    assert status["status"] == "completed"
    assert status["progress"] == {"total": 5, "done": 4, "failed": 1, "pending": 0}

    rows = read_csv(status["csv_url"])
    assert rows[0] == ["S. No.", "Product Name", "Input Image Urls", "Brand", "Output Image Urls"]
    assert [r[0] for r in rows[1:]] == ["1", "2", "3"]
    assert rows[1][1] == "Chair, oak" and rows[1][3] == "Acme"
    assert rows[2][1] == '\'=HYPERLINK("http://x")'  # neutralised, not run by a spreadsheet
    first_row_outputs = rows[1][4].split(",")
    assert len(first_row_outputs) == 3 and first_row_outputs[1] == ""  # the broken link's slot

    outputs = {
        "front": first_row_outputs[0],
        "side": first_row_outputs[2],
        "logo": rows[2][4],
        "rotated": rows[3][4],
    }
    fetched = {}
    for name, url in outputs.items():
        response = requests.get(url, timeout=10)
        assert response.status_code == 200, url
        fetched[name] = Image.open(io.BytesIO(response.content))
    assert fetched["front"].format == "JPEG"
    assert estimate_jpeg_quality(fetched["front"].quantization) == 45
    assert estimate_jpeg_quality(fetched["side"].quantization) == 35
    assert fetched["logo"].format == "WEBP" and fetched["logo"].mode == "RGBA"
    assert fetched["logo"].getchannel("A").getextrema()[0] == 0  # transparency kept
    assert fetched["rotated"].size == (200, 300)  # EXIF orientation applied
    assert fetched["rotated"].getexif().get(0x0112) is None
    assert estimate_jpeg_quality(fetched["rotated"].quantization) == 40

    images = details(base_url, request_id)["images"]
    failed = [i for i in images if i["state"] == "failed"]
    assert len(failed) == 1 and failed[0]["input_url"].endswith("/gone.jpg")
    assert failed[0]["error"]["code"] == "http_error"
    front = next(i for i in images if i["input_url"].endswith("/front.jpg"))
    assert (front["source_quality"], front["output_quality"]) == (90, 45)

    messages = wait_for(lambda: webhooks_for(base_url, request_id), 30, "the webhook")
    time.sleep(2)  # a duplicate would arrive within the retry schedule's first step
    messages = webhooks_for(base_url, request_id)
    assert len(messages) == 1
    message = messages[0]
    assert message["verified"] is True
    headers = {
        "webhook-id": message["webhook_id"],
        "webhook-timestamp": message["webhook_timestamp"],
        "webhook-signature": message["webhook_signature"],
    }
    assert Webhook(WEBHOOK_SECRET).verify(message["body"], headers) == {
        "request_id": request_id,
        "status": "completed",
        "csv_url": status["csv_url"],
    }


def test_invalid_sample_is_refused_with_every_problem_listed(base_url: str) -> None:
    answer = upload(base_url, (SAMPLES / "invalid.csv").read_bytes())
    assert answer.status_code == 400
    assert answer.headers["Content-Type"] == "application/json"
    error = answer.json()["error"]
    assert error["code"] == "invalid_csv"
    assert sorted({d["line"] for d in error["details"]}) == [2, 3, 4, 5]
    assert all(d["column"] and d["message"] for d in error["details"])
    assert "pw" not in json.dumps(error)  # credentials are never echoed


def test_status_answers_400_for_a_malformed_id_and_404_for_an_unknown_one(
    base_url: str,
) -> None:
    malformed = requests.get(f"{base_url}/status/not-an-id", timeout=10)
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "invalid_request_id"
    unknown = requests.get(f"{base_url}/status/{'A' * 22}", timeout=10)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"


def test_upload_that_is_not_a_csv_form_is_415(base_url: str) -> None:
    raw = requests.post(f"{base_url}/upload", data=b"a,b", timeout=10)
    assert raw.status_code == 415
    png = requests.post(
        f"{base_url}/upload", files={"file": ("x.png", b"\x89PNG", "image/png")}, timeout=10
    )
    assert png.status_code == 415
    assert png.json()["error"]["code"] == "unsupported_media_type"


def test_upload_over_the_size_limit_is_413(base_url: str) -> None:
    big = b"Serial Number,Product Name,Input Image Urls\r\n" + b"x" * (30 * 1024 * 1024 + 10)
    answer = upload(base_url, big)
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "payload_too_large"


def test_webhook_is_retried_until_the_receiver_accepts(
    base_url: str, image_host: ImageHost
) -> None:
    arrivals: list[dict[str, str]] = []

    class FlakyReceiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            arrivals.append(
                {k.lower(): v for k, v in self.headers.items()} | {"body": body.decode()}
            )
            self.send_response(200 if len(arrivals) >= 3 else 500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyReceiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        csv_bytes = (
            f"Serial Number,Product Name,Input Image Urls\n1,Lamp,{image_host.base_url}/front.jpg\n"
        )
        answer = upload(base_url, csv_bytes.encode(), f"http://127.0.0.1:{server.server_port}/hook")
        request_id = answer.json()["request_id"]
        wait_until_finished(base_url, request_id)

        def delivered() -> dict[str, object] | None:
            webhook = details(base_url, request_id)["webhook"]
            return webhook if webhook and webhook["state"] == "delivered" else None

        webhook = wait_for(delivered, 30, "delivery after retries")
    finally:
        server.shutdown()
        server.server_close()
    assert [a["status_code"] for a in webhook["attempts"]] == [500, 500, 200]
    assert len(arrivals) == 3
    assert {a["webhook-id"] for a in arrivals} == {f"msg_{request_id}"}
    for arrival in arrivals:
        Webhook(WEBHOOK_SECRET).verify(arrival["body"], arrival)


def test_a_request_whose_queued_work_was_lost_still_completes(
    live: Stack, gateway_url: str, image_host: ImageHost
) -> None:
    live.stop("worker")
    csv_bytes = (
        "Serial Number,Product Name,Input Image Urls\n"
        f"1,Lamp,{image_host.base_url}/front.jpg\n2,Desk,{image_host.base_url}/logo.png\n"
    ).encode()
    request_id = upload(gateway_url, csv_bytes).json()["request_id"]
    broker = redis.Redis.from_url(live.env["REDIS_URL"])
    assert broker.delete("control") == 1  # the fan-out message is gone, as in a broker crash
    live.start_worker(concurrency=4)
    status = wait_until_finished(gateway_url, request_id, timeout=60)
    assert status["status"] == "completed"
    assert status["progress"] == {"total": 2, "done": 2, "failed": 0, "pending": 0}


@pytest.mark.parametrize("after", ["", "a/b", "0000000-00/images/x", "../../x", "x" * 300])
def test_a_page_token_we_did_not_make_is_a_400_not_a_500(base_url: str, after: str) -> None:
    csv_bytes = b"Serial Number,Product Name,Input Image Urls\n1,Lamp,http://127.0.0.1:9/a.jpg\n"
    request_id = upload(base_url, csv_bytes).json()["request_id"]
    token = base64.urlsafe_b64encode(f"after:{after}".encode()).decode().rstrip("=")
    answer = requests.get(
        f"{base_url}/status/{request_id}", params={"details": "1", "page_token": token}, timeout=10
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "invalid_query"


def test_an_upload_retried_with_its_idempotency_key_is_one_request(
    base_url: str, image_host: ImageHost
) -> None:
    csv_bytes = (
        f"Serial Number,Product Name,Input Image Urls\n1,Lamp,{image_host.base_url}/front.jpg\n"
    ).encode()
    key = f'"{uuid.uuid4()}"'

    def send(body: bytes) -> requests.Response:
        return requests.post(
            f"{base_url}/upload",
            files={"file": ("products.csv", body, "text/csv")},
            headers={"Idempotency-Key": key},
            timeout=30,
        )

    first, again = send(csv_bytes), send(csv_bytes)
    assert first.status_code == again.status_code == 202, again.text
    assert again.json()["request_id"] == first.json()["request_id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = send(csv_bytes.replace(b"Lamp", b"Desk"))
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    status = wait_until_finished(base_url, first.json()["request_id"])
    assert status["progress"] == {"total": 1, "done": 1, "failed": 0, "pending": 0}


def test_repeated_images_are_fetched_and_stored_once_and_fill_every_slot(base_url: str) -> None:
    logo = sample_images.transparent_png(160, 90, seed=11)
    photo = sample_images.photo_jpeg(400, 300, 85, seed=12)
    files = {
        "/logo.png": (logo, "image/png"),
        "/mirror/logo.png": (logo, "image/png"),  # the same bytes under another URL
        "/photo.jpg": (photo, "image/jpeg"),
    }
    with ImageHost(files) as host:
        rows = [
            f'1,Chair,"{host.url("/photo.jpg")},{host.url("/logo.png")}"',
            f"2,Desk,{host.url('/logo.png')}#brand",  # the same URL, but for its fragment
            f"3,Lamp,{host.url('/mirror/logo.png')}",
            f'4,Sofa,"{host.url("/logo.png")},{host.url("/photo.jpg")}"',
        ]
        csv_bytes = ("Serial Number,Product Name,Input Image Urls\n" + "\n".join(rows)).encode()
        request_id = upload(base_url, csv_bytes).json()["request_id"]
        status = wait_until_finished(base_url, request_id)
        hits = dict(host.hits)
    assert status["progress"] == {"total": 6, "done": 6, "failed": 0, "pending": 0}
    # Each URL once; the mirror too (a different URL), but its bytes were not stored again.
    assert hits == {"/photo.jpg": 1, "/logo.png": 1, "/mirror/logo.png": 1}
    images = {(i["row"], i["position"]): i for i in details(base_url, request_id)["images"]}
    logo_url = images[(1, 2)]["output_url"]
    assert {images[k]["output_url"] for k in [(2, 1), (3, 1), (4, 1)]} == {logo_url}
    assert images[(4, 2)]["output_url"] == images[(1, 1)]["output_url"]
    assert images[(2, 1)]["same_as"] == images[(1, 2)]["id"]
    assert images[(3, 1)]["same_as"] is None  # another URL: the same bytes, found by their hash
    rows_out = read_csv(status["csv_url"])
    assert rows_out[2][-1] == logo_url and rows_out[3][-1] == logo_url
    assert rows_out[4][-1] == f"{logo_url},{images[(1, 1)]['output_url']}"
    assert requests.get(logo_url, timeout=10).content[:4] == b"RIFF"  # kept its alpha: WebP
