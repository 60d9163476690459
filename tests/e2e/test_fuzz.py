"""The API fuzzed against its own description (issue 5, "Fuzzing"): schemathesis reads
openapi.yaml from the live local gateway and sends what it makes of it, examples, boundary
values, random and malformed data, and upload-then-status sequences along the document's link.
No answer may be a 5xx, and every answer must match the document.

The uploads it makes are harmless: the example CSV names documentation addresses (203.0.113.0/24),
which the address rules refuse without sending a packet, and the test stack runs with
FETCH_DNS=off, so not even a generated host name is looked up.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

CHECKS = "not_a_server_error,response_schema_conformance,content_type_conformance"


def test_the_gateway_survives_schemathesis(gateway_url: str, tmp_path: Path) -> None:
    binary = Path(sys.executable).with_name("schemathesis")
    command = [
        str(binary), "run", f"{gateway_url}/openapi.yaml",
        "--url", gateway_url,
        "--checks", CHECKS,
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", "60",
        "--workers", "2",
        "--request-timeout", "30",
        "--generation-database", "none",
        "--no-color",
    ]  # fmt: skip
    # Its reports and caches go to a directory of the test's own.
    run = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    # It really tested both operations, stateful sequences included, with many cases.
    assert "Tested: 2" in report, report
    assert "Stateful" in report and "API Links:" in report, report
    generated = re.search(r"(\d+) generated, (\d+) passed", report)
    assert generated is not None, report
    assert int(generated.group(1)) >= 200
