"""What goes over HTTP (issue 5, "Access" and "Output safety"), through the very Flask glue both
profiles use: the gateway's app and the Cloud Functions' entry points, over fake services.

Every answer is JSON that says so and forbids sniffing, input echoed in it can never become
markup, and the keys decide who gets in before the body is looked at.
"""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import flask
import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from local_profile.gateway import create_app
from shared.adapters.egress.address_guard import AddressGuard, no_lookups
from shared.config import Limits, Settings, parse_api_keys
from shared.domain.access import new_api_key
from tests.fakes import FakeWorld, fake_world

ROOT = Path(__file__).resolve().parents[2]
ALICE = new_api_key("alice")
BOB = new_api_key("bob")
CSV = b"Serial Number,Product Name,Input Image Urls\n1,Lamp,https://img.test/a.jpg\n"


def keyed_world(**overrides: Any) -> FakeWorld:
    settings = {
        "api_keys": parse_api_keys(f"{ALICE.entry},{BOB.entry}"),
        "upload_rate_limit": (3, 60.0),
        "limits": Limits(max_upload_bytes=4096),
        **overrides,
    }
    return fake_world(Settings(**settings))


@pytest.fixture
def world() -> FakeWorld:
    return keyed_world()


@pytest.fixture
def client(world: FakeWorld) -> FlaskClient:
    return create_app(world.services).test_client()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def post_csv(
    client: FlaskClient,
    data: bytes = CSV,
    key: str | None = ALICE.key,
    **form: str,
) -> TestResponse:
    return client.post(
        "/upload",
        data={"file": (io.BytesIO(data), "products.csv", "text/csv"), **form},
        headers=auth(key) if key else {},
        content_type="multipart/form-data",
    )


def assert_api_answer(response: TestResponse) -> dict[str, Any]:
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    body: dict[str, Any] = json.loads(response.get_data())
    if response.status_code >= 400:
        assert set(body) == {"error"}
        assert {"code", "message", "details"} <= set(body["error"])
    return body


# --- every answer -----------------------------------------------------------------------------


def test_every_api_answer_is_json_with_nosniff(client: FlaskClient, world: FakeWorld) -> None:
    accepted = post_csv(client)
    request_id = accepted.get_json()["request_id"]
    answers = {
        202: accepted,
        400: post_csv(client, b"not,a,product,csv\n"),
        401: client.get(f"/status/{request_id}"),
        404: client.get(f"/status/{'A' * 22}", headers=auth(ALICE.key)),
        413: post_csv(client, b"x" * 5000),
        415: client.post("/upload", data=b"a,b", headers=auth(BOB.key)),
        200: client.get(f"/status/{request_id}?details=1", headers=auth(ALICE.key)),
    }
    # Every upload counts, accepted or not: this is alice's fourth with a limit of three.
    answers[429] = post_csv(client)
    for status, response in answers.items():
        assert response.status_code == status, (status, response.get_data())
        assert_api_answer(response)
    assert answers[202].headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nothing-here", 404, "not_found"),
        ("GET", "/<script>alert(1)</script>", 404, "not_found"),
        ("GET", "/upload", 405, "method_not_allowed"),
        ("DELETE", "/status/AAAAAAAAAAAAAAAAAAAAAA", 405, "method_not_allowed"),
    ],
)
def test_framework_errors_are_json_too_and_never_html(
    client: FlaskClient, method: str, path: str, status: int, code: str
) -> None:
    response = client.open(path, method=method)
    assert response.status_code == status
    body = assert_api_answer(response)
    assert body["error"]["code"] == code
    assert b"<" not in response.get_data()
    if status == 405:
        assert "GET" in response.headers["Allow"] or "POST" in response.headers["Allow"]


def test_gateway_only_routes_answer_with_nosniff(client: FlaskClient) -> None:
    for path in ("/healthz", "/webhook"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    unsigned = client.post("/webhook", json={})
    assert unsigned.status_code == 401
    assert unsigned.headers["X-Content-Type-Options"] == "nosniff"


def test_the_gateway_serves_the_openapi_document(client: FlaskClient) -> None:
    import yaml  # comes with schemathesis

    response = client.get("/openapi.yaml")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/yaml"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    document = yaml.safe_load(response.get_data())
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {
        "/upload",
        "/status/{request_id}",
        "/requests/{request_id}/webhook/resend",
    }
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"


def test_input_echoed_in_an_error_stays_escaped_json(client: FlaskClient) -> None:
    hostile = "javascript:<script>alert(document.cookie)</script>&amp;"
    response = post_csv(
        client, f"Serial Number,Product Name,Input Image Urls\n1,x,{hostile}\n".encode()
    )
    assert response.status_code == 400
    raw = response.get_data()
    assert b"<" not in raw and b">" not in raw and b"&" not in raw
    messages = " ".join(d["message"] for d in assert_api_answer(response)["error"]["details"])
    assert "<script>" in messages  # the same text, for a JSON parser


# --- access -----------------------------------------------------------------------------------


def test_an_upload_without_a_key_is_401_and_nothing_is_stored(
    client: FlaskClient, world: FakeWorld
) -> None:
    response = post_csv(client, key=None)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="imgsvc"'
    assert world.requests.records == {} and world.blobs.uploads == {}
    wrong = post_csv(client, key="isk_guess")
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]


