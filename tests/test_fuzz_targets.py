"""`make test` keeps the fuzz targets alive (`make fuzz` runs them for real): each one builds
with AddressSanitizer and UBSan, runs its seed corpus and a few seconds of fuzzing, and runs
every input the long runs found (tests/data/fuzz), without a finding.

Each run keeps its corpus, findings and log in the test's own folder, away from a long run's
under .build/fuzz; only the binaries are shared.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.run import TARGETS, RunSummary, run_target

FOUND = Path(__file__).resolve().parent / "data" / "fuzz"
SECONDS = 5


def explain(summary: RunSummary, work: Path) -> str:
    log = (work / f"{summary.target}.log").read_text(errors="replace")
    return f"{summary}\n...\n{log[-4000:]}"


@pytest.mark.parametrize("target", TARGETS)
def test_each_fuzz_target_runs_its_seeds_and_fuzzes_a_few_seconds_without_a_finding(
    target: str, tmp_path: Path
) -> None:
    summary = run_target(target, SECONDS, work=tmp_path)

    assert (summary.exit_code, summary.findings) == (0, []), explain(summary, tmp_path)
    seeds = len(list((tmp_path / "seeds" / target).iterdir()))
    assert summary.executions >= seeds > 100  # every seed ran, and the corpus is the real one
    assert summary.coverage_edges > 0


def found_inputs(target: str, folder: Path) -> list[Path]:
    """The inputs found for `target`, and for the Python targets the C target's too (its JPEG
    without the two option bytes)."""
    inputs = sorted((FOUND / target).glob("*"))
    if target != "requantize":
        for path in sorted((FOUND / "requantize").glob("*")):
            stripped = folder / f"requantize-{path.name}"
            stripped.write_bytes(path.read_bytes()[2:])
            inputs.append(stripped)
    return inputs


@pytest.mark.parametrize("target", TARGETS)
def test_every_found_input_runs_clean_under_the_sanitizers(target: str, tmp_path: Path) -> None:
    inputs = found_inputs(target, tmp_path)
    assert inputs, "tests/data/fuzz holds the inputs the long runs found"

    summary = run_target(target, 0, inputs=inputs, work=tmp_path)

    assert (summary.exit_code, summary.findings) == (0, []), explain(summary, tmp_path)
