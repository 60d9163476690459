"""Process one image: fetch, compress, store, record.

It runs at least once, perhaps twice at the same time, and is idempotent. A duplicated image
task finds its image already settled and only repeats the settled event, so a finalisation that
was lost with a crashed worker still happens.
"""

from __future__ import annotations

import logging
import random
import uuid
from datetime import timedelta
from urllib.parse import urlsplit

from shared.domain.blob_layout import output_image_path
from shared.domain.errors import ErrorCode, ImageFailure, RetryLater
from shared.domain.messages import CopyImage
from shared.domain.model import ImageRecord, ImageState, Recorded, StoredElsewhere
from shared.domain.same_image import content_key
from shared.ports import Attempt
from shared.usecases.services import Services

log = logging.getLogger(__name__)

# Backoff between attempts at one image when its host is having trouble (seconds).
RETRY_BASE = 2.0
RETRY_CAP = 300.0
# How long a task waits for a free fetch slot before it goes back to the queue, and how long it
# stays there (plus jitter, so that the tasks turned away together do not return together).
SLOT_WAIT = 2.0
BUSY_RETRY = 5.0
# How long a slot that names the same image as another waits before it looks again: soon
# when nothing will tell it; later when the slot doing the work will (a CopyImage message as
# soon as it records its outcome), so that the look is only the fallback for a lost message.
FOLLOW_WAIT = 3.0
FOLLOW_WAIT_TOLD = 30.0
# Logged by a slot that compressed bytes whose output another slot had recorded (make bench
# counts these lines: each is a compression that was not kept).
COMPRESSED_AGAIN = "image %s/%s: the same bytes were recorded for another slot; compressed again"


def retry_delay(attempt: int, hint: float | None) -> float:
    delay = min(RETRY_CAP, RETRY_BASE * 2.0 ** (attempt - 1))
    return max(delay, min(hint, RETRY_CAP)) if hint else delay


def fetch_host(url: str) -> str:
    """What FETCH_MAX_PER_HOST counts by: the host of the input URL as written (redirects count
    against it too). A URL too broken to have one fails in the fetcher, so any key will do."""
    try:
        host = urlsplit(url.strip()).hostname or ""
    except ValueError:
        host = ""
    return host.rstrip(".")[:253]


def process_image(
    services: Services, request_id: str, image_id: str, *, count_first: bool = False
) -> ImageState:
    """Raises RetryLater when a transient failure deserves another attempt.

    `count_first` says this attempt may follow one whose worker died in it (the platform
    handed the task out again, or the sweeper re-drove it): the attempt is then counted
    before the work, so an image that kills its worker runs out of attempts. The usual path
    costs one read and one write of the image document.
    """
    for _ in range(8):
        record = services.images.get(request_id, image_id)
        if record is None:
            # Tasks are queued only after their image is created; this is a stray duplicate
            # of a request that no longer exists.
            log.warning("image %s/%s does not exist; dropping the task", request_id, image_id)
            return ImageState.FAILED
        if record.state.terminal:
            # A duplicate, or a task redelivered after its outcome was written: tell the
            # finaliser (and the repeats) again, in case the first telling was lost with its
            # worker.
            _tell_finaliser(services, record, None)
            return record.state
        if record.same_as is not None:
            # Another slot names the same image: it does the work, this one copies it.
            return _follow(services, record)
        if record.attempts >= services.settings.image_max_attempts:
            # Every counted attempt ended without an outcome: each time, the process working
            # on it died (an image that crashes its decoder, a worker killed for memory).
            return _give_up(services, record)
        state = _attempt(services, record, count_first=count_first)
        if state is not None:
            return state
        # The image changed between our read and our first write: read it again.
    raise RuntimeError(f"image {request_id}/{image_id} kept changing under its task")


def _follow(services: Services, record: ImageRecord) -> ImageState:
    """Copy the outcome of the slot that names the same image, once it has one. Waiting costs
    no attempt: nothing was tried, so a slow original never runs its copies out of attempts."""
    first = services.images.get(record.request_id, record.same_as or "")
    if first is None or not first.state.terminal:
        told = first is not None and record.image_id in first.followers
        raise RetryLater(
            f"waiting for {record.same_as}, the same image",
            after_seconds=FOLLOW_WAIT_TOLD if told else FOLLOW_WAIT,
        )
    attempt = Attempt(record.attempts, record.version, record.shard)
    output = first.stored_output()
    if output is not None:
        recorded = services.images.record_copy(
            attempt, record.request_id, record.image_id, output=output
        )
        state = ImageState.DONE
    else:
        recorded = services.images.record_failed(
            attempt,
            record.request_id,
            record.image_id,
            code=first.error_code or ErrorCode.INTERNAL.value,
            message=f"the same image as {_slot(first)}: {first.error_message or 'failed'}",
        )
        state = ImageState.FAILED
    if recorded is None:
        return _state_now(services, record)  # recorded meanwhile by another copy of this task
    _tell_finaliser(services, record, recorded)
    return state


def _slot(record: ImageRecord) -> str:
    return f"row {record.row + 1}, URL {record.position + 1}"


def _state_now(services: Services, record: ImageRecord) -> ImageState:
    now = services.images.get(record.request_id, record.image_id)
    return now.state if now is not None else ImageState.FAILED


