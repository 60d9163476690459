"""`make bench`'s fault drill (issue 8): the fault suite's scenarios with default settings.

    python -m bench.run --only faults          # both profiles, into BENCHMARKS.md
    python -m bench.faults --profile local --only poison_image --pace quick   # one, printed

The scenarios are the fault tests' own (tests/e2e/faults/scenarios.py): the same requests,
the same faults at the same kind of moment, the same checks of what a user sees
(tests/e2e/faults/checks.py). Here they run with every setting that moves a recovery at its
default (STALL_AFTER, SWEEP_INTERVAL, SWEEP_GRACE, CELERY_VISIBILITY_TIMEOUT, the webhook
schedule and timeout, the fetch deadline, IMAGE_MAX_ATTEMPTS), and the drill measures, per
fault and profile: requests completed of those submitted, webhooks accepted per request, and
the time from the fault's end to the requests' completion and to their webhook's acceptance.
The two profiles run at once, each on a stack of its own, one scenario after another.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

from local_profile.recipes import Stack
from shared.config import Settings
from tests.e2e.faults.checks import Row, check
from tests.e2e.faults.lab import DEFAULTS, PROFILES, QUICK, Pace
from tests.e2e.faults.scenarios import SCENARIOS, Scenario, for_profile
from tests.e2e.faults.suite import Campaign, Ran

HEADING = "## Faults (issue 8)"
# The promise: a request hit by any fault completes within 2 minutes of the fault's end;
# its webhook within that plus what the retry schedule makes it wait.
PROMISE = 120.0
# Faults of the webhook alone: their figure is the time to the webhook's acceptance.
WEBHOOK_FAULTS = {
    "broker_restarted_with_webhook_retry_waiting",
    "webhook_sender_killed",
    "webhook_receiver_flaky",
}


@dataclass
class Drilled:
    scenario: Scenario
    row: Row
    seconds: float  # the scenario's whole run, upload to the last check
    seed: int


def allowance(key: str, settings: Settings, pace: Pace) -> tuple[float, str]:
    """How long the promise gives the scenario's figure, and how to say it."""
    schedule = settings.webhook_retry_schedule
    if key == "webhook_receiver_flaky":
        # The last failure is followed by the schedule's step for it.
        step = schedule[min(len(pace.receiver_script), len(schedule)) - 1]
        return PROMISE + step, f"2 min + the retry step it waits for ({_duration(step)})"
    if key == "webhook_sender_killed":
        # The dead sender's claim must run out first: its lease is the timeout + 30 s.
        lease = settings.webhook_timeout + 30
        return PROMISE + lease, f"2 min + the attempt's lease ({_duration(lease)})"
    if key == "broker_restarted_with_webhook_retry_waiting":
        return PROMISE + schedule[0], f"2 min + the first retry step ({_duration(schedule[0])})"
    return PROMISE, "2 min"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 120 else f"{seconds:g} s"


def fault_drill(
    run_dir: Path,
    profiles: tuple[str, ...] = PROFILES,
    only: set[str] | None = None,
    pace: Pace = DEFAULTS,
) -> list[Drilled]:
    """Every scenario of `profiles` (or those named in `only`), the profiles at once on a
    Firestore emulator of the drill's own; each line is printed as its scenario ends."""
    plan = {
        profile: [s for s in for_profile(profile) if not only or s.key in only]
        for profile in profiles
    }
    settings = Settings.from_env(dict(pace.settings))

    def report(ran: Ran) -> None:
        print(render_line(_drilled(ran), settings, pace), flush=True)

    firestore = Stack(run_dir / "firestore", {})
    drilled = []
    try:
        host = firestore.start_firestore()
        campaign = Campaign(plan, run_dir, pace, firestore_host=host, on_result=report)
        try:
            for profile, scenarios in plan.items():
                for scenario in scenarios:
                    try:
                        drilled.append(_drilled(campaign.result(profile, scenario.key)))
                    except Exception as exc:  # a scenario that could not finish is a row too
                        row = Row(scenario.key, profile, 0, 0, 0, [], None, None, [f"{exc}"])
                        drilled.append(Drilled(scenario, row, float("nan"), 0))
        finally:
            campaign.close()
    finally:
        firestore.stop_all()
    order = {s.key: n for n, s in enumerate(SCENARIOS)}
    return sorted(drilled, key=lambda d: (order[d.scenario.key], PROFILES.index(d.row.profile)))


