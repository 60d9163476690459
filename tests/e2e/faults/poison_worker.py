"""The local profile's Celery worker with the poison hook (tests/e2e/faults/poison.py):
`celery -A tests.e2e.faults.poison_worker worker ...` runs local_profile/worker.py unchanged
but for its services' fetcher. Every pool process is forked from the main one after this
module is imported, so each one builds its services through the wrapper."""

from __future__ import annotations

from local_profile import worker
from local_profile.worker import app  # noqa: F401 (what `celery -A` looks for)
from shared.usecases.services import Services
from tests.e2e.faults.poison import poisoned

_real_services = worker.services


def _poisoned_services() -> Services:
    services: Services = poisoned(_real_services())
    return services


# The task and the process-init handler call `services()` through the module's globals.
worker.services = _poisoned_services
