"""What the fault tests of both profiles do with a scenario: run it with a seed they print,
and assert what checks.py finds."""

from __future__ import annotations

import os
import random

from tests.e2e.faults.checks import Row, assert_sound
from tests.e2e.faults.lab import Lab
from tests.e2e.faults.scenarios import Scenario


def run_checked(lab: Lab, scenario: Scenario) -> Row:
    seed = int(os.environ.get("FAULT_SEED") or random.randrange(2**32))
    try:
        return assert_sound(scenario.run(lab, random.Random(seed)))
    except AssertionError as failure:
        raise AssertionError(f"{failure}\n(replay with FAULT_SEED={seed})") from failure


def accepted_once_each(lab: Lab) -> None:
    """However long after its scenario: one webhook message accepted per request, never two."""
    twice = {
        request_id: accepted
        for request_id in lab.webhook_urls
        if (accepted := sum(1 for a in lab.receiver.for_request(request_id) if a.accepted)) != 1
    }
    assert lab.webhook_urls and not twice, twice
