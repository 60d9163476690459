"""The local profile's clock: delayed work released every second, a sweep every SWEEP_INTERVAL.

Production has Cloud Tasks' schedule times and Cloud Scheduler's sweep job; here this process
does both. It is not Celery's embedded beat (`worker -B`), which lives and dies with the
worker's children, and Celery's docs call a development convenience: it is a process of its
own, restarted by its supervisor when it dies (`local_profile/supervise.py`). Running two is
harmless (a due task is sent before it is removed, every sweep step is a conditional write),
so nothing needs a lock. The sweep runs here, in-process, through the same handler as every
queued message, so it needs neither the broker nor a worker to be healthy.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from shared.adapters.local.celery_queue import CeleryTaskQueue
from shared.bootstrap import build_services
from shared.config import Settings
from shared.domain.messages import Sweep
from shared.entrypoints.tasks import handle
from shared.usecases.services import Services

log = logging.getLogger("ticker")

RELEASE_EVERY = 1.0


def release_forever(queue: CeleryTaskQueue) -> None:
    while True:
        try:
            queue.release_due()
        except Exception:  # Redis restarting: try again next tick
            log.exception("releasing delayed work failed")
        time.sleep(RELEASE_EVERY)


def sweep_forever(services: Services, interval: float) -> None:
    while True:
        started = time.monotonic()
        try:
            handle(services, Sweep())
        except Exception:  # the emulator restarting: the next sweep looks again
            log.exception("sweep failed")
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


def main() -> None:
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    services = build_services(settings)
    queue = services.queue
    if not isinstance(queue, CeleryTaskQueue):
        raise SystemExit("the ticker belongs to the local profile (TASK_BACKEND=celery)")
    threading.Thread(
        target=sweep_forever, args=(services, settings.sweep_interval), daemon=True
    ).start()
    ready_file = os.environ.get("IMGSVC_READY_FILE")
    if ready_file:
        Path(ready_file).write_text(str(os.getpid()))
    log.info(
        "ticking: delayed work every %.0fs, a sweep every %.0fs",
        RELEASE_EVERY,
        settings.sweep_interval,
    )
    release_forever(queue)


if __name__ == "__main__":
    main()
