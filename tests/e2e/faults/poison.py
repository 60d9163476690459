"""A test-only fault hook: an image that kills the process working on it, on every attempt.

Once the bytes of a URL whose path holds `/poison/` are fetched, the process that fetched them
is SIGKILLed, as a decoder crash or the kernel's OOM killer would kill it: no exception, no
`finally`, no outcome written. Nothing in the product knows of it; the fault tests and the
fault drill start their stacks through it:

- locally, as the worker's Celery app: `celery -A tests.e2e.faults.poison_worker` is the
  product's worker (local_profile/worker.py) with its services' fetcher wrapped;
- in the emulated cloud profile, as the `process_image` function's source: this file is
  copied into the staged folder beside main.py (Stack.start_cloud_profile's `sources`) and
  serves the staged function with its instance's fetcher wrapped.

It imports nothing of the project at import time, because in the cloud profile it runs in the
staged function's own environment, where only that folder's copy of shared/ is importable.
"""

from __future__ import annotations

import functools
import os
import signal
from typing import Any

MARKER = "/poison/"


class PoisonedFetcher:
    """The real fetcher, except that a poisoned URL kills the process that asked for it."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def fetch(self, url: str) -> Any:
        fetched = self._real.fetch(url)
        if MARKER in url:
            # Its bytes arrived, and they kill whatever works on them.
            os.kill(os.getpid(), signal.SIGKILL)
        return fetched


def poisoned(services: Any) -> Any:
    """`services` with its fetcher wrapped (once)."""
    if not isinstance(services.fetcher, PoisonedFetcher):
        services.fetcher = PoisonedFetcher(services.fetcher)
    return services


@functools.cache
def _patch_staged_function() -> Any:
    import main  # the staged function's own main.py, beside this file

    real = main.instance_services
    main.instance_services = functools.cache(lambda: poisoned(real()))
    return main


def process_image(request: Any) -> Any:
    """The cloud profile's `process_image`, as staged, with the poisoned fetcher."""
    return _patch_staged_function().process_image(request)
