"""POST /requests/{id}/webhook/resend over fakes: the same message again, as a new series of
attempts beside the old ones, only for the request's owner and only once the request ended."""

from __future__ import annotations

import io
import json

import pytest
from flask.testing import FlaskClient

from local_profile.gateway import create_app
from shared.config import Settings, parse_api_keys
from shared.domain.access import new_api_key
from shared.domain.model import DeliveryState
from shared.usecases.accept_upload import accept_upload
from shared.usecases.deliver_webhook import deliver_webhook
from shared.usecases.report_status import UnknownRequest
from shared.usecases.resend_webhook import ResendRefused, resend_webhook
from tests.fakes import FakeWorld, fake_world, run_queue

SECRET = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQ="
CSV = b"Serial Number,Product Name,Input Image Urls\r\n1,Chair,https://img.test/a.jpg\r\n"
ALICE = new_api_key("alice")
BOB = new_api_key("bob")


def world(**overrides: object) -> FakeWorld:
    settings = Settings(webhook_secrets=(SECRET,), webhook_retry_schedule=(5, 60), **overrides)  # type: ignore[arg-type]
    w = fake_world(settings)
    w.fetcher.answers["https://img.test/a.jpg"] = b"a"
    return w


def finished(
    w: FakeWorld, *, webhook: str | None = "https://hooks.test/x", owner: str | None = None
) -> str:
    request_id = accept_upload(w.services, CSV, webhook_url=webhook, owner=owner).request_id
    run_queue(w)
    return request_id


def test_a_resend_after_delivery_sends_the_same_message_as_a_new_series() -> None:
    w = world()
    request_id = finished(w)
    assert deliver_webhook(w.services, request_id) is DeliveryState.DELIVERED
    w.queue.webhooks.clear()

    restarted = resend_webhook(w.services, request_id, owner=None)
    assert restarted.state is DeliveryState.PENDING and restarted.attempts == ()
    assert w.queue.webhooks == [(request_id, 0.0)]
    w.clock.advance(30)
    assert deliver_webhook(w.services, request_id) is DeliveryState.DELIVERED

    (_, first_body, first_headers), (_, again_body, again_headers) = w.webhooks.sent
    assert again_body == first_body
    assert again_headers["webhook-id"] == first_headers["webhook-id"] == f"msg_{request_id}"
    assert again_headers["webhook-timestamp"] != first_headers["webhook-timestamp"]
    delivery = w.deliveries.get(request_id)
    assert delivery is not None
    assert [a.number for a in delivery.attempts] == [1]
    assert len(delivery.earlier_series) == 1
    assert delivery.earlier_series[0].state is DeliveryState.DELIVERED
    assert [a.succeeded for a in delivery.earlier_series[0].attempts] == [True]


def test_a_resend_after_giving_up_starts_the_retry_schedule_again() -> None:
    w = world()
    request_id = finished(w)
    w.webhooks.statuses = [500, 500, 500]
    deliver_webhook(w.services, request_id)
    w.clock.advance(5)
    deliver_webhook(w.services, request_id)
    w.clock.advance(60)
    assert deliver_webhook(w.services, request_id) is DeliveryState.GAVE_UP

    resend_webhook(w.services, request_id, owner=None)
    w.webhooks.statuses = [503]
    w.queue.webhooks.clear()
    assert deliver_webhook(w.services, request_id) is DeliveryState.PENDING
    assert w.queue.webhooks == [(request_id, 5)]  # the schedule's first step, not its last
    delivery = w.deliveries.get(request_id)
    assert delivery is not None
    assert [a.status_code for a in delivery.earlier_series[0].attempts] == [500, 500, 500]
    assert [a.status_code for a in delivery.attempts] == [503]


def test_no_resend_while_the_request_runs_without_a_webhook_or_while_a_series_runs() -> None:
    w = world()
    running = accept_upload(w.services, CSV, webhook_url="https://hooks.test/x").request_id
    with pytest.raises(ResendRefused) as refused:
        resend_webhook(w.services, running, owner=None)
    assert refused.value.code == "in_progress"

    without = finished(w, webhook=None)
    with pytest.raises(ResendRefused) as refused:
        resend_webhook(w.services, without, owner=None)
    assert refused.value.code == "no_webhook"

    pending = finished(w)
    w.webhooks.statuses = [500]
    assert deliver_webhook(w.services, pending) is DeliveryState.PENDING
    w.queue.webhooks.clear()
    with pytest.raises(ResendRefused) as refused:
        resend_webhook(w.services, pending, owner=None)
    assert refused.value.code == "delivery_pending"
    assert "next attempt at" in refused.value.message
    assert w.queue.webhooks == []  # nothing queued by a refused resend


