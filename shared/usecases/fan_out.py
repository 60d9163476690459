"""Fan-out: a request's images cut into slices, and each slice made into image documents.

The upload does not write 100,000 image documents (tens of seconds on the emulator, seconds on
Firestore): it queues slices of at most 500 jobs, and each slice, run as a task, creates its
documents in one commit and queues one task per image. Recovery queues the same slices again
when documents are missing; both steps are idempotent.
"""

from __future__ import annotations

from collections.abc import Iterator

from shared.domain.csv_table import ProductTable
from shared.domain.messages import MaterializeSlice, ProcessImage
from shared.domain.model import ImageJob, ImageSlice, ImageState, image_id
from shared.domain.same_image import image_key
from shared.domain.tally import shard_count, shard_of
from shared.usecases.services import Services

# One slice = one Firestore commit (at most 500 writes) and one task.
SLICE_JOBS = 500
# ... and a task body well below Cloud Tasks' 1 MB limit whatever the URL lengths.
SLICE_BYTES = 256 * 1024
# Rough JSON overhead of one job besides its URL and serial (ids, numbers, quotes).
JOB_OVERHEAD = 56
# The repeats of an image that its first slot tells when it settles; later ones look for
# themselves (a logo on every row would otherwise make one slot's list unbounded).
FOLLOWERS_NOTED = 100
# JSON size of one follower's id in a job.
FOLLOWER_BYTES = 14


Slot = tuple[int, int]  # (row, position)


def _repeats(table: ProductTable) -> tuple[dict[Slot, str], dict[Slot, tuple[str, ...]]]:
    """For each slot that repeats an earlier one, the first slot naming the same image; for
    each first slot, the first FOLLOWERS_NOTED slots that repeat it. (Slots as numbers, their
    ids made only for repeats: this runs over every URL of the upload.)"""
    first_of: dict[str, Slot] = {}  # image key -> the first slot that names it
    same_as: dict[Slot, str] = {}
    followers: dict[Slot, list[str]] = {}
    for row in table.rows:
        for position, url in enumerate(row.urls):
            slot = (row.index, position)
            first = first_of.setdefault(image_key(url), slot)
            if first != slot:
                same_as[slot] = image_id(*first)
                noted = followers.setdefault(first, [])
                if len(noted) < FOLLOWERS_NOTED:
                    noted.append(image_id(*slot))
    return same_as, {slot: tuple(noted) for slot, noted in followers.items()}


def plan_slices(request_id: str, table: ProductTable) -> Iterator[ImageSlice]:
    jobs: list[ImageJob] = []
    size = 0
    index = 0
    shards = shard_count(table.url_count)
    ordinal = 0
    same_as, followers = _repeats(table)
    for row in table.rows:
        for position, url in enumerate(row.urls):
            slot = (row.index, position)
            noted = followers.get(slot, ())
            job_size = len(url) + len(row.serial) + JOB_OVERHEAD + FOLLOWER_BYTES * len(noted)
            if jobs and (len(jobs) == SLICE_JOBS or size + job_size > SLICE_BYTES):
                yield ImageSlice(request_id, index, tuple(jobs))
                jobs, size, index = [], 0, index + 1
            jobs.append(
                ImageJob(
                    request_id=request_id,
                    image_id=image_id(row.index, position),
                    row=row.index,
                    position=position,
                    serial=row.serial,
                    url=url,
                    shard=shard_of(ordinal, shards),
                    same_as=same_as.get(slot),
                    followers=noted,
                )
            )
            size += job_size
            ordinal += 1
    if jobs:
        yield ImageSlice(request_id, index, tuple(jobs))


def queue_slices(
    services: Services, request_id: str, table: ProductTable, *, round_: int = 0
) -> None:
    """Queue every slice of the request (again, in the sweeper's round `round_`); raises when
    they could not all be queued."""
    services.queue.send([MaterializeSlice(s, round=round_) for s in plan_slices(request_id, table)])


def materialize_slice(services: Services, image_slice: ImageSlice, *, round_: int = 0) -> None:
    records = services.images.create_missing(image_slice.jobs)
    pending = [r.image_id for r in records if r.state is ImageState.PENDING]
    if pending:
        services.queue.send(
            [ProcessImage(image_slice.request_id, i, round=round_) for i in pending]
        )
