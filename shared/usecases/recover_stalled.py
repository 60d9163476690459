"""Bring stalled requests back to life: the guarantee that every request ends.

Cloud Tasks keeps a task until it succeeds, but a task queue can still lose work: Redis hands a
message to a worker and forgets it before the worker has written it down, a worker dies in the
one window where that matters, someone flushes a queue. A request whose images have not moved
for `stalled_after` is taken up again: its pending images are queued again, missing image
documents are materialised again, or, with nothing left to do, it is finalised. Every one of
those steps is idempotent, so a request that was merely slow loses nothing but some work.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from shared.domain.messages import ProcessImage
from shared.usecases.fan_out import queue_slices
from shared.usecases.finalize_request import fail_request, on_image_settled
from shared.usecases.services import Services
from shared.usecases.uploaded_csv import InputLost, read_uploaded_table

log = logging.getLogger(__name__)

BATCH = 100
PENDING_BATCH = 10_000


def recover_stalled(services: Services, *, stalled_after: float) -> list[str]:
    """Returns the ids of the requests it took up again."""
    now = services.clock.now()
    taken_up = []
    for request in services.requests.in_progress(BATCH):
        request_id = request.request_id
        last = services.images.last_update(request_id) or request.updated_at
        if now - max(last, request.updated_at) < timedelta(seconds=stalled_after):
            continue
        taken_up.append(request_id)
        pending = services.images.pending_ids(request_id, PENDING_BATCH)
        if pending:
            log.warning("request %s stalled: queueing %d images again", request_id, len(pending))
            services.queue.send([ProcessImage(request_id, i) for i in pending])
        elif services.images.count(request_id) < request.total_images:
            log.warning("request %s stalled: materialising its images again", request_id)
            try:
                table = read_uploaded_table(services, request)
            except InputLost as lost:
                fail_request(services, request_id, lost.code, lost.message)
                continue
            queue_slices(services, request_id, table)
        else:
            log.warning("request %s stalled with every image settled: finalising", request_id)
            on_image_settled(services, request_id, "recovery")
    return taken_up