def test_only_the_owner_may_resend() -> None:
    w = world()
    request_id = finished(w, owner="alice")
    deliver_webhook(w.services, request_id)
    with pytest.raises(UnknownRequest):
        resend_webhook(w.services, request_id, owner="bob")
    with pytest.raises(UnknownRequest):
        resend_webhook(w.services, request_id, owner=None)
    assert resend_webhook(w.services, request_id, owner="alice").state is DeliveryState.PENDING


# --- over HTTP ----------------------------------------------------------------------------


def keyed_client() -> tuple[FakeWorld, FlaskClient]:
    w = world(api_keys=parse_api_keys(f"{ALICE.entry},{BOB.entry}"), upload_rate_limit=(2, 60.0))
    return w, create_app(w.services).test_client()


def upload_as(client: FlaskClient, key: str, **form: str) -> str:
    answer = client.post(
        "/upload",
        data={"file": (io.BytesIO(CSV), "p.csv", "text/csv"), **form},
        headers={"Authorization": f"Bearer {key}"},
        content_type="multipart/form-data",
    )
    assert answer.status_code == 202, answer.get_data()
    return str(answer.get_json()["request_id"])


def test_resend_over_http_answers_401_404_409_then_202_for_the_owner() -> None:
    w, client = keyed_client()
    request_id = upload_as(client, ALICE.key, webhook_url="https://hooks.test/x")
    path = f"/requests/{request_id}/webhook/resend"

    def post(key: str | None) -> tuple[int, dict[str, object]]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        answer = client.post(path, headers=headers)
        assert answer.headers["Content-Type"] == "application/json"
        return answer.status_code, json.loads(answer.get_data())

    assert post(None)[0] == 401
    assert post(BOB.key)[0] == 404
    status, body = post(ALICE.key)
    assert (status, body["error"]["code"]) == (409, "in_progress")  # type: ignore[index]
    run_queue(w)
    deliver_webhook(w.services, request_id)
    status, body = post(ALICE.key)
    assert status == 202
    webhook = body["webhook"]
    assert isinstance(webhook, dict)
    assert webhook["state"] == "pending" and webhook["attempts"] == []
    assert [s["state"] for s in webhook["earlier_series"]] == ["delivered"]
    assert client.post(f"/requests/{'A' * 22}/webhook/resend").status_code == 401
    assert (
        client.post(
            "/requests/not-an-id/webhook/resend", headers={"Authorization": f"Bearer {ALICE.key}"}
        ).status_code
        == 400
    )


def test_resends_have_a_rate_of_their_own_per_key() -> None:
    w, client = keyed_client()
    request_id = upload_as(client, ALICE.key, webhook_url="https://hooks.test/x")
    run_queue(w)
    headers = {"Authorization": f"Bearer {ALICE.key}"}
    codes = []
    for _ in range(3):
        deliver_webhook(w.services, request_id)
        codes.append(client.post(f"/requests/{request_id}/webhook/resend", headers=headers))
    assert [c.status_code for c in codes] == [202, 202, 429]
    assert int(codes[2].headers["Retry-After"]) >= 1
    # Resends are counted apart from uploads: alice may still upload her second CSV.
    upload_as(client, ALICE.key)


def test_the_upload_cloud_function_answers_the_resend_as_hosting_forwards_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.unit.test_http_answers import call_function, load_function

    w, client = keyed_client()
    upload = load_function("upload", w, monkeypatch).upload
    request_id = upload_as(client, ALICE.key, webhook_url="https://hooks.test/x")
    run_queue(w)
    deliver_webhook(w.services, request_id)
    path = f"/requests/{request_id}/webhook/resend"
    bob = call_function(upload, path, method="POST", headers={"Authorization": f"Bearer {BOB.key}"})
    assert bob.status_code == 404
    wrong_method = call_function(upload, path, method="GET")
    assert wrong_method.status_code == 405 and wrong_method.headers["Allow"] == "POST"
    mine = call_function(
        upload, path, method="POST", headers={"Authorization": f"Bearer {ALICE.key}"}
    )
    assert mine.status_code == 202
    assert mine.headers["X-Content-Type-Options"] == "nosniff"
    assert w.queue.webhooks[-1] == (request_id, 0.0)


def test_a_resend_whose_message_is_lost_is_found_again_by_the_sweep() -> None:
    from shared.usecases.sweep import sweep

    w = world()
    request_id = finished(w)
    deliver_webhook(w.services, request_id)
    w.clock.advance(w.services.settings.sweep_grace * 2)
    assert sweep(w.services).finished_watching == [request_id]
    request = w.requests.get(request_id)
    assert request is not None and request.sweep_at is None  # nothing left to watch
    resend_webhook(w.services, request_id, owner=None)
    w.queue.webhooks.clear()  # the queued message is lost
    w.clock.advance(w.services.settings.sweep_grace * 3)
    report = sweep(w.services)
    assert report.webhooks_requeued == [request_id]
    assert w.queue.webhooks and w.queue.webhooks[-1][0] == request_id
    assert deliver_webhook(w.services, request_id) is DeliveryState.DELIVERED
