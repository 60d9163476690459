"""Fault injection on the real local profile (issue 8): every fault a user's stack can suffer,
at a moment the test does not pick, on a stack of the suite's own.

The stack: the session's Firestore emulator under a project of the suite's own, and its own
Storage emulator, Redis, supervised worker (with the test-only poison hook,
tests/e2e/faults/poison.py), ticker and gateway, so that killing and restarting them never
disturbs another test. Its settings are tests/e2e/faults/lab.py's QUICK ones (a sweep every
second, a request stalled after 6 s); `make bench`'s fault drill (bench/faults.py) runs the
same scenarios with the defaults and measures them. What each scenario does, and why some
apply to one profile only: tests/e2e/faults/scenarios.py; what each must leave behind:
tests/e2e/faults/checks.py. A failing scenario prints its random seed: FAULT_SEED=<seed>
replays its choices.
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
        "local",
        tmp_path_factory.mktemp("faults-local"),
        QUICK,
        firestore_host=backing.env["FIRESTORE_EMULATOR_HOST"],
    )
    try:
        yield started
    finally:
        started.close()


@pytest.mark.parametrize("scenario", for_profile("local"), ids=lambda s: s.key)
def test_a_request_hit_by_the_fault_ends_and_its_webhook_is_accepted_once(
    lab: Lab, scenario: Scenario
) -> None:
    run_checked(lab, scenario)


def test_no_webhook_was_accepted_twice_later_on(lab: Lab) -> None:
    accepted_once_each(lab)
