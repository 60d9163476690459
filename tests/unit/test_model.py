"""A model of the whole pipeline under faults, explored by hypothesis over the honest fakes.

Clients upload; queued messages are delivered, duplicated, dropped and reordered; every use
case runs as a task that pauses at each port call it makes (a store read or write, a fetch, a
queue send, a webhook POST), so other tasks, sweeps and clock jumps interleave there, and any
task may crash at any port call, before or after the call takes effect (its message then comes
back as a redelivery, or is lost). The webhook receiver answers 2xx, 503 or not at all.

After the last step the queue is drained, the clock moved on and the sweeper run until nothing
is left, and then, as a user would see it:
- every request is completed or failed;
- each webhook message was accepted with a 2xx, always under its request's webhook-id, and
  more than once only where an attempt's sender died (or lost its claim) after the receiver
  accepted it and before it was recorded;
- the output CSV's URLs are the `done` outputs of the status details, failed images leave an
  empty slot, and the final counts match;
and at every step: an image's first recorded outcome never changes, progress never goes back.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Callable, Sequence
from typing import Any

import greenlet
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from shared.config import Settings
from shared.domain.errors import ErrorCode, ImageFailure, RetryLater
from shared.domain.messages import Message, ShardSettled, Sweep
from shared.domain.model import DeliveryState, ImageState, RequestStatus
from shared.entrypoints.tasks import handle
from shared.ports import WebhookResponse
from shared.usecases import accept_upload as accept_upload_module
from shared.usecases import fan_out
from shared.usecases.accept_upload import accept_upload
from tests.fakes import FakeWorld, fake_world

SECRET = "whsec_" + "bW9kZWwtc2VjcmV0LWtleQ=="
PORTS = (
    "requests",
    "images",
    "deliveries",
    "blobs",
    "fetcher",
    "queue",
    "events",
    "webhooks",
    "fetch_limiter",
)


KINDS = ["good", "twin", "same", "broken", "gone", "flaky", "slow", "unstable", "poison"]


class Crash(BaseException):
    """The process running a task died (a BaseException: no use case may catch it)."""


@dataclasses.dataclass
class Envelope:
    message: Message
    not_before: float  # seconds on the model's clock
    redelivered: bool = False


class ModelQueue:
    """TaskQueue and ImageEvents: what is sent waits here for the model to deliver it."""

    def __init__(self, model: PipelineModel) -> None:
        self.model = model
        self.waiting: list[Envelope] = []

    def send(self, messages: Sequence[Message], *, delay_seconds: float = 0.0) -> None:
        due = self.model.seconds() + delay_seconds
        self.waiting.extend(Envelope(m, due) for m in messages)

    def shard_settled(self, request_id: str, shard: int) -> None:
        self.send([ShardSettled(request_id, shard)])


class Receiver:
    """The client's webhook endpoint: answers as the model says, remembers what it accepted."""

    def __init__(self) -> None:
        self.answers: list[int | None] = []
        self.accepted: dict[str, int] = {}  # webhook-id -> 2xx answers given
        self.ids: set[str] = set()

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> WebhookResponse:
        status = self.answers.pop(0) if self.answers else 200
        self.ids.add(headers["webhook-id"])
        if status is None:
            return WebhookResponse(None, "timed out")
        if 200 <= status < 300:
            message_id = headers["webhook-id"]
            self.accepted[message_id] = self.accepted.get(message_id, 0) + 1
        return WebhookResponse(status, None)


@dataclasses.dataclass
class Task:
    envelope: Envelope
    runner: greenlet.greenlet
    paused_at: str = ""
    # Its process died: whatever the code would still do on the way out (a `finally`, an
    # `except BaseException` that tidies up) never happens, as with a SIGKILL.
    dead: bool = False
    posted_ok_for: str | None = None  # a 2xx POST of this request's webhook, not yet recorded
    in_call: bool = False  # one of its port calls is running


class PausingPort:
    """Stands for one port of Services: every call, made from a task, first yields to the
    model, which then lets it happen, or crashes the task before or after it happens."""

    def __init__(self, model: PipelineModel, name: str, real: object) -> None:
        self._model, self._name, self._real = model, name, real

    def __getattr__(self, attribute: str) -> Any:
        target = getattr(self._real, attribute)
        if not callable(target):
            return target
        return lambda *args, **kwargs: self._model.port_call(
            self._name, attribute, target, args, kwargs
        )


class PipelineModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # Slices of two images: a request has several, materialised in any order, so they
        # race the finaliser as the slices of 500 do in a big request.
        self._slice_jobs = fan_out.SLICE_JOBS
        fan_out.SLICE_JOBS = 2
        # Request ids in upload order, so that a failing run replays exactly (the sweeper
        # visits requests in id order among those due at the same moment).
        self._new_request_id = accept_upload_module.new_request_id
        ids = iter(range(10**6))
        accept_upload_module.new_request_id = lambda: f"{next(ids):022d}"
        self.settings = Settings(
            webhook_secrets=(SECRET,),
            webhook_retry_schedule=(5, 60),
            image_max_attempts=3,
            stall_after=60,
            sweep_grace=30,
        )
        self.world: FakeWorld = fake_world(self.settings)
        self.start = self.world.clock.now()
        self.queue = ModelQueue(self)
        self.receiver = Receiver()
        real = dataclasses.replace(
            self.world.services, queue=self.queue, events=self.queue, webhooks=self.receiver
        )
        self.services = dataclasses.replace(
            real, **{name: PausingPort(self, name, getattr(real, name)) for name in PORTS}
        )
        self.main = greenlet.getcurrent()
        self.tasks: list[Task] = []
        self.by_runner: dict[greenlet.greenlet, Task] = {}
        self.requests: list[str] = []
        self.first_outcomes: dict[tuple[str, str], tuple[ImageState, str | None]] = {}
        self.progress_seen: dict[str, int] = {}
        self.excused: dict[str, int] = {}  # duplicate acceptances a dead sender explains
        self.finalising = False

    # ---- the machinery --------------------------------------------------------------------

    def seconds(self) -> float:
        return (self.world.clock.now() - self.start).total_seconds()

    def port_call(
        self,
        port: str,
        method: str,
        target: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        task = self.by_runner.get(greenlet.getcurrent())
        if task is None:  # the model itself, or an upload: no pausing
            return target(*args, **kwargs)
        if task.dead:
            raise Crash
        if task.in_call:
            # Made while another of its calls runs: Storage reading the output CSV's chunks
            # from a generator that reads the images. Part of that call, which paused (and
            # may crash) before or after it as a whole; pausing here too would hand the model
            # a task whose "crash after" has not happened yet.
            return target(*args, **kwargs)
        task.paused_at = f"{port}.{method}"
        decision = self.main.switch()
        if decision == "crash before":
            task.dead = True
            raise Crash
        task.in_call = True
        try:
            result = target(*args, **kwargs)
        except Crash:  # the call itself killed the process (a poisonous image)
            task.dead = True
            raise
        except Exception:
            if decision == "crash after":  # it happened (and failed); then the process died
                task.dead = True
                raise Crash from None
            raise
        finally:
            task.in_call = False
        if port == "webhooks" and isinstance(result, WebhookResponse) and result.ok:
            task.posted_ok_for = _request_of(task.envelope.message)
        if port == "deliveries" and method == "record_attempt":
            if result is False and task.posted_ok_for:
                self._excuse(task)  # its claim had passed to another attempt
            task.posted_ok_for = None
        if port == "images":
            # Checked at every write, not only between steps: a step may hold several.
            self.first_outcomes_stand()
        if decision == "crash after":
            task.dead = True
            raise Crash
        return result

    def _excuse(self, task: Task) -> None:
        assert task.posted_ok_for is not None
        self.excused[task.posted_ok_for] = self.excused.get(task.posted_ok_for, 0) + 1
        task.posted_ok_for = None

    def _begin(self, envelope: Envelope) -> Task:
        def run() -> None:
            try:
                handle(self.services, envelope.message, redelivered=envelope.redelivered)
            except RetryLater as later:  # what the worker does with it
                self.queue.send([envelope.message], delay_seconds=later.after_seconds)

        task = Task(envelope, greenlet.greenlet(run))
        self.tasks.append(task)
        self.by_runner[task.runner] = task
        self._resume(task, None)
        return task

    def _advance(self, task: Task, calls: int) -> None:
        for _ in range(calls):
            if task not in self.tasks:
                return
            self._resume(task, "go")

    def _resume(self, task: Task, decision: str | None) -> None:
        try:
            # The first switch starts the task, the later ones answer its pause.
            task.runner.switch() if decision is None else task.runner.switch(decision)
        except Crash:
            # The work itself killed the process (a poisonous image): as Celery's late
            # acknowledgement does, the message comes back, marked redelivered.
            self._crashed(task, redeliver=True)
            return
        if task.runner.dead:
            self._finished(task)

    def _crashed(self, task: Task, *, redeliver: bool) -> None:
        if task.posted_ok_for:
            self._excuse(task)
        self._finished(task)
        if redeliver:
            self.queue.waiting.append(
                Envelope(task.envelope.message, self.seconds(), redelivered=True)
            )

    def _finished(self, task: Task) -> None:
        self.tasks.remove(task)
        del self.by_runner[task.runner]

    # ---- rules ------------------------------------------------------------------------------

    @rule(
        rows=st.lists(
            st.lists(st.sampled_from(KINDS), min_size=1, max_size=3),
            min_size=1,
            max_size=3,
        ),
        webhook=st.booleans(),
    )
    def upload(self, rows: list[list[str]], webhook: bool) -> None:
        lines = ["Serial Number,Product Name,Input Image Urls"]
        n = len(self.requests)
        first: str | None = None
        for row_index, kinds in enumerate(rows):
            urls = []
            for position, kind in enumerate(kinds):
                if kind == "same" and first is not None:
                    urls.append(first)  # the request's first image again
                    continue
                url = f"https://img.test/{n}/{row_index}/{position}/{kind}.jpg"
                first = first or url
                urls.append(url)
                self.world.fetcher.answers[url] = _answer(kind, url)
            lines.append(f'{row_index + 1},Item {row_index},"{",".join(urls)}"')
        accepted = accept_upload(
            self.services,
            ("\r\n".join(lines) + "\r\n").encode(),
            webhook_url="https://hooks.test/in" if webhook else None,
        )
        self.requests.append(accepted.request_id)

    @precondition(lambda self: self.queue.waiting)
    @rule(
        pick=st.integers(min_value=0),
        redelivered=st.booleans(),
        calls=st.one_of(st.just(10_000), st.integers(min_value=0, max_value=12)),
    )
    def deliver(self, pick: int, redelivered: bool, calls: int) -> None:
        """Hand a due message to a new task and let it make `calls` port calls (often all)."""
        due = [e for e in self.queue.waiting if e.not_before <= self.seconds()]
        if not due:
            return
        envelope = due[pick % len(due)]
        self.queue.waiting.remove(envelope)
        if redelivered:
            envelope = dataclasses.replace(envelope, redelivered=True)
        task = self._begin(envelope)
        self._advance(task, calls)

    @precondition(lambda self: self.queue.waiting)
    @rule(
        first=st.integers(min_value=0),
        second=st.one_of(st.none(), st.integers(min_value=0)),
        calls=st.integers(min_value=0, max_value=8),
        first_redelivered=st.booleans(),
    )
    def interleave(
        self, first: int, second: int | None, calls: int, first_redelivered: bool
    ) -> None:
        """The races that matter most, made likely: a task pauses after `calls` port calls,
        another one (a second copy of the same message when `second` is None) runs whole,
        then the first goes on."""
        due = [e for e in self.queue.waiting if e.not_before <= self.seconds()]
        if not due:
            return
        a = due[first % len(due)]
        self.queue.waiting.remove(a)
        if first_redelivered:
            a = dataclasses.replace(a, redelivered=True)
        paused = self._begin(a)
        self._advance(paused, calls)
        if second is None:
            b = dataclasses.replace(a, redelivered=True)
        else:
            others = [e for e in self.queue.waiting if e.not_before <= self.seconds()]
            if not others:
                return
            b = others[second % len(others)]
            self.queue.waiting.remove(b)
        self._advance(self._begin(b), 10_000)
        self._advance(paused, 10_000)

    @precondition(lambda self: self.queue.waiting)
    @rule(pick=st.integers(min_value=0))
    def duplicate(self, pick: int) -> None:
        envelope = self.queue.waiting[pick % len(self.queue.waiting)]
        self.queue.waiting.append(dataclasses.replace(envelope))

    @precondition(lambda self: self.queue.waiting)
    @rule(pick=st.integers(min_value=0))
    def drop(self, pick: int) -> None:
        del self.queue.waiting[pick % len(self.queue.waiting)]

    @precondition(lambda self: self.queue.waiting)
    @rule()
    def broker_restarts_empty(self) -> None:
        """Redis restarted without persistence: every queued and delayed message is gone."""
        self.queue.waiting.clear()

    @precondition(lambda self: self.tasks)
    @rule(pick=st.integers(min_value=0), calls=st.integers(min_value=1, max_value=12))
    def step(self, pick: int, calls: int) -> None:
        self._advance(self.tasks[pick % len(self.tasks)], calls)

    @precondition(lambda self: self.tasks)
    @rule(pick=st.integers(min_value=0), after=st.booleans(), redeliver=st.booleans())
    def crash(self, pick: int, after: bool, redeliver: bool) -> None:
        task = self.tasks[pick % len(self.tasks)]
        try:
            task.runner.switch("crash after" if after else "crash before")
        except Crash:
            self._crashed(task, redeliver=redeliver)
            return
        raise AssertionError(f"a task crashed at {task.paused_at} kept running")

    @rule(seconds=st.sampled_from([1, 5, 31, 61, 300, 3600]))
    def wait(self, seconds: int) -> None:
        self.world.clock.advance(seconds)

    @rule()
    def sweep(self) -> None:
        self._begin(Envelope(Sweep(), self.seconds()))

    @rule(answers=st.lists(st.sampled_from([200, 503, None]), max_size=3))
    def receiver_answers(self, answers: list[int | None]) -> None:
        self.receiver.answers = answers

    # ---- invariants at every step ----------------------------------------------------------

    @invariant()
    def first_outcomes_stand(self) -> None:
        """An image's first recorded outcome never changes (checked after every step and
        after every write to an image)."""
        for key, image in self.world.images.records.items():
            if image.state.terminal:
                seen = self.first_outcomes.setdefault(key, (image.state, image.output_url))
                assert seen == (image.state, image.output_url), f"{key}: {seen} became {image}"

    @invariant()
    def progress_never_goes_back(self) -> None:
        for request_id in self.requests:
            record = self.world.requests.get(request_id)
            assert record is not None
            tally = self.world.images.tally(request_id, record.tally_shards)
            settled = tally.done + tally.failed
            assert settled >= self.progress_seen.get(request_id, 0)
            self.progress_seen[request_id] = settled

    # ---- the end: drain, sweep, and look as a user would ----------------------------------

    def teardown(self) -> None:
        try:
            self._drain_and_check()
        finally:
            fan_out.SLICE_JOBS = self._slice_jobs
            accept_upload_module.new_request_id = self._new_request_id

    def _drain_and_check(self) -> None:
        self.receiver.answers = []
        for _ in range(20_000):
            if self.tasks:
                self._resume(self.tasks[0], "go")
                continue
            due = [e for e in self.queue.waiting if e.not_before <= self.seconds()]
            if due:
                self.queue.waiting.remove(due[0])
                self._begin(due[0])
                continue
            if self._all_done():
                break
            self.world.clock.advance(61)
            self._begin(Envelope(Sweep(), self.seconds()))
        assert self._all_done(), self._story()
        for request_id in self.requests:
            self._check_as_a_user(request_id)

    def _all_done(self) -> bool:
        for request_id in self.requests:
            record = self.world.requests.records[request_id]
            if record.status is RequestStatus.IN_PROGRESS:
                return False
            delivery = self.world.deliveries.get(request_id)
            if delivery is not None and delivery.state is DeliveryState.PENDING:
                return False
        return not self.tasks

    def _story(self) -> str:
        return "\n".join(
            f"{r.request_id}: {r.status} sweep_at={r.sweep_at} sweeps={r.sweeps} "
            f"delivery={self.world.deliveries.get(r.request_id)}"
            for r in self.world.requests.records.values()
        )

    def _check_as_a_user(self, request_id: str) -> None:
        record = self.world.requests.records[request_id]
        images = list(self.world.images.iterate(request_id))
        assert record.status is RequestStatus.COMPLETED, self._story()
        assert len(images) == record.total_images
        assert all(image.state.terminal for image in images)
        assert record.final_progress is not None
        assert record.final_progress.done == sum(i.state is ImageState.DONE for i in images)
        assert record.final_progress.failed == sum(i.state is ImageState.FAILED for i in images)
        data, _ = self.world.blobs.outputs[f"outputs/{request_id}/output.csv"]
        rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))[1:]
        for image in images:
            cell = rows[image.row][-1].split(",")[image.position]
            expected = image.output_url if image.state is ImageState.DONE else ""
            assert cell == expected, f"{request_id}/{image.image_id}: {cell!r} != {expected!r}"
        if record.webhook_url:
            message_id = f"msg_{request_id}"
            delivery = self.world.deliveries.get(request_id)
            assert delivery is not None and delivery.state is DeliveryState.DELIVERED
            accepted = self.receiver.accepted.get(message_id, 0)
            excused = self.excused.get(request_id, 0)
            assert 1 <= accepted <= 1 + excused, f"{request_id}: {accepted} accepted, {excused}"
            assert message_id in self.receiver.ids


def _answer(kind: str, url: str) -> object:
    transient = ImageFailure(ErrorCode.UPSTREAM_ERROR, "HTTP 503", transient=True)
    gone = ImageFailure(ErrorCode.HTTP_ERROR, "HTTP 404")
    photo = b"photo " + url.encode()  # each URL its own bytes...
    return {
        "good": photo,
        "twin": b"the same photo",  # ...but these: the same bytes under different URLs
        "same": photo,  # the first of a request: a good one
        "broken": b"broken",  # the fake codec refuses it: corrupt_image
        "gone": None,  # 404
        "flaky": [transient, photo],
        "slow": [transient, transient, transient, transient, photo],
        # Good once, then gone: a stale second attempt would record another outcome.
        "unstable": [photo, gone],
        # Kills the process that fetches it, every time.
        "poison": Crash(),
    }[kind]


def _request_of(message: Message) -> str | None:
    return getattr(message, "request_id", None)


PipelineModel.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_the_pipeline_keeps_its_promises_under_faults = PipelineModel.TestCase