def test_status_needs_a_key_even_for_a_malformed_id(client: FlaskClient) -> None:
    # Strangers learn nothing, not even which ids are well formed.
    assert client.get("/status/x").status_code == 401
    assert client.get("/status/x", headers=auth(ALICE.key)).status_code == 400


def test_a_request_is_404_to_every_key_but_its_owners(
    client: FlaskClient, world: FakeWorld
) -> None:
    request_id = post_csv(client).get_json()["request_id"]
    assert world.requests.records[request_id].owner == "alice"
    own = client.get(f"/status/{request_id}", headers=auth(ALICE.key))
    other = client.get(f"/status/{request_id}?details=1", headers=auth(BOB.key))
    assert own.status_code == 200 and own.get_json()["request_id"] == request_id
    assert other.status_code == 404
    assert other.get_json()["error"]["code"] == "not_found"


def test_the_rate_limit_answers_429_with_retry_after_before_reading_the_body(
    client: FlaskClient, world: FakeWorld
) -> None:
    for _ in range(3):
        assert post_csv(client).status_code == 202
    refused = post_csv(client)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert len(world.requests.records) == 3
    assert post_csv(client, key=BOB.key).status_code == 202


def test_without_keys_against_real_firestore_everyone_is_locked_out() -> None:
    world = fake_world(Settings())  # no API_KEYS, no emulator: production misconfigured
    client = create_app(world.services).test_client()
    assert post_csv(client, key=None).status_code == 401
    assert post_csv(client, key=ALICE.key).status_code == 401


def test_without_keys_on_the_emulator_the_api_is_open() -> None:
    world = fake_world(Settings(firestore_emulator_host="127.0.0.1:1"))
    client = create_app(world.services).test_client()
    response = post_csv(client, key=None)
    assert response.status_code == 202
    request_id = response.get_json()["request_id"]
    assert world.requests.records[request_id].owner is None
    assert client.get(f"/status/{request_id}").status_code == 200


# --- the Cloud Functions get the same controls without code of their own ----------------------


def load_function(name: str, world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"function_{name}", ROOT / "functions" / name / "main.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "instance_services", lambda: world.services)
    return module


def call_function(handler: Any, path: str, **request: Any) -> flask.Response:
    app = flask.Flask("function")
    with app.test_request_context(path, **request):
        response: flask.Response = handler(flask.request)
        return response


def test_cloud_functions_upload_and_status_check_keys_and_owners(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload = load_function("upload", world, monkeypatch).upload
    status = load_function("status", world, monkeypatch).status

    def post(key: str | None) -> flask.Response:
        return call_function(
            upload,
            "/upload",
            method="POST",
            data={"file": (io.BytesIO(CSV), "p.csv", "text/csv")},
            headers=auth(key) if key else {},
        )

    assert post(None).status_code == 401
    accepted = post(ALICE.key)
    assert accepted.status_code == 202
    assert accepted.headers["X-Content-Type-Options"] == "nosniff"
    request_id = accepted.get_json()["request_id"]
    path = f"/status/{request_id}"
    assert call_function(status, path).status_code == 401
    assert call_function(status, path, headers=auth(BOB.key)).status_code == 404
    own = call_function(status, path, headers=auth(ALICE.key))
    assert own.status_code == 200
    assert own.headers["X-Content-Type-Options"] == "nosniff"


# --- webhook URLs meet the address rules at upload ----------------------------------------------


@pytest.mark.parametrize(
    "webhook_url",
    [
        "http://127.0.0.1:8000/webhook",
        "http://0x7f000001/hook",
        "http://[::ffff:169.254.169.254]/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://10.0.0.5/hook",
        "http://[fd00::1]/hook",
        "http://user:pw@hooks.example/hook",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_FLUSHALL",
        "http://hooks.example/hook",  # a name: lookups are off here, so it cannot be checked
    ],
)
def test_a_webhook_url_the_address_rules_refuse_is_a_400_and_nothing_is_stored(
    world: FakeWorld, client: FlaskClient, webhook_url: str
) -> None:
    world.services.webhook_guard = AddressGuard(resolver=no_lookups)
    response = post_csv(client, webhook_url=webhook_url)
    assert response.status_code == 400
    assert assert_api_answer(response)["error"]["code"] == "invalid_webhook_url"
    assert "pw" not in response.get_data(as_text=True)
    assert world.requests.records == {} and world.blobs.uploads == {}
