"""Fault injection on the emulated cloud profile (issue 8): the faults of test_faults.py that
apply to it, on a cloud stack of the suite's own.

The stack: the session's Firestore emulator under a project of the suite's own, and its own
Storage emulator, Cloud Tasks emulator, the four staged functions under functions-framework
(each supervised, restarted when it dies as Cloud Run replaces an instance; `process_image`
served through the test-only poison hook, tests/e2e/faults/poison.py) and the Eventarc, Cloud
Scheduler and Hosting stand-ins. Which faults do not apply here, and why, is in
tests/e2e/faults/scenarios.py: the Celery worker's main process has no counterpart (an
instance is killed whole), and the broker is the Cloud Tasks emulator.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local_profile.recipes import Stack
from tests.e2e.faults.lab import QUICK, Lab
from tests.e2e.faults.scenarios import Scenario, for_profile
from tests.e2e.faults.suite import accepted_once_each, run_checked

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def lab(backing: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    started = Lab.start(
        "cloud",
        tmp_path_factory.mktemp("faults-cloud"),
        QUICK,
        firestore_host=backing.env["FIRESTORE_EMULATOR_HOST"],
    )
    try:
        yield started
    finally:
        started.close()


@pytest.mark.parametrize("scenario", for_profile("cloud"), ids=lambda s: s.key)
def test_a_request_hit_by_the_fault_ends_and_its_webhook_is_accepted_once(
    lab: Lab, scenario: Scenario
) -> None:
    run_checked(lab, scenario)


def test_no_webhook_was_accepted_twice_later_on(lab: Lab) -> None:
    accepted_once_each(lab)
