"""The sweeper: whatever a lost message would have done, found again from Firestore.

Messages are hints (`shared.domain.messages`): Redis forgets its queues when it restarts, a
worker killed while holding a task takes it along, a process can die between writing an outcome
and queueing the next step. Firestore is the source of truth, and every request there carries
`sweep_at`: the moment by which, if nothing else has moved it on, the sweeper should look at
it. The sweeper reads the requests whose moment has passed (ordered by it, a page at a time
with a cursor) and for each:

- in progress and making progress (an image written within `stall_after`): looks again
  `stall_after` after the last write;
- in progress and stalled: re-drives it. Missing image documents are materialised again from
  the stored CSV, pending images whose retry is not still ahead are queued again (their attempt
  counted first: the worker may have died in it), and a request with every image settled is
  finalised. Each re-drive is a round: messages carry its number, so a queue that names its
  tasks takes them as new work, and the next look waits twice as long as the last, so a request
  that is merely queued behind a long one costs a few duplicates, not one per sweep;
- settled with its webhook still pending: queues the next attempt when it is overdue (its
  retry time or an attempt's claim passed by `sweep_grace`), else looks again then;
- settled with nothing left to do: never looks again (`sweep_at` cleared).

Every step is idempotent and every write conditional on what was read, so two sweepers, or a
sweeper racing the pipeline, change nothing twice. An idle sweep is one query that returns
nothing, however many requests have ever been made.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.domain.messages import DeliverWebhook, ProcessImage, Sweep
from shared.domain.model import DeliveryState, RequestRecord, RequestStatus
from shared.usecases.fan_out import queue_slices
from shared.usecases.finalize_request import fail_request, on_shard_settled
from shared.usecases.services import Services
from shared.usecases.uploaded_csv import InputLost, read_uploaded_table

log = logging.getLogger(__name__)

PAGE = 200
PENDING_PAGE = 500
# The wait before the next look doubles with each re-drive, up to 2**6 times stall_after.
MAX_BACKOFF_DOUBLINGS = 6


@dataclass
class SweepReport:
    """What one sweep did, by request id."""

    looked_at: int = 0
    redriven: list[str] = field(default_factory=list)
    webhooks_requeued: list[str] = field(default_factory=list)
    finished_watching: list[str] = field(default_factory=list)


def sweep(services: Services, *, again_in: float = 0.0) -> SweepReport:
    """`again_in`: queue one more sweep for that many seconds later. Cloud Scheduler's job
    runs each minute; asking for another sweep half a minute on gives production the same
    cadence as the local ticker's, and so the same bounds. It is asked first, so a sweep that
    dies on the way still has its follower; a follower lost with its queue is made up by the
    next minute's job."""
    if again_in > 0:
        services.queue.send([Sweep()], delay_seconds=again_in)
    now = services.clock.now()
    report = SweepReport()
    after: RequestRecord | None = None
    while True:
        due = services.requests.due_for_sweep(now, after=after, limit=PAGE)
        for request in due:
            report.looked_at += 1
            try:
                _look_at(services, request, now, report)
            except Exception:
                # One request's trouble must not stop the sweep of the others.
                log.exception("sweeping %s failed; it stays due", request.request_id)
        if len(due) < PAGE:
            break
        after = due[-1]
    if report.redriven or report.webhooks_requeued:
        log.warning(
            "sweep: %d looked at, re-drove %s, queued webhooks of %s",
            report.looked_at,
            report.redriven,
            report.webhooks_requeued,
        )
    return report


def _look_at(
    services: Services, request: RequestRecord, now: datetime, report: SweepReport
) -> None:
    if request.status is RequestStatus.IN_PROGRESS:
        _look_at_running(services, request, now, report)
    else:
        _look_at_settled(services, request, now, report)


def _look_at_running(
    services: Services, request: RequestRecord, now: datetime, report: SweepReport
) -> None:
    settings = services.settings
    stall = timedelta(seconds=settings.stall_after)
    # The latest settled image (every settling counts in a tally), or the request's own
    # last write: when neither moved for `stall_after`, something was lost.
    settled_at = services.images.tally(request.request_id, request.tally_shards).updated_at
    last = max(settled_at or request.updated_at, request.updated_at)
    if now - last < stall:
        # Moving: nothing is lost (yet). Progress resets the backoff.
        services.requests.reschedule_sweep(request, sweep_at=last + stall, sweeps=0)
        return
    round_ = request.sweeps + 1
    wait = stall * 2 ** min(request.sweeps, MAX_BACKOFF_DOUBLINGS)
    # Taking the round is a conditional write: of two sweepers, one re-drives.
    if not services.requests.reschedule_sweep(request, sweep_at=now + wait, sweeps=round_):
        return
    report.redriven.append(request.request_id)
    _redrive(services, request, now, round_)


def _redrive(services: Services, request: RequestRecord, now: datetime, round_: int) -> None:
    request_id = request.request_id
    if not services.images.has_unsettled(request_id):
        log.warning("request %s stalled with every image settled: finalising", request_id)
        on_shard_settled(services, request_id)
        return
    if services.images.count(request_id) < request.total_images:
        log.warning(
            "request %s stalled: materialising its images again (round %d)", request_id, round_
        )
        try:
            table = read_uploaded_table(services, request)
        except InputLost as lost:
            fail_request(services, request_id, lost.code, lost.message)
            return
        queue_slices(services, request_id, table, round_=round_)
        return
    grace = timedelta(seconds=services.settings.sweep_grace)
    overdue: list[str] = []
    after: str | None = None
    while True:
        page = services.images.pending(request_id, after=after, limit=PENDING_PAGE)
        for image in page:
            # A retry still ahead is an image waiting on purpose, not a lost one.
            if image.retry_at is None or image.retry_at + grace <= now:
                overdue.append(image.image_id)
        if len(page) < PENDING_PAGE:
            break
        after = page[-1].image_id
    if overdue:
        log.warning(
            "request %s stalled: queueing %d images again (round %d)",
            request_id,
            len(overdue),
            round_,
        )
        services.queue.send([ProcessImage(request_id, i, round=round_) for i in overdue])


def _look_at_settled(
    services: Services, request: RequestRecord, now: datetime, report: SweepReport
) -> None:
    delivery = services.deliveries.get(request.request_id)
    if delivery is None or delivery.state is not DeliveryState.PENDING:
        services.requests.reschedule_sweep(request, sweep_at=None, sweeps=request.sweeps)
        report.finished_watching.append(request.request_id)
        return
    grace = timedelta(seconds=services.settings.sweep_grace)
    due = delivery.due_at()
    if due is not None and due + grace > now:
        # The next attempt (or the end of a live claim) is still ahead: look just after it.
        services.requests.reschedule_sweep(request, sweep_at=due + grace, sweeps=request.sweeps)
        return
    if services.requests.reschedule_sweep(request, sweep_at=now + grace, sweeps=request.sweeps):
        log.warning("webhook of %s overdue: queueing its next attempt", request.request_id)
        services.queue.send([DeliverWebhook(request.request_id)])
        report.webhooks_requeued.append(request.request_id)
