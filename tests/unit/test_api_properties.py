"""Property: whatever a client uploads, the answer is a 202 or a 400 that explains itself
(issue 5, "Fuzzing"), at the level of shared.api.upload, the answer both profiles send.

A 400 is `invalid_csv` with every problem listed (line, column, message), and nothing was
stored or queued; a 202 stored exactly one request. Never a 500, never an exception.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.config import Limits, Settings
from shared.entrypoints import http_api as api
from tests.fakes import fake_world

HEADER = "Serial Number,Product Name,Input Image Urls\n"
LIMITS = Limits(max_rows=20, max_urls_per_row=4, max_url_length=120)

_PIECES = st.sampled_from(
    [
        ",",
        '"',
        "\n",
        "\r\n",
        " ",
        "\x00",
        "1",
        "2",
        "Lamp",
        "=cmd|' /C calc'!A0",
        "https://203.0.113.5/a.jpg",
        "http://u:p@h.test/",
        "javascript:alert(1)",
        "<script>",
        "https://h.test:99999/",
        "\ufeff",
        "é",
        "\ufffd",
    ]
)
_HEADERS = st.sampled_from(["", HEADER, "S. No.,Product,Image Urls,Brand\r\n", "a,b\n"])
_CSVISH = st.builds(
    lambda header, body, bom: (b"\xef\xbb\xbf" if bom else b"") + (header + body).encode(),
    _HEADERS,
    st.lists(_PIECES, max_size=40).map("".join),
    st.booleans(),
)
UPLOADS = st.one_of(st.binary(max_size=300), _CSVISH)


def check_answer(data: bytes) -> int:
    w = fake_world(Settings(limits=LIMITS))
    answer = api.upload(
        w.services,
        is_multipart=True,
        file=api.UploadedFile(data, "upload.csv", "text/csv"),
        webhook_url=None,
        owner="fuzz",
    )
    json.dumps(answer.body)  # always serialisable
    if answer.status == 202:
        assert len(w.requests.records) == 1
        assert answer.body["images"] >= answer.body["rows"] >= 1
        return answer.status
    assert answer.status == 400, answer.body
    error = answer.body["error"]
    assert error["code"] == "invalid_csv"
    assert error["details"], "a 400 must say what is wrong"
    assert error["total_problems"] >= len(error["details"])
    for problem in error["details"]:
        assert isinstance(problem["line"], int) and problem["line"] >= 1
        assert problem["column"] is None or isinstance(problem["column"], str)
        assert isinstance(problem["message"], str) and problem["message"]
    assert not w.requests.records and not w.blobs.uploads and not w.queue.slices
    return answer.status


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(UPLOADS)
def test_every_upload_is_accepted_or_a_400_with_details(data: bytes) -> None:
    check_answer(data)


def test_a_valid_upload_is_accepted_and_an_invalid_one_explained() -> None:
    # Both branches of the property, on inputs known to take them.
    assert check_answer(f"{HEADER}1,Lamp,https://203.0.113.5/a.jpg\n".encode()) == 202
    assert check_answer(f"{HEADER}1,,\n".encode()) == 400