def _give_up(services: Services, record: ImageRecord) -> ImageState:
    message = f"gave up after {record.attempts} attempts; the worker died while processing it" + (
        f" (the last error was: {record.error_message})" if record.error_message else ""
    )
    recorded = services.images.record_failed(
        Attempt(record.attempts, record.version, record.shard),
        record.request_id,
        record.image_id,
        code=ErrorCode.WORKER_LOST.value,
        message=message,
    )
    _tell_finaliser(services, record, recorded)
    return ImageState.FAILED


def _tell_finaliser(services: Services, record: ImageRecord, recorded: Recorded | None) -> None:
    """The finaliser needs to hear only when a tally's last image settled (or, when another
    copy recorded the outcome first, again: its telling may have been lost). The slots that
    repeat this one are told each time: a copy that finds its outcome recorded does nothing."""
    if record.followers:
        services.queue.send([CopyImage(record.request_id, f) for f in record.followers])
    if recorded is None or recorded.shard_settled:
        services.events.shard_settled(record.request_id, record.shard)


def _attempt(services: Services, record: ImageRecord, *, count_first: bool) -> ImageState | None:
    """One attempt at the image; None when it changed before the attempt could begin."""
    request_id, image_id = record.request_id, record.image_id
    # Taken before the attempt starts: an image turned away because its host is busy has not
    # been tried, so it does not use up one of its attempts.
    slot = services.fetch_limiter.acquire(fetch_host(record.input_url), wait=SLOT_WAIT)
    if slot is None:
        raise RetryLater(
            "too many fetches in progress", after_seconds=BUSY_RETRY * (1 + random.random())
        )
    try:
        attempt = services.images.begin_attempt(record, count_now=count_first)
    except BaseException:
        slot.release()
        raise
    if attempt is None:
        slot.release()
        return None
    try:
        try:
            fetched = services.fetcher.fetch(record.input_url)
        finally:
            slot.release()
        recorded = _store_once(services, record, attempt, fetched.data)
        state = ImageState.DONE
    except RetryLater:
        raise
    except ImageFailure as failure:
        if failure.transient:
            state, recorded = _retry_or_fail(
                services,
                attempt,
                request_id,
                image_id,
                code=failure.code.value,
                retry_message=failure.message,
                final_message=f"{failure.message} (gave up after {attempt.number} attempts)",
                hint=failure.retry_after,
            )
        else:
            recorded = services.images.record_failed(
                attempt, request_id, image_id, code=failure.code.value, message=failure.message
            )
            state = ImageState.FAILED
    except Exception:
        # A bug or an outage we did not foresee: retry, and in the end fail this image
        # alone with an id that leads to the logged stack trace.
        error_id = uuid.uuid4().hex[:12]
        log.exception("image %s/%s: unexpected error %s", request_id, image_id, error_id)
        state, recorded = _retry_or_fail(
            services,
            attempt,
            request_id,
            image_id,
            code=ErrorCode.INTERNAL.value,
            retry_message=f"internal error (id {error_id}); retrying",
            final_message=f"internal error (id {error_id})",
            hint=None,
        )
    _tell_finaliser(services, record, recorded)
    return state


def _store_once(
    services: Services, record: ImageRecord, attempt: Attempt, data: bytes
) -> Recorded | None:
    """Compress and store the fetched bytes; when another slot of the request recorded the
    output of the same bytes first, copy that output instead and remove this one's object.

    Optimistic: nothing is read or claimed before compressing, since nearly every image's bytes
    are its own (a claim was one more commit per image, a look-up one more read: both measured
    in make bench's end-to-end time, for the few images another URL also serves). The bytes'
    record is created in the commit that records the outcome, and that commit writes nothing
    when the record exists: the bytes are stored once, and compressed again by each slot that
    repeats them under another URL (a repeated URL is planned to be done once at upload)."""
    request_id, image_id = record.request_id, record.image_id
    key = content_key(data)
    compressed = services.codec.compress(data)
    path = output_image_path(record, compressed.extension)
    url = services.blobs.put_output(path, compressed.data, compressed.content_type)
    recorded = services.images.record_done(
        attempt,
        request_id,
        image_id,
        output_url=url,
        output_path=path,
        image=compressed,
        source_bytes=len(data),
        content_key=key,
    )
    if not isinstance(recorded, StoredElsewhere):
        return recorded
    log.info(COMPRESSED_AGAIN, request_id, image_id)
    if recorded.output.output_path != path:
        # Nothing refers to this image's own object now. Left behind if this fails (or the
        # process dies first): an orphan costs its storage, never a wrong output.
        try:
            services.blobs.delete_output(path)
        except ImageFailure as failure:
            log.warning("image %s/%s: %s", request_id, image_id, failure.message)
    return services.images.record_copy(attempt, request_id, image_id, output=recorded.output)


def _retry_or_fail(
    services: Services,
    attempt: Attempt,
    request_id: str,
    image_id: str,
    *,
    code: str,
    retry_message: str,
    final_message: str,
    hint: float | None,
) -> tuple[ImageState, Recorded | None]:
    """Another attempt while there are attempts left (raises RetryLater), else fail for good."""
    if attempt.number < services.settings.image_max_attempts:
        delay = retry_delay(attempt.number, hint)
        recorded = services.images.record_retry(
            attempt,
            request_id,
            image_id,
            code=code,
            message=retry_message,
            retry_at=services.clock.now() + timedelta(seconds=delay),
        )
        if recorded:
            raise RetryLater(retry_message, after_seconds=delay)
        return ImageState.PENDING, None  # a duplicate recorded an outcome meanwhile; it stands
    failed = services.images.record_failed(
        attempt, request_id, image_id, code=code, message=final_message
    )
    return ImageState.FAILED, failed
