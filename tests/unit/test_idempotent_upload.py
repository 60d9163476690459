"""POST /upload with an Idempotency-Key: a retried upload gets the first request back.

Through the gateway's Flask app over the fakes; tests/e2e/test_pipeline.py sends the same
through both profiles' front doors.
"""

from __future__ import annotations

import dataclasses
import io

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from local_profile.gateway import create_app
from shared.config import Settings, parse_api_keys
from shared.domain.access import new_api_key
from shared.domain.model import new_request_id
from shared.usecases.idempotent_upload import ACCEPT_LEASE, KEY_LIFETIME, PROCESSING
from tests.fakes import FakeWorld, fake_world

CSV = b"Serial Number,Product Name,Input Image Urls\n1,Lamp,https://img.test/a.jpg\n"
OTHER_CSV = b"Serial Number,Product Name,Input Image Urls\n1,Desk,https://img.test/b.jpg\n"
BAD_CSV = b"Serial Number,Product Name,Input Image Urls\n1,,https://img.test/a.jpg\n"


@pytest.fixture
def world() -> FakeWorld:
    return fake_world(Settings(firestore_emulator_host="127.0.0.1:1"))  # open access


@pytest.fixture
def client(world: FakeWorld) -> FlaskClient:
    return create_app(world.services).test_client()


def post(client: FlaskClient, key: str | None, data: bytes = CSV, **headers: str) -> TestResponse:
    sent = dict(headers) | ({"Idempotency-Key": key} if key is not None else {})
    return client.post(
        "/upload",
        data={"file": (io.BytesIO(data), "p.csv", "text/csv")},
        headers=sent,
        content_type="multipart/form-data",
    )


def test_a_retry_with_the_same_key_gets_the_first_request_back(
    client: FlaskClient, world: FakeWorld
) -> None:
    first = post(client, '"order-42"')
    again = post(client, '"order-42"')
    assert first.status_code == again.status_code == 202
    assert again.get_json() == first.get_json()
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(world.requests.records) == 1
    assert len(world.queue.slices) == 1  # its work was queued once


def test_a_bare_key_is_the_same_key_as_its_quoted_form(
    client: FlaskClient, world: FakeWorld
) -> None:
    assert post(client, "order-42").get_json() == post(client, '"order-42"').get_json()
    assert len(world.requests.records) == 1


def test_the_same_key_with_another_upload_is_a_422_and_nothing_is_stored(
    client: FlaskClient, world: FakeWorld
) -> None:
    assert post(client, "k1").status_code == 202
    answer = post(client, "k1", OTHER_CSV)
    assert answer.status_code == 422
    assert answer.get_json()["error"]["code"] == "idempotency_key_reused"
    assert len(world.requests.records) == 1 and len(world.blobs.uploads) == 1


def test_without_a_key_every_upload_is_a_new_request(client: FlaskClient, world: FakeWorld) -> None:
    assert post(client, None).get_json() != post(client, None).get_json()
    assert len(world.requests.records) == 2


def test_a_refused_upload_leaves_the_key_free_for_the_corrected_one(
    client: FlaskClient, world: FakeWorld
) -> None:
    assert post(client, "k2", BAD_CSV).status_code == 400
    fixed = post(client, "k2")
    assert fixed.status_code == 202 and "Idempotent-Replayed" not in fixed.headers


@pytest.mark.parametrize("key", ['""', "x" * 256, "café", "a\tb"])
def test_a_malformed_key_is_a_400(client: FlaskClient, world: FakeWorld, key: str) -> None:
    answer = post(client, key)
    assert answer.status_code == 400
    assert answer.get_json()["error"]["code"] == "invalid_idempotency_key"
    assert not world.requests.records


def test_while_the_first_upload_is_being_accepted_a_retry_is_a_409(
    client: FlaskClient, world: FakeWorld
) -> None:
    # The first upload reserved the key and has not recorded its request yet.
    original = world.services.requests.create

    def create_and_retry(record: object) -> None:
        answer = post(client, "k3")
        assert answer.status_code == 409
        assert answer.get_json()["error"]["code"] == "idempotency_key_in_use"
        assert int(answer.headers["Retry-After"]) >= 1
        original(record)  # type: ignore[arg-type]

    world.services.requests.create = create_and_retry  # type: ignore[method-assign]
    assert post(client, "k3").status_code == 202
    assert len(world.requests.records) == 1


def test_a_key_whose_first_upload_died_before_recording_is_taken_over(
    client: FlaskClient, world: FakeWorld
) -> None:
    assert post(client, "k4").status_code == 202
    (key,) = world.upload_keys.keys.values()
    request_id = new_request_id()
    # As the first process left it: reserved under a request id it never recorded.
    world.upload_keys.keys[key.key_id] = dataclasses.replace(
        key, request_id=request_id, state=PROCESSING
    )
    world.clock.advance(ACCEPT_LEASE.total_seconds() + 1)
    answer = post(client, "k4")
    assert answer.status_code == 202
    assert answer.get_json()["request_id"] == request_id
    assert request_id in world.requests.records


def test_a_key_whose_first_upload_died_after_recording_gets_that_request(
    client: FlaskClient, world: FakeWorld
) -> None:
    first = post(client, "k5").get_json()
    (key,) = world.upload_keys.keys.values()
    world.upload_keys.keys[key.key_id] = dataclasses.replace(
        key, state=PROCESSING, total_rows=None, total_images=None
    )
    answer = post(client, "k5")
    assert answer.status_code == 202 and answer.get_json() == first
    assert len(world.requests.records) == 1


def test_a_key_lasts_a_day(client: FlaskClient, world: FakeWorld) -> None:
    first = post(client, "k6").get_json()
    world.clock.advance(KEY_LIFETIME.total_seconds() + 1)
    later = post(client, "k6").get_json()
    assert later["request_id"] != first["request_id"]


def test_two_clients_keys_never_meet() -> None:
    alice, bob = new_api_key("alice"), new_api_key("bob")
    world = fake_world(Settings(api_keys=parse_api_keys(f"{alice.entry},{bob.entry}")))
    client = create_app(world.services).test_client()
    as_alice = post(client, "same", Authorization=f"Bearer {alice.key}")
    as_bob = post(client, "same", OTHER_CSV, Authorization=f"Bearer {bob.key}")
    assert as_alice.status_code == as_bob.status_code == 202
    assert as_alice.get_json()["request_id"] != as_bob.get_json()["request_id"]
