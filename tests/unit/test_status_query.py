"""GET /status/{id}: the details filtered by state, and a query read strictly (openapi.yaml
says what each parameter may be; anything else is a 400 naming it)."""

from __future__ import annotations

import io

import pytest
from flask.testing import FlaskClient

from local_profile.gateway import create_app
from shared.config import Settings
from shared.domain.model import ImageState
from shared.usecases.report_status import report_status
from tests.fakes import FakeWorld, fake_world, run_queue

CSV = b"Serial Number,Product Name,Input Image Urls\r\n" + b"".join(
    f'{n},P{n},"https://img.test/{n}-a.jpg,https://img.test/{n}-b.jpg"\r\n'.encode()
    for n in range(1, 6)
)


@pytest.fixture
def world() -> FakeWorld:
    # Open access, as on a developer's machine (no API_KEYS, the emulator).
    w = fake_world(Settings(webhook_secrets=(), firestore_emulator_host="127.0.0.1:1"))
    for n in range(1, 6):
        w.fetcher.answers[f"https://img.test/{n}-a.jpg"] = b"a"
        # Every second row's second image is gone: 2 of 10 fail.
        w.fetcher.answers[f"https://img.test/{n}-b.jpg"] = b"b" if n % 2 else None
    return w


@pytest.fixture
def client(world: FakeWorld) -> FlaskClient:
    return create_app(world.services).test_client()


def finished_request(client: FlaskClient, world: FakeWorld) -> str:
    answer = client.post(
        "/upload",
        data={"file": (io.BytesIO(CSV), "p.csv", "text/csv")},
        content_type="multipart/form-data",
    )
    run_queue(world)
    return str(answer.get_json()["request_id"])


def test_details_filtered_by_state_list_only_those_images_in_input_order(
    client: FlaskClient, world: FakeWorld
) -> None:
    request_id = finished_request(client, world)
    failed = client.get(f"/status/{request_id}?details=1&state=failed").get_json()
    assert [(i["row"], i["position"], i["state"]) for i in failed["images"]] == [
        (2, 2, "failed"),
        (4, 2, "failed"),
    ]
    assert all(i["error"]["code"] == "http_error" for i in failed["images"])
    assert failed["progress"] == {"total": 10, "done": 8, "failed": 2, "pending": 0}
    done = client.get(f"/status/{request_id}?details=true&state=done").get_json()
    assert len(done["images"]) == 8 and {i["state"] for i in done["images"]} == {"done"}
    pending = client.get(f"/status/{request_id}?details=1&state=pending").get_json()
    assert pending["images"] == [] and pending["next_page_token"] is None


def test_a_filtered_listing_pages_with_the_same_tokens(
    client: FlaskClient, world: FakeWorld
) -> None:
    request_id = finished_request(client, world)
    seen = []
    url = f"/status/{request_id}?details=1&state=done&page_size=3"
    page = client.get(url).get_json()
    while True:
        seen += [i["id"] for i in page["images"]]
        if page["next_page_token"] is None:
            break
        assert len(page["images"]) == 3
        page = client.get(f"{url}&page_token={page['next_page_token']}").get_json()
    assert seen == [
        "0000000-00", "0000000-01", "0000001-00", "0000002-00", "0000002-01",
        "0000003-00", "0000004-00", "0000004-01",
    ]  # fmt: skip


def test_the_use_case_filters_through_the_repository(world: FakeWorld) -> None:
    client = create_app(world.services).test_client()
    request_id = finished_request(client, world)
    report = report_status(world.services, request_id, details=True, state=ImageState.FAILED)
    assert report.details is not None
    assert [i.input_url for i in report.details.images] == [
        "https://img.test/2-b.jpg",
        "https://img.test/4-b.jpg",
    ]


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("details=null", ["details"]),
        ("details=yes", ["details"]),
        ("details=1&state=broken", ["state"]),
        ("details=1&state=", ["state"]),
        ("details=1&page_size=0", ["page_size"]),
        ("details=1&page_size=501", ["page_size"]),
        ("details=1&page_size=ten", ["page_size"]),
        ("details=1&page_token=", ["page_token"]),
        ("details=1&page_token=bm90LWEtdG9rZW4", ["page_token"]),
        ("details=maybe&page_size=-1&state=lost", ["details", "page_size", "state"]),
    ],
)
def test_a_query_the_description_does_not_allow_is_a_400_naming_each_parameter(
    client: FlaskClient, world: FakeWorld, query: str, names: list[str]
) -> None:
    request_id = finished_request(client, world)
    answer = client.get(f"/status/{request_id}?{query}")
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    assert error["code"] == "invalid_query"
    assert [
        n for n in ("details", "page_size", "page_token", "state") if n in error["message"]
    ] == (names)


def test_a_page_token_is_an_image_id_so_a_listing_may_start_anywhere(
    client: FlaskClient, world: FakeWorld
) -> None:
    request_id = finished_request(client, world)
    page = client.get(f"/status/{request_id}?details=1&page_token=0000003-01").get_json()
    assert [i["id"] for i in page["images"]] == ["0000004-00", "0000004-01"]
