"""How the service logs, decided in one place.

In the cloud every line is one JSON object as Cloud Logging reads it from a function's output:
`severity`, `message`, `time`, the request and image the line is about, and the request's trace
(`logging.googleapis.com/trace`, from `X-Cloud-Trace-Context` or W3C `traceparent`), so that
the lines of one upload or one image can be found together and beside their trace. Locally the
same lines are plain text, with the ids appended.

A unit of work (an HTTP request, a queued message) opens a `scope` with what it is about; code
inside it may `annotate` what it learns later (the upload learns its request id when it makes
it). Every line logged inside the scope carries those fields, whatever logger wrote it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final, ParamSpec, TypeVar

from shared.config import Settings

_P = ParamSpec("_P")
_R = TypeVar("_R")

# The fields of the unit of work in progress: request_id, image_id, trace_id, span_id, sampled.
_fields: ContextVar[dict[str, str] | None] = ContextVar("imgsvc_log_fields", default=None)

_TRACEPARENT: Final = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_CLOUD_TRACE: Final = re.compile(r"^([0-9a-fA-F]{32})(?:/(\d{1,20}))?(?:;o=([01]))?$")
_SEVERITY: Final = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}
_IDS: Final = ("request_id", "image_id")
# The request headers that name a trace, in the order they are believed.
TRACE_HEADERS: Final = ("X-Cloud-Trace-Context", "traceparent")


@contextmanager
def scope(**fields: str | None) -> Iterator[None]:
    """Lines logged inside carry `fields` (None values are left out); nested scopes add to
    the outer one, and leaving a scope forgets what it and `annotate` added."""
    token = _fields.set({**(_fields.get() or {}), **_given(fields)})
    try:
        yield
    finally:
        _fields.reset(token)


def annotate(**fields: str | None) -> None:
    """Add to the fields of the scope in progress (nothing happens outside one)."""
    current = _fields.get()
    if current is not None:
        current.update(_given(fields))


def current() -> dict[str, str]:
    return dict(_fields.get() or {})


def _given(fields: Mapping[str, str | None]) -> dict[str, str]:
    return {name: value for name, value in fields.items() if value}


def trace_of(headers: Mapping[str, str]) -> dict[str, str]:
    """The trace an incoming request belongs to, as scope fields; {} when it names none.
    Google's front ends send `X-Cloud-Trace-Context: TRACE/SPAN;o=1` (SPAN in decimal);
    OpenTelemetry clients send `traceparent: 00-TRACE-SPAN-FLAGS` (W3C)."""
    cloud = _CLOUD_TRACE.match((headers.get("X-Cloud-Trace-Context") or "").strip())
    if cloud and int(cloud.group(1), 16):
        fields = {"trace_id": cloud.group(1).lower(), "sampled": cloud.group(3) or "0"}
        if cloud.group(2) and int(cloud.group(2)) < 2**64:
            fields["span_id"] = f"{int(cloud.group(2)):016x}"
        return fields
    w3c = _TRACEPARENT.match((headers.get("traceparent") or "").strip())
    if w3c and int(w3c.group(1), 16) and int(w3c.group(2), 16):
        return {
            "trace_id": w3c.group(1),
            "span_id": w3c.group(2),
            "sampled": str(int(w3c.group(3), 16) & 1),
        }
    return {}


def about_work(handler: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run `handler(services, message, ...)` in a scope naming the message's request and
    image (a slice names its request only)."""

    @functools.wraps(handler)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        message = args[1] if len(args) > 1 else kwargs.get("message")
        with scope(**ids_of(message)):
            return handler(*args, **kwargs)

    return wrapper


def ids_of(message: object) -> dict[str, str | None]:
    subject = getattr(message, "slice", message)
    return {name: _text(getattr(subject, name, None)) for name in _IDS}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


class _ScopeFields(logging.Filter):
    """Copies the scope's fields onto each record as it is emitted (in the logging thread)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in current().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class CloudLoggingFormatter(logging.Formatter):
    """One JSON object per line, with the fields Cloud Logging lifts into the log entry."""

    def __init__(self, project: str) -> None:
        super().__init__()
        self._project = project

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            # Error Reporting finds the stack trace in the message.
            message += "\n" + self.formatException(record.exc_info)
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, "DEFAULT"),
            "message": message,
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
            "logging.googleapis.com/sourceLocation": {
                "file": record.pathname,
                "line": str(record.lineno),
                "function": record.funcName,
            },
        }
        for name in _IDS:
            value = getattr(record, name, None)
            if value:
                entry[name] = value
        trace_id = getattr(record, "trace_id", None)
        if trace_id:
            entry["logging.googleapis.com/trace"] = f"projects/{self._project}/traces/{trace_id}"
            span_id = getattr(record, "span_id", None)
            if span_id:
                entry["logging.googleapis.com/spanId"] = span_id
            entry["logging.googleapis.com/trace_sampled"] = getattr(record, "sampled", "0") == "1"
        return json.dumps(entry, ensure_ascii=False, default=str)


class HumanFormatter(logging.Formatter):
    """`time LEVEL logger: message [request=... image=...]` for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = [f"{name.removesuffix('_id')}={getattr(record, name)}" for name in _IDS
               if getattr(record, name, None)]  # fmt: skip
        if not ids:
            return line
        first, newline, rest = line.partition("\n")
        return f"{first} [{' '.join(ids)}]{newline}{rest}"


def wants_json(settings: Settings, env: Mapping[str, str] | None = None) -> bool:
    """LOG_FORMAT=json or text; `auto` means JSON on Cloud Run (every 2nd-gen function sets
    K_SERVICE), text anywhere else."""
    if settings.log_format != "auto":
        return settings.log_format == "json"
    return bool((os.environ if env is None else env).get("K_SERVICE"))


_HANDLER_MARK: Final = "_imgsvc_handler"


def configure(settings: Settings) -> None:
    """Make the root logger write the service's lines to stderr, in the format for where it
    runs. Idempotent: a second call replaces the handler the first one installed."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(_ScopeFields())
    handler.setFormatter(
        CloudLoggingFormatter(settings.project) if wants_json(settings) else HumanFormatter()
    )
    root.addHandler(handler)
    root.setLevel(settings.log_level)
