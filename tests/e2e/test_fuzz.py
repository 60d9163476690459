"""The API fuzzed against its own description (issue 5, "Fuzzing"): schemathesis reads
openapi.yaml from the live local gateway and sends what it makes of it, examples, boundary
values, random and malformed data, and upload-then-status and upload-then-resend sequences along
the document's links, with every check it has (`--checks all`): no 5xx, every answer's status,
content type, headers and body as documented, data the document allows accepted and data it
forbids rejected, unsupported methods answered 405 with `Allow`, authentication not ignored.
`schemathesis.toml` beside this file says the one place where the document cannot say it all
(a schema-valid CSV may still be an invalid product CSV: a 400).

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

CONFIG = Path(__file__).with_name("schemathesis.toml")


def test_the_gateway_survives_schemathesis(gateway_url: str, tmp_path: Path) -> None:
    binary = Path(sys.executable).with_name("schemathesis")
    command = [
        str(binary), "--config-file", str(CONFIG), "run", f"{gateway_url}/openapi.yaml",
        "--url", gateway_url,
        "--checks", "all",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", "100",
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
    # It really tested every operation in every phase, stateful sequences included, with many
    # cases, and found nothing.
    assert "Tested: 3" in report, report
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in report, report
    # Sequences along the links: which of the four (two declared, two inferred) a run covers is
    # up to its random draw; most runs cover all four, none covered fewer than three.
    links = re.search(r"API Links:\s+(\d+) covered / (\d+) selected", report)
    scenarios = re.search(r"Scenarios:\s+(\d+)", report)
    assert links is not None and int(links.group(1)) >= 2, report
    assert scenarios is not None and int(scenarios.group(1)) >= 50, report
    generated = re.search(r"(\d+) generated, (\d+) passed", report)
    assert generated is not None, report
    assert int(generated.group(1)) >= 500 and generated.group(1) == generated.group(2), report
