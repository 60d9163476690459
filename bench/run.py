"""`make bench`: run every benchmark and write BENCHMARKS.md."""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench.pipeline import Figure, end_to_end_benchmark, upload_benchmark

ROOT = Path(__file__).resolve().parents[1]


def render(figures: list[Figure]) -> str:
    lines = [
        "| Benchmark | Measured | Baseline (same run) | Ratio | Notes |",
        "| --- | --- | --- | --- | --- |",
    ]
    for f in figures:
        baseline = f"{f.baseline:.3f} {f.unit} ({f.baseline_name})" if f.baseline else ""
        ratio = f"{f.ratio:.2f}x" if f.ratio else ""
        lines.append(f"| {f.name} | {f.value:.3f} {f.unit} | {baseline} | {ratio} | {f.note} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=["upload", "e2e"], default=None)
    args = parser.parse_args()
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="imgsvc-bench-") as tmp:
        if args.only in (None, "upload"):
            figures += upload_benchmark(Path(tmp))
            print(render(figures))
        if args.only in (None, "e2e"):
            figures += end_to_end_benchmark(Path(tmp))
    table = render(figures)
    print(table)
    machine = f"{platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} cores"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    (ROOT / "BENCHMARKS.md").write_text(
        "# Benchmarks\n\n"
        f"Written by `make bench` on {stamp} ({machine}). Every figure is compared with a "
        "baseline measured in the same run, on the same machine.\n\n"
        "## Pipeline (local profile)\n\n"
        f"{table}\n\n"
        "The end-to-end ratio counts everything the local profile runs on the same cores: the "
        "Firestore emulator (a JVM), the Storage emulator (Python), Redis, the gateway and the "
        "worker. The ideal counts only decoding and re-encoding with plain Pillow.\n"
    )


if __name__ == "__main__":
    main()
