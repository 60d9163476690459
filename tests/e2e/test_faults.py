"""Fault injection on the real stack (issue 8), both profiles: every fault a user's stack can
suffer, at a moment the test does not pick, on stacks of the suite's own.

Each profile gets a lab (tests/e2e/faults/lab.py): the session's Firestore emulator under a
project of the suite's own, and its own Storage emulator and, locally, its own Redis,
supervised worker, ticker and gateway; in the cloud, its own Cloud Tasks emulator, the four
staged functions (supervised, restarted when they die as Cloud Run replaces an instance) and
the Eventarc, Cloud Scheduler and Hosting stand-ins. Killing and restarting them never
disturbs another test. The worker and `process_image` run through the test-only poison hook
(tests/e2e/faults/poison.py).

The two labs run at once, each one scenario after another (tests/e2e/faults/suite.py), with
the QUICK settings (a sweep every second, a request stalled after 6 s); `make bench`'s fault
drill (bench/faults.py) runs the same scenarios with the default settings and measures them.
What each scenario does, and why some apply to one profile only (the Celery worker's main
process has no cloud counterpart; the cloud's broker is the Cloud Tasks emulator):
tests/e2e/faults/scenarios.py. What each must leave behind: tests/e2e/faults/checks.py. A
failing scenario names its random seed: FAULT_SEED=<seed> replays its choices.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

from local_profile.recipes import Stack
from tests.e2e.faults.checks import assert_sound
from tests.e2e.faults.lab import PROFILES, QUICK
from tests.e2e.faults.scenarios import Scenario, for_profile
from tests.e2e.faults.suite import Campaign, accepted_once_each

pytestmark = pytest.mark.e2e

CASES = [(profile, scenario) for profile in PROFILES for scenario in for_profile(profile)]


@pytest.fixture(scope="module")
def campaign(
    request: pytest.FixtureRequest, backing: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Campaign]:
    # The scenarios this session selected (pytest -k), or all of them.
    plan: dict[str, list[Scenario]] = {}
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if getattr(item, "module", None) is sys.modules[__name__] and callspec is not None:
            profile, scenario = callspec.params["case"]
            plan.setdefault(profile, []).append(scenario)
    if not plan:
        for profile, scenario in CASES:
            plan.setdefault(profile, []).append(scenario)
    replay = os.environ.get("FAULT_SEED")
    started = Campaign(
        plan,
        tmp_path_factory.mktemp("faults"),
        QUICK,
        firestore_host=backing.env["FIRESTORE_EMULATOR_HOST"],
        **({"seed": lambda: int(replay)} if replay else {}),
    )
    try:
        yield started
    finally:
        started.close()


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case[0]}-{case[1].key}")
def test_a_request_hit_by_the_fault_ends_and_its_webhook_is_accepted_once(
    campaign: Campaign, case: tuple[str, Scenario]
) -> None:
    profile, scenario = case
    ran = campaign.result(profile, scenario.key, timeout=900)
    row = assert_sound(ran.outcome, ran.seed)
    assert row.ended == row.submitted
    print(f"{profile}-{scenario.key}: {ran.seconds:.1f}s (seed {ran.seed}); {row.notes}")


def test_no_webhook_was_accepted_twice_later_on(campaign: Campaign) -> None:
    campaign.wait()
    assert campaign.labs
    for profile, lab in campaign.labs.items():
        assert accepted_once_each(lab) == {}, profile
