"""What every fault scenario must leave behind, as a user sees it, and the figures the drill
reports.

For every request: it ended (`completed`, or `failed` as a whole with a reason); every image
has an outcome, with its attempts recorded; the counts match the images; the output CSV's
URLs are the `done` outputs of the status details, slot for slot (a failed image an empty
slot); no outcome a user once saw changed afterwards, and progress never went backwards; and
exactly one webhook message was accepted with a 2xx, every POST under the same `webhook-id`
(`msg_<request_id>`) with a valid signature and the request's outcome as its body, every
attempt a live sender made recorded in the status details, in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tests.e2e.faults.lab import Outcome


@dataclass
class Row:
    """One line of the drill's table."""

    scenario: str
    profile: str
    submitted: int
    ended: int  # completed, or failed as a whole with a reason
    completed: int
    accepted: list[int]  # webhook messages accepted with a 2xx, per request
    # From the fault's end to the last request's completion, and to its webhook's acceptance.
    to_completion: float | None
    to_webhook: float | None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check(outcome: Outcome) -> Row:
    problems = list(outcome.problems)  # what the scenario itself expected and did not see
    for request_id in outcome.request_ids:
        problems += [f"{request_id}: {p}" for p in _request_problems(outcome, request_id)]
    ended = sum(1 for s in outcome.statuses.values() if s["status"] in ("completed", "failed"))
    accepted = [
        sum(1 for a in outcome.arrivals.get(r, []) if a.accepted) for r in outcome.request_ids
    ]
    return Row(
        scenario=outcome.scenario,
        profile=outcome.profile,
        submitted=len(outcome.request_ids),
        ended=ended,
        completed=sum(1 for s in outcome.statuses.values() if s["status"] == "completed"),
        accepted=accepted,
        to_completion=_latest(
            [_epoch(s.get("completed_at")) for s in outcome.statuses.values()], outcome.fault_end
        ),
        to_webhook=_latest(
            [
                min((a.at for a in arrivals if a.accepted), default=None)
                for arrivals in outcome.arrivals.values()
            ],
            outcome.fault_end,
        ),
        problems=problems,
        notes=list(outcome.notes),
    )


def assert_sound(outcome: Outcome, seed: int | None = None) -> Row:
    row = check(outcome)
    assert not row.problems, (
        f"{outcome.scenario} ({outcome.profile}):\n  "
        + "\n  ".join(row.problems)
        + ("\nnotes: " + "; ".join(row.notes) if row.notes else "")
        + (f"\n(replay with FAULT_SEED={seed})" if seed is not None else "")
    )
    return row


def _epoch(moment: str | None) -> float | None:
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp() if moment else None


def _latest(moments: list[float | None], since: float | None) -> float | None:
    known = [m for m in moments if m is not None]
    if since is None or not known or len(known) < len(moments):
        return None
    return max(known) - since


def _request_problems(outcome: Outcome, request_id: str) -> list[str]:
    status = outcome.statuses[request_id]
    images = outcome.images[request_id]
    problems: list[str] = []
    if status["status"] == "completed":
        if not status.get("csv_url"):
            problems.append("completed without a csv_url")
    elif status["status"] == "failed":
        error = status.get("error") or {}
        if not (error.get("code") and error.get("message")):
            problems.append(f"failed without a reason: {status}")
    else:
        problems.append(f"did not end: {status['status']}")
    problems += _image_problems(status, images)
    if status["status"] == "completed":
        problems += _csv_problems(outcome.csv_rows.get(request_id), images)
    problems += [f"seen by the watcher: {v}" for v in outcome.watched.get(request_id, [])]
    problems += _webhook_problems(outcome, request_id)
    return problems