def _drilled(ran: Ran) -> Drilled:
    return Drilled(ran.scenario, check(ran.outcome), ran.seconds, ran.seed)


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 0:
        return "before the fault"
    return f"{value:.0f} s"


def _figure(d: Drilled) -> float | None:
    return d.row.to_webhook if d.scenario.key in WEBHOOK_FAULTS else d.row.to_completion


def render_line(d: Drilled, settings: Settings, pace: Pace) -> str:
    row = d.row
    bound, bound_text = allowance(d.scenario.key, settings, pace)
    figure = _figure(d)
    held = not row.problems and figure is not None and figure <= bound
    checks = "all held" if not row.problems else "; ".join(row.problems)
    return (
        f"| {d.scenario.fault[row.profile]} | {row.profile} | {row.completed} / {row.submitted} | "
        f"{', '.join(str(n) for n in row.accepted) or '—'} | {_seconds(row.to_completion)} | "
        f"{_seconds(row.to_webhook)} | {bound_text}: {'yes' if held else 'NO'} | {checks} | "
        f"{'; '.join(row.notes)} |"
    )


def render_faults_section(drilled: list[Drilled], pace: Pace, minutes: float, load: str) -> str:
    settings = Settings.from_env(dict(pace.settings))
    lines = [
        "| Fault | Profile | Requests completed / submitted | Accepted webhooks per request | "
        "Fault end → completed | Fault end → webhook accepted | Within the promise | "
        "Checks (tests/e2e/faults/checks.py) | What happened |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *(render_line(d, settings, pace) for d in drilled),
    ]
    pinned = ", ".join(f"`{k}={v}`" for k, v in pace.settings.items())
    return (
        "\n".join(lines)
        + "\n\n"
        + f"Settings ({pace.name}): {pinned}. The drill took {minutes:.0f} minutes, both "
        f"profiles at once on the same cores (load average {load} when it ended), each "
        "scenario a request (or two) of its own on a stack of its own per profile; its random "
        "moments differ from run to run.\n\n"
        "How to read it. The fault's end is the moment the process was killed or the broker "
        "restarted, the Storage emulator resumed, the receiver's last failure ended (its last "
        "503, or the sender's timeout on its hang), the image hosts' last misbehaving answer "
        "ended (the fetcher gave up on it, or it reset), or the poison image's last crash "
        "(that fault never ends: an image that kills its worker on every attempt is failed, "
        "`worker_lost`, and the rest of its request done). Completed is the `completed_at` "
        "the service recorded; webhook accepted, the receiver's 2xx to a live sender. The "
        "figure the promise is about is the completion for faults of the processing, the webhook's "
        "acceptance for faults of the webhook (the request was complete before them: "
        "`before the fault`). The promise: a request hit by any fault completes within 2 "
        "minutes of the fault's end, its webhook within that plus what the retry schedule or "
        'a dead sender\'s lease makes it wait (docs/decisions.md, "The sweeper", '
        '"Bounds"). The same scenarios run in `make test` with short settings '
        "(tests/e2e/test_faults.py); no figure here is asserted there.\n"
    )


def faults_markdown(run_dir: Path) -> str:
    """The drill with default settings on both profiles, as BENCHMARKS.md's section."""
    started = time.monotonic()
    drilled = fault_drill(run_dir)
    minutes = (time.monotonic() - started) / 60
    section = render_faults_section(drilled, DEFAULTS, minutes, f"{os.getloadavg()[0]:.2f}")
    print(section)
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", choices=PROFILES, action="append")
    parser.add_argument("--only", action="append", help="a scenario's key; repeatable")
    parser.add_argument("--pace", choices=["defaults", "quick"], default="defaults")
    parser.add_argument("--run-dir", type=Path, default=Path("/tmp/imgsvc-fault-drill"))
    args = parser.parse_args()
    pace = DEFAULTS if args.pace == "defaults" else QUICK
    started = time.monotonic()
    drilled = fault_drill(
        args.run_dir, tuple(args.profile or PROFILES), set(args.only or ()) or None, pace
    )
    print(
        render_faults_section(
            drilled, pace, (time.monotonic() - started) / 60, f"{os.getloadavg()[0]:.2f}"
        )
    )


if __name__ == "__main__":
    main()
