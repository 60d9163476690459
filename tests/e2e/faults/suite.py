"""How the fault scenarios are run, by the tests and by the drill alike: each profile on a lab
of its own, the profiles at once, the scenarios of one profile one after another (a fault is
then never blamed on another scenario's), each with a random seed that is kept."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.faults.lab import Lab, Outcome, Pace
from tests.e2e.faults.scenarios import Scenario


@dataclass(frozen=True)
class Ran:
    scenario: Scenario
    profile: str
    outcome: Outcome
    seed: int
    seconds: float  # the scenario's whole run: upload, fault, the wait, the gathering


class Campaign:
    """Starts a lab per profile and runs its scenarios, in a thread per profile; each
    scenario's result (or failure) is waited for with `result`."""

    def __init__(
        self,
        plan: Mapping[str, Sequence[Scenario]],
        run_dir: Path,
        pace: Pace,
        *,
        firestore_host: str | None,
        seed: Callable[[], int] = lambda: random.randrange(2**32),
        on_result: Callable[[Ran], None] | None = None,
    ) -> None:
        self.labs: dict[str, Lab] = {}
        self._pace = pace
        self._firestore_host = firestore_host
        self._seed = seed
        self._on_result = on_result
        self._closed = False
        self._futures: dict[tuple[str, str], Future[Ran]] = {
            (profile, s.key): Future() for profile, scenarios in plan.items() for s in scenarios
        }
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(
                target=self._run,
                args=(profile, list(scenarios), run_dir / profile),
                name=f"faults-{profile}",
                daemon=True,
            )
            for profile, scenarios in plan.items()
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, profile: str, scenarios: list[Scenario], run_dir: Path) -> None:
        try:
            lab = Lab.start(profile, run_dir, self._pace, self._firestore_host)
        except BaseException as exc:
            for scenario in scenarios:
                self._futures[(profile, scenario.key)].set_exception(exc)
            return
        with self._lock:
            self.labs[profile] = lab
            closed = self._closed
        if closed:  # closed while the lab was starting
            lab.close()
        for scenario in scenarios:
            future = self._futures[(profile, scenario.key)]
            if self._closed:
                future.set_exception(RuntimeError("the campaign was closed before it ran"))
                continue
            chosen = self._seed()
            started = time.monotonic()
            try:
                outcome = scenario.run(lab, random.Random(chosen))
            except BaseException as exc:
                exc.add_note(f"{scenario.key} ({profile}): replay with FAULT_SEED={chosen}")
                future.set_exception(exc)
                continue
            ran = Ran(scenario, profile, outcome, chosen, time.monotonic() - started)
            future.set_result(ran)
            if self._on_result is not None:
                self._on_result(ran)

    def result(self, profile: str, key: str, timeout: float | None = None) -> Ran:
        return self._futures[(profile, key)].result(timeout)

    def wait(self) -> None:
        for thread in self._threads:
            thread.join()

    def close(self) -> None:
        """Stop every lab, even under a scenario still running (an interrupted drill): it then
        fails at once, and so do the ones after it."""
        with self._lock:
            self._closed = True
            labs = list(self.labs.values())
        for lab in labs:
            with contextlib.suppress(Exception):
                lab.close()
        for thread in self._threads:
            thread.join(timeout=120)


def accepted_once_each(lab: Lab) -> dict[str, int]:
    """However long after its scenario ended: the requests whose webhook was not accepted
    exactly once, with how many times it was."""
    return {
        request_id: accepted
        for request_id in lab.webhook_urls
        if (accepted := sum(1 for a in lab.receiver.for_request(request_id) if a.accepted)) != 1
    }
