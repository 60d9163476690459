"""The store contract (tests/integration/test_store_contract.py) for what issue 11 added, run
the same way, on the fake stores and on the Firestore adapters over Google's emulator: image
pages filtered by state, the bytes of the done images, and a delivery restarted as a new series
beside the old one."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from shared.domain.model import DeliveryAttempt, DeliveryState, ImageState, WebhookDelivery
from tests.integration import test_store_contract as contract
from tests.integration.test_store_contract import (
    JPEG,
    Stores,
    begin,
    jobs,
    new_request,
    settle,
    tally_of,
)

pytestmark = pytest.mark.integration

# The contract's fixtures: each test here runs on the fakes and on Firestore, as there.
db = contract.db
stores = contract.stores


def test_a_page_filtered_by_state_holds_only_that_state_in_input_order(stores: Stores) -> None:
    request_id = new_request(stores, 30)
    all_jobs = jobs(request_id, 30)
    stores.images.create_missing(all_jobs)
    # Every seventh image fails, every third of the rest is done, the others stay pending.
    for job in all_jobs:
        attempt = begin(stores, request_id, job.image_id)
        if job.row % 7 == 0:
            stores.images.record_failed(
                attempt, request_id, job.image_id, code="http_error", message="404"
            )
        elif job.row % 3 == 0:
            stores.images.record_done(
                attempt, request_id, job.image_id, output_url="u", output_path="p", image=JPEG,
                source_bytes=job.row,
            )  # fmt: skip
    images = stores.images
    failed = images.page(request_id, after=None, limit=3, state=ImageState.FAILED)
    assert [r.row for r in failed] == [0, 7, 14]
    rest = images.page(request_id, after=failed[-1].image_id, limit=3, state=ImageState.FAILED)
    assert [r.row for r in rest] == [21, 28]
    done = images.page(request_id, after=None, limit=100, state=ImageState.DONE)
    assert [r.row for r in done] == [3, 6, 9, 12, 15, 18, 24, 27]
    pending = images.page(request_id, after=None, limit=100, state=ImageState.PENDING)
    assert len(pending) == 30 - 5 - 8
    assert all(r.state is ImageState.PENDING for r in pending)
    # The bytes of the done images only: sources as recorded, outputs JPEG's 10 bytes each.
    totals = tally_of(stores, request_id).bytes
    assert (totals.source, totals.output) == (sum(r.row for r in done), 8 * len(JPEG.data))
    empty = tally_of(stores, new_request(stores, 1)).bytes
    assert (empty.source, empty.output) == (0, 0)


def delivered(stores: Stores, request_id: str, status_code: int | None = 200) -> None:
    now = datetime.now(UTC)
    delivery = stores.deliveries.get(request_id)
    assert delivery is not None
    claimed = stores.deliveries.claim(delivery, now=now, lease_seconds=60)
    assert claimed is not None
    ok = status_code == 200
    attempt = DeliveryAttempt(len(claimed.attempts) + 1, now, now, status_code, None, ok)
    state = DeliveryState.DELIVERED if ok else DeliveryState.GAVE_UP
    assert stores.deliveries.record_attempt(claimed, attempt, state=state, next_attempt_at=None)


def test_a_restart_keeps_the_finished_series_and_starts_a_new_one(stores: Stores) -> None:
    request_id = new_request(stores, 1)
    assert settle(stores, request_id)
    now = datetime.now(UTC)
    assert stores.deliveries.restart(request_id, now=now) is None  # its first series runs
    delivered(stores, request_id)
    restarted = stores.deliveries.restart(request_id, now=now)
    assert isinstance(restarted, WebhookDelivery)
    assert (restarted.state, restarted.attempts, restarted.message_id) == (
        DeliveryState.PENDING,
        (),
        f"msg_{request_id}",
    )
    assert [s.state for s in restarted.earlier_series] == [DeliveryState.DELIVERED]
    assert [a.status_code for a in restarted.earlier_series[0].attempts] == [200]
    # The new series is due at once, claimed and recorded like the first one.
    assert restarted.due_at() is None
    delivered(stores, request_id, status_code=None)
    again = stores.deliveries.restart(request_id, now=now)
    assert again is not None
    assert [s.state for s in again.earlier_series] == [
        DeliveryState.DELIVERED,
        DeliveryState.GAVE_UP,
    ]
    assert stores.deliveries.restart(new_request(stores, 1), now=now) is None  # no delivery


def test_two_resends_at_once_start_one_series(stores: Stores) -> None:
    request_id = new_request(stores, 1)
    assert settle(stores, request_id)
    delivered(stores, request_id)
    now = datetime.now(UTC)
    with ThreadPoolExecutor(5) as pool:
        outcomes = list(
            pool.map(lambda _: stores.deliveries.restart(request_id, now=now), range(5))
        )
    assert sum(o is not None for o in outcomes) == 1
    stored = stores.deliveries.get(request_id)
    assert stored is not None and len(stored.earlier_series) == 1
