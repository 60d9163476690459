"""Following a request until it ends: a live progress bar on a terminal, periodic plain lines
otherwise (a log file, CI, a pipe), always on stderr so stdout stays the command's result."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from imgsvc_cli.client import Client


class StillRunning(Exception):
    """The request had not ended when the caller's timeout ran out."""


class RateColumn(ProgressColumn):
    """Images settled per second, as Rich measures it from the updates."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} img/s" if speed else "- img/s", style="progress.data.speed")


def _counts(status: dict[str, Any]) -> tuple[int, int, int, int]:
    p = status["progress"]
    return int(p["total"]), int(p["done"]), int(p["failed"]), int(p["pending"])


def follow(
    client: Client,
    request_id: str,
    console: Console,
    *,
    poll: float = 0.5,
    line_every: float = 5.0,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Poll the status until the request is no longer in progress; returns the last status."""
    deadline = None if timeout is None else time.monotonic() + timeout
    if console.is_terminal:
        return _with_bar(client, request_id, console, poll, deadline)
    return _with_lines(
        client, request_id, console, poll=poll, line_every=line_every, deadline=deadline
    )


def _check_deadline(deadline: float | None, request_id: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise StillRunning(request_id)


def _with_bar(
    client: Client, request_id: str, console: Console, poll: float, deadline: float | None
) -> dict[str, Any]:
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} · [green]{task.fields[done]} done"),
        TextColumn("[red]{task.fields[failed]} failed"),
        RateColumn(),
        TimeRemainingColumn(),
    )
    status = client.status(request_id)
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(request_id[:8], total=max(_counts(status)[0], 1), done=0, failed=0)
        while True:
            total, done, failed, _ = _counts(status)
            bar.update(task, total=max(total, 1), completed=done + failed, done=done, failed=failed)
            if status["status"] != "in progress":
                return status
            _check_deadline(deadline, request_id)
            time.sleep(poll)
            status = client.status(request_id)


def _with_lines(
    client: Client,
    request_id: str,
    console: Console,
    *,
    poll: float,
    line_every: float,
    deadline: float | None,
) -> dict[str, Any]:
    started = time.monotonic()
    first_settled: int | None = None
    last_line = 0.0
    last_counts: tuple[int, int, int, int] | None = None
    while True:
        status = client.status(request_id)
        counts = _counts(status)
        total, done, failed, pending = counts
        now = time.monotonic()
        if first_settled is None:
            first_settled = done + failed
        finished = status["status"] != "in progress"
        if finished or (counts != last_counts and now - last_line >= line_every):
            elapsed = now - started
            rate = (done + failed - first_settled) / elapsed if elapsed > 0 else 0.0
            left = f", about {pending / rate:.0f} s left" if rate > 0 and pending else ""
            percent = (done + failed) * 100 // total if total else 100
            console.print(
                f"{request_id}: {status['status']}, {percent}% ({done + failed}/{total}): "
                f"{done} done, {failed} failed, {pending} pending, {rate:.1f} img/s{left}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
            last_line, last_counts = now, counts
        if finished:
            return status
        _check_deadline(deadline, request_id)
        time.sleep(poll)
