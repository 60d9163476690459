"""What `imgsvc` exits with, so that scripts can tell outcomes apart without parsing output."""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0  # done: for submit --wait, wait and download, every image done
    UNEXPECTED = 1  # a bug in imgsvc itself (its traceback is printed)
    USAGE = 2  # bad usage or input: unknown option, unreadable or invalid CSV, bad id
    IMAGES_FAILED = 3  # the request completed, but some of its images failed
    REQUEST_FAILED = 4  # the request as a whole failed (its CSV could not be read back)
    UNREACHABLE = 5  # the service did not answer, or answered 5xx
    REFUSED = 6  # the service said no: no or wrong API key, unknown request, 409, 429
    STILL_RUNNING = 7  # --timeout ran out, or download of a request still in progress
    INTERRUPTED = 130  # Ctrl-C


HELP = "\n".join(
    [
        "Exit codes:",
        "",
        "\b",  # click keeps the lines of a paragraph that starts so as they are
        "  0  done (submit --wait, wait, download: every image done)",
        "  1  unexpected error in imgsvc itself",
        "  2  bad usage or input (an invalid CSV: every problem listed, nothing uploaded)",
        "  3  the request completed with failed images",
        "  4  the request failed as a whole",
        "  5  the service is unreachable or answered 5xx",
        "  6  the service refused: API key, unknown request, conflict (409), rate limit (429)",
        "  7  still in progress (wait --timeout ran out; download of an unfinished request)",
        "130  interrupted",
    ]
)


def outcome(status: dict[str, object]) -> Exit:
    """The exit code a finished request's status means."""
    if status.get("status") == "failed":
        return Exit.REQUEST_FAILED
    if status.get("status") != "completed":
        return Exit.STILL_RUNNING
    progress = status.get("progress")
    failed = progress.get("failed", 0) if isinstance(progress, dict) else 0
    return Exit.IMAGES_FAILED if failed else Exit.OK
