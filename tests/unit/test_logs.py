"""Log lines: one JSON object per line as Cloud Logging reads it in the cloud, plain text
locally, each carrying the request and image it is about and the caller's trace."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator

import pytest

from shared import logs
from shared.config import Settings
from shared.domain.messages import MaterializeSlice, ProcessImage
from shared.domain.model import ImageSlice

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


Configure = Callable[[Settings], io.StringIO]
log = logging.getLogger("t")


@pytest.fixture
def configure() -> Iterator[Configure]:
    """Set logging up as the service does, writing to a buffer the test reads."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)

    def configured(settings: Settings) -> io.StringIO:
        logs.configure(settings)
        (handler,) = [h for h in root.handlers if getattr(h, "_imgsvc_handler", False)]
        stream = io.StringIO()
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(stream)
        return stream

    yield configured
    root.handlers[:], root.level = saved


@pytest.fixture
def cloud(configure: Configure) -> io.StringIO:
    return configure(Settings(project="demo-proj", log_format="json"))


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_a_cloud_line_is_one_json_object_with_severity_ids_and_trace(
    cloud: io.StringIO,
) -> None:
    stream = cloud
    headers = {"X-Cloud-Trace-Context": f"{TRACE}/1234567890;o=1"}
    with logs.scope(**logs.trace_of(headers), request_id="r" * 22, image_id="0000001-00"):
        log.warning("image %s: slow host", "0000001-00")

    (line,) = lines(stream)
    entry = json.loads(line)
    assert entry["severity"] == "WARNING"
    assert entry["message"] == "image 0000001-00: slow host"
    assert (entry["request_id"], entry["image_id"]) == ("r" * 22, "0000001-00")
    assert entry["logging.googleapis.com/trace"] == f"projects/demo-proj/traces/{TRACE}"
    assert entry["logging.googleapis.com/spanId"] == f"{1234567890:016x}"
    assert entry["logging.googleapis.com/trace_sampled"] is True
    assert entry["time"].endswith("+00:00")


def test_an_exception_stays_on_one_line_with_its_stack_trace_in_the_message(
    cloud: io.StringIO,
) -> None:
    stream = cloud
    try:
        raise RuntimeError("emulator went away")
    except RuntimeError:
        log.exception("status failed; error id abc")

    (line,) = lines(stream)
    entry = json.loads(line)
    assert entry["severity"] == "ERROR"
    assert entry["message"].startswith("status failed; error id abc\nTraceback")
    assert "RuntimeError: emulator went away" in entry["message"]
    assert "logging.googleapis.com/trace" not in entry  # no trace header, no trace field


def test_w3c_traceparent_is_read_when_googles_header_is_absent() -> None:
    fields = logs.trace_of({"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"})
    assert fields == {"trace_id": TRACE, "span_id": "00f067aa0ba902b7", "sampled": "1"}
    assert logs.trace_of({"traceparent": f"00-{TRACE}-00f067aa0ba902b7-00"})["sampled"] == "0"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Cloud-Trace-Context": "not-a-trace"},
        {"X-Cloud-Trace-Context": "0" * 32 + "/1;o=1"},
        {"traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"},
        {"traceparent": f"00-{TRACE}-zz-01"},
        {"X-Cloud-Trace-Context": f'{TRACE}/1;o=1\n{{"severity": "CRITICAL"}}'},
    ],
    ids=["none", "garbage", "zero trace", "zero traceparent", "bad span", "injected line"],
)
def test_a_malformed_trace_header_names_no_trace(headers: dict[str, str]) -> None:
    assert logs.trace_of(headers) == {}


def test_fields_last_as_long_as_their_scope(
    cloud: io.StringIO,
) -> None:
    stream = cloud
    with logs.scope(request_id="outer"):
        logs.annotate(image_id="0000002-01")
        with logs.scope(image_id="0000003-00"):
            log.info("inner")
        log.info("outer")
    log.info("after")
    logs.annotate(request_id="nowhere")  # outside any scope: no effect
    log.info("still none")

    entries = [json.loads(line) for line in lines(stream)]
    assert [(e.get("request_id"), e.get("image_id")) for e in entries] == [
        ("outer", "0000003-00"),
        ("outer", "0000002-01"),
        (None, None),
        (None, None),
    ]


def test_queued_work_is_logged_with_the_ids_of_its_message(
    cloud: io.StringIO,
) -> None:
    stream = cloud

    @logs.about_work
    def handle(services: object, message: object) -> None:
        log.info("working")

    handle(None, ProcessImage("req-a", "0000004-02"))
    handle(None, MaterializeSlice(ImageSlice(request_id="req-b", index=0, jobs=())))

    entries = [json.loads(line) for line in lines(stream)]
    assert [(e.get("request_id"), e.get("image_id")) for e in entries] == [
        ("req-a", "0000004-02"),
        ("req-b", None),
    ]


def test_local_lines_are_plain_text_with_the_ids_appended(configure: Configure) -> None:
    stream = configure(Settings(log_format="text"))
    with logs.scope(request_id="req-c", image_id="0000005-00"):
        log.info("fetched")
    log.info("idle")

    first, second = lines(stream)
    assert first.endswith("INFO t: fetched [request=req-c image=0000005-00]")
    assert second.endswith("INFO t: idle")
    with pytest.raises(json.JSONDecodeError):
        json.loads(first)


def test_auto_means_json_on_cloud_run_and_text_elsewhere() -> None:
    auto = Settings(log_format="auto")
    assert logs.wants_json(auto, {"K_SERVICE": "process-image"})
    assert not logs.wants_json(auto, {})
    assert logs.wants_json(Settings(log_format="json"), {})
    assert not logs.wants_json(Settings(log_format="text"), {"K_SERVICE": "status"})
    assert Settings.from_env({"LOG_FORMAT": "JSON"}).log_format == "json"
