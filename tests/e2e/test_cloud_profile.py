"""What only the cloud profile has: Cloud Tasks delivery, the Firestore trigger's events."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest
import requests

from local_profile import sample_images
from local_profile.image_host import ImageHost
from local_profile.recipes import Stack
from shared.adapters.gcp.cloud_tasks_queue import CloudTasksQueue
from shared.adapters.gcp.firestore_events import WRITTEN_EVENT_TYPE
from shared.config import Settings
from shared.domain.messages import ProcessImage
from shared.domain.model import image_id
from tests.e2e.helpers import details, read_csv, upload, wait_for, wait_until_finished, webhooks_for
from tests.fakes import tally_write_event

pytestmark = pytest.mark.e2e

HEADER = "Serial Number,Product Name,Input Image Urls\n"


@pytest.fixture(scope="module")
def photos() -> dict[str, tuple[bytes, str]]:
    return {
        f"/p{i}.jpg": (sample_images.photo_jpeg(320, 240, 80, seed=i), "image/jpeg")
        for i in range(3)
    }


def queue_of(cloud: Stack) -> CloudTasksQueue:
    settings = Settings.from_env(
        {
            **cloud.env,
            "TASK_BACKEND": "cloudtasks",
            "PROCESS_IMAGE_URL": cloud.services["fn-process_image"].url or "",
            "FINALIZE_URL": cloud.services["fn-finalize"].url or "",
        }
    )
    return CloudTasksQueue(settings)


def test_duplicated_cloud_tasks_neither_double_count_nor_double_notify(
    cloud: Stack, photos: dict[str, tuple[bytes, str]]
) -> None:
    base = cloud.base_url
    with ImageHost(photos, latency=0.2) as host:
        lines = [f"{i},P{i},{host.url(f'/p{i}.jpg')}" for i in range(3)]
        answer = upload(base, (HEADER + "\n".join(lines)).encode(), f"{base}/webhook")
        request_id = answer.json()["request_id"]
        # Every image task twice more, while the first copies are still on their way.
        queue = queue_of(cloud)
        ids = [image_id(row, 0) for row in range(3)]
        queue.send([ProcessImage(request_id, i) for i in ids])
        queue.send([ProcessImage(request_id, i) for i in ids])
        status = wait_until_finished(base, request_id)
        time.sleep(2)  # let the duplicates run out
    assert status["progress"] == {"total": 3, "done": 3, "failed": 0, "pending": 0}
    again = requests.get(f"{base}/status/{request_id}", timeout=10).json()
    assert again["progress"] == status["progress"]
    assert len(read_csv(status["csv_url"])) == 4
    wait_for(lambda: webhooks_for(base, request_id), 30, "the webhook")
    time.sleep(2)
    assert len(webhooks_for(base, request_id)) == 1


def firestore_event(
    cloud: Stack, request_id: str, shard: int, old: int | None, new: int | None
) -> bytes:
    name = (
        f"projects/{cloud.env['GOOGLE_CLOUD_PROJECT']}/databases/(default)/documents/"
        f"requests/{request_id}/tally/{shard}"
    )
    return tally_write_event(name, old, new)


def post_event(cloud: Stack, body: bytes) -> int:
    answer = requests.post(
        cloud.services["fn-finalize"].url or "",
        data=body,
        headers={
            "Content-Type": "application/protobuf",
            "ce-specversion": "1.0",
            "ce-type": WRITTEN_EVENT_TYPE,
            "ce-source": "//firestore.googleapis.com/projects/test/databases/(default)",
            "ce-id": uuid.uuid4().hex,
            "ce-time": datetime.now(UTC).isoformat(),
        },
        timeout=30,
    )
    return answer.status_code


def test_duplicated_and_reordered_trigger_events_finalise_once(
    cloud: Stack, photos: dict[str, tuple[bytes, str]]
) -> None:
    base = cloud.base_url
    with ImageHost(photos, hold={"/p1.jpg"}) as host:
        lines = [f"1,Lamp,{host.url('/p0.jpg')}", f"2,Desk,{host.url('/p1.jpg')}"]
        answer = upload(base, (HEADER + "\n".join(lines)).encode(), f"{base}/webhook")
        request_id = answer.json()["request_id"]
        # Two images, two tallies: image n counts in tally n.
        first, second = 0, 1

        def first_done() -> bool:
            images = details(base, request_id)["images"]
            return bool(images) and images[0]["state"] == "done"

        wait_for(first_done, 30, "the first image")
        # A forged "the second tally settled" while its download is in fact held back: the
        # finaliser trusts the store, not the event, and does nothing.
        forged = firestore_event(cloud, request_id, second, 1, 0)
        assert post_event(cloud, forged) < 300
        now = requests.get(f"{base}/status/{request_id}", timeout=10).json()
        assert (now["status"], now["progress"]["pending"]) == ("in progress", 1)
        host.release()
        status = wait_until_finished(base, request_id, timeout=90)
    assert status["status"] == "completed"
    assert status["progress"]["done"] == 2
    # Late, repeated and out-of-order copies of both tallies' events.
    for old, new, shard in [
        (1, 0, first),
        (None, 1, second),
        (1, 0, second),
        (1, 0, first),
        (0, 0, second),
    ]:
        assert post_event(cloud, firestore_event(cloud, request_id, shard, old, new)) < 300
    wait_for(lambda: webhooks_for(base, request_id), 30, "the webhook")
    time.sleep(2)
    assert len(webhooks_for(base, request_id)) == 1
    assert requests.get(f"{base}/status/{request_id}", timeout=10).json() == status


def test_a_transient_failure_is_answered_with_5xx_and_retried_to_success(
    cloud: Stack, photos: dict[str, tuple[bytes, str]]
) -> None:
    base = cloud.base_url
    # One attempt makes 1 + FETCH_RETRIES (2) requests; three 503s use the first attempt up.
    with ImageHost(photos, fail_first={"/p2.jpg": 3}) as host:
        answer = upload(base, f"{HEADER}1,Lamp,{host.url('/p2.jpg')}\n".encode())
        request_id = answer.json()["request_id"]
        status = wait_until_finished(base, request_id, timeout=60)
        hits = host.hits["/p2.jpg"]
    assert status["progress"]["done"] == 1
    (image,) = details(base, request_id)["images"]
    assert image["state"] == "done"
    assert image["attempts"] == 2  # the second came from Cloud Tasks retrying the 503
    assert hits == 4
    log = (cloud.run_dir / "tasks.log").read_text()
    assert "Moving failed task" in log  # the emulator saw the 5xx and queued the retry