def _image_problems(status: dict[str, Any], images: list[dict[str, Any]]) -> list[str]:
    problems = []
    done = [i for i in images if i["state"] == "done"]
    failed = [i for i in images if i["state"] == "failed"]
    pending = [i["id"] for i in images if i["state"] == "pending"]
    if status["status"] == "completed":
        if pending:
            problems.append(f"completed with images pending: {pending}")
        expected = {"total": len(images), "done": len(done), "failed": len(failed), "pending": 0}
        if status["progress"] != expected:
            problems.append(f"progress {status['progress']} but the images say {expected}")
    for image in done:
        if image["attempts"] < 1 and image.get("same_as") is None:
            problems.append(f"image {image['id']} done with no attempt recorded")
        if not image["output_url"]:
            problems.append(f"image {image['id']} done without an output")
    for image in failed:
        error = image["error"] or {}
        if not (error.get("code") and error.get("message")):
            problems.append(f"image {image['id']} failed without a reason")
        if image["output_url"]:
            problems.append(f"image {image['id']} failed but has an output")
    return problems


def _csv_problems(rows: list[list[str]] | None, images: list[dict[str, Any]]) -> list[str]:
    if rows is None:
        return ["the output CSV could not be read"]
    if not rows or rows[0][-1] != "Output Image Urls":
        return [f"the output CSV's header is {rows[:1]}"]
    by_row: dict[int, list[dict[str, Any]]] = {}
    for image in images:
        by_row.setdefault(image["row"], []).append(image)
    problems = []
    if len(rows) - 1 != len(by_row):
        problems.append(f"the output CSV has {len(rows) - 1} rows for {len(by_row)}")
    for number, row in enumerate(rows[1:], start=1):
        mine = sorted(by_row.get(number, []), key=lambda i: i["position"])
        expected = [i["output_url"] if i["state"] == "done" else "" for i in mine]
        written = row[-1].split(",")
        if written != expected:
            problems.append(f"CSV row {number} has {written}, the details say {expected}")
    return problems


def _webhook_problems(outcome: Outcome, request_id: str) -> list[str]:
    status = outcome.statuses[request_id]
    arrivals = outcome.arrivals.get(request_id, [])
    delivery = outcome.webhooks.get(request_id)
    problems = []
    expected: dict[str, object] = {"request_id": request_id, "status": status["status"]}
    if status.get("csv_url"):
        expected["csv_url"] = status["csv_url"]
    for arrival in arrivals:
        if arrival.webhook_id != f"msg_{request_id}":
            problems.append(f"a POST under webhook-id {arrival.webhook_id!r}")
        if arrival.refused is not None:
            problems.append(f"POST {arrival.number} did not verify: {arrival.refused}")
        elif arrival.payload != expected:
            problems.append(f"POST {arrival.number} carried {arrival.payload}, not {expected}")
    accepted = [a for a in arrivals if a.accepted]
    if len(accepted) != 1:
        problems.append(
            f"{len(accepted)} webhook messages accepted with a 2xx, of {len(arrivals)} POSTs "
            f"({[(a.action, a.answered, a.sender_killed) for a in arrivals]})"
        )
    if delivery is None:
        return [*problems, "no webhook delivery in the status details"]
    if delivery["state"] != "delivered":
        problems.append(f"the delivery is {delivery['state']}")
    recorded = delivery["attempts"]
    if [a["number"] for a in recorded] != list(range(1, len(recorded) + 1)):
        problems.append(f"attempts numbered {[a['number'] for a in recorded]}")
    if [a["succeeded"] for a in recorded][-1:] != [True] or sum(
        1 for a in recorded if a["succeeded"]
    ) != 1:
        problems.append(f"recorded attempts {_codes(recorded)}: not one success, last")
    # Every POST whose sender lived to see the answer is an attempt recorded, in order, with
    # what the receiver answered (or a timeout for one it answered too late).
    lived = [a for a in arrivals if not a.sender_killed]
    seen = [None if a.action == "hang" else a.answered for a in lived]
    if _codes(recorded) != seen:
        problems.append(f"recorded attempts {_codes(recorded)}, the receiver answered {seen}")
    return problems


def _codes(attempts: list[dict[str, Any]]) -> list[int | None]:
    return [a["status_code"] for a in attempts]
