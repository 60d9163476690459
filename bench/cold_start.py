"""Cold start of each staged Cloud Function, in the environment Cloud Build would install for
it (its own requirements.txt, binary packages only: `function_runtime`):

- import: `python -X importtime -c "import main"` in the folder, the module functions-framework
  loads before the instance serves anything;
- set-up: import plus building the function's services (`instance_services()`), what its first
  request pays before doing its own work;
- eager (the baseline, same run): import plus everything the service defers (Pillow, numpy,
  pillow-heif, the Cloud Tasks client, the safe HTTP client, the Firestore and Storage
  clients), i.e. what the import cost when every adapter was loaded at start-up;
- floor: functions-framework alone, which every function pays whatever it does.

Runs take turns (every function once, then again) so that a load on the machine spreads over
all of them; the figures are medians.

    python -m bench.cold_start [--staged DIR] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from scripts.stage_functions import FUNCTIONS, function_runtime, stage_all

RUNS = 7
TARGET_SECONDS = 0.4

# CPU seconds (process_time) as well as wall seconds: imports are CPU work once the files are
# in the page cache, and CPU time barely moves when other jobs load the machine.
SETUP = """
import json, sys, time
sys.path.insert(0, ".")
started = time.process_time()
import main
imported = time.process_time()
from shared.bootstrap import instance_services
instance_services()
print(json.dumps({"import": imported - started, "setup": time.process_time() - started}))
"""

EAGER = """
import json, sys, time
sys.path.insert(0, ".")
started = time.process_time()
import main
import PIL.Image, numpy, pillow_heif
import google.cloud.tasks_v2, google.cloud.firestore, google.cloud.storage
import shared.adapters.egress.safe_http, shared.adapters.codec.pillow_codec
import shared.adapters.gcp.firestore_store, shared.adapters.gcp.cloud_tasks_queue
print(json.dumps({"eager": time.process_time() - started}))
"""

FLOOR = """
import json, time
started = time.process_time()
import functions_framework
print(json.dumps({"floor": time.process_time() - started}))
"""

# Services are built against emulator addresses where nothing listens: building them opens no
# connection, and no credential lookup reaches for a metadata server.
OFFLINE = {
    "FIRESTORE_EMULATOR_HOST": "127.0.0.1:9",
    "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9",
    "TASK_BACKEND": "cloudtasks",
    "CLOUD_TASKS_EMULATOR_HOST": "127.0.0.1:9",
    "PROCESS_IMAGE_URL": "http://127.0.0.1:9/",
    "FINALIZE_URL": "http://127.0.0.1:9/",
    "LOG_LEVEL": "ERROR",
}
_MAIN_LINE = re.compile(r"^import time:\s+\d+ \|\s+(\d+) \| main$", re.MULTILINE)


@dataclass(frozen=True)
class ColdStart:
    function: str
    import_wall_s: float  # python -X importtime, the cumulative time of main
    import_s: float  # CPU seconds from here on
    setup_s: float
    eager_s: float


@dataclass(frozen=True)
class ColdStartReport:
    functions: list[ColdStart]
    floor_s: float  # CPU seconds of functions-framework's own import
    runs: int


def _python(folder: Path) -> str:
    return str(function_runtime(folder) / "bin" / "python")


def _run(folder: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [_python(folder), *argv],
        cwd=folder,
        env={**env, **OFFLINE},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )


def _import_seconds(folder: Path) -> float:
    err = _run(
        folder, ["-X", "importtime", "-c", "import sys; sys.path.insert(0, '.'); import main"]
    )
    match = _MAIN_LINE.search(err.stderr)
    assert match, err.stderr[-2000:]
    return int(match.group(1)) / 1e6


def _measured(folder: Path, script: str) -> dict[str, float]:
    figures: dict[str, float] = json.loads(_run(folder, ["-c", script]).stdout)
    return figures


def measure(staged: Path, runs: int = RUNS) -> ColdStartReport:
    kinds = ("wall", "import", "setup", "eager")
    samples = {name: {kind: [] for kind in kinds} for name in FUNCTIONS}  # type: ignore[var-annotated]
    floor: list[float] = []
    for _ in range(runs):
        for name in FUNCTIONS:
            folder = staged / name
            samples[name]["wall"].append(_import_seconds(folder))
            setup = _measured(folder, SETUP)
            samples[name]["import"].append(setup["import"])
            samples[name]["setup"].append(setup["setup"])
            samples[name]["eager"].append(_measured(folder, EAGER)["eager"])
        floor.append(_measured(staged / FUNCTIONS[0], FLOOR)["floor"])
    median = statistics.median
    return ColdStartReport(
        functions=[
            ColdStart(
                function=name,
                import_wall_s=median(samples[name]["wall"]),
                import_s=median(samples[name]["import"]),
                setup_s=median(samples[name]["setup"]),
                eager_s=median(samples[name]["eager"]),
            )
            for name in FUNCTIONS
        ],
        floor_s=median(floor),
        runs=runs,
    )


def cold_start_benchmark(work: Path, runs: int = RUNS) -> ColdStartReport:
    staged = work / "cold-start"
    stage_all(staged)
    return measure(staged, runs)


def render_cold_start_section(report: ColdStartReport) -> str:
    rows = [
        "| Function | Import of main, wall (`-X importtime`) | Import, CPU | Import + services "
        "built, CPU (the first request's set-up) | Baseline: import with nothing deferred, CPU "
        "(same run) | Import vs baseline | Import in floors (functions-framework alone: "
        f"{report.floor_s:.3f} s CPU) | Import under {TARGET_SECONDS} s (CPU) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in report.functions:
        met = "met" if f.import_s < TARGET_SECONDS else "missed"
        rows.append(
            f"| {f.function} | {f.import_wall_s:.3f} s | {f.import_s:.3f} s | {f.setup_s:.3f} s "
            f"| {f.eager_s:.3f} s | {f.import_s / f.eager_s:.2f}x | "
            f"{f.import_s / report.floor_s:.2f} | {met} |"
        )
    return "\n".join(rows)


def cold_start_markdown(report: ColdStartReport) -> str:
    return (
        "## Cold start of the staged functions\n\n"
        f"{render_cold_start_section(report)}\n\n"
        f"Medians of {report.runs} runs each, in each function's own environment (its "
        "requirements.txt installed binary-only, the codec wheel included), the functions "
        "taking turns. Import is main.py, what functions-framework loads before the instance "
        "serves: its wall time from `python -X importtime`, and its CPU time, which a load on "
        "the machine moves far less (the target is judged on it). The set-up column adds "
        "building the services the first request needs. Importing `shared.bootstrap` loads "
        "no client library: each adapter's libraries load when it is built, and the adapters "
        "only some functions use are built on first use, so status never loads Pillow, numpy, "
        "the Cloud Tasks client or the service's fetcher, upload and finalize never load "
        "Pillow, and process_image loads Pillow, numpy and pillow-heif only at its first "
        "picture that is not a plain JPEG. The Firestore and Storage clients every function "
        "needs load in the set-up, so the set-up column, not the import, is the cold start a "
        "first request waits for. The floor is functions-framework's own import, measured in "
        "the same runs.\n\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--staged", type=Path, help="measure these staged folders instead")
    parser.add_argument("--runs", type=int, default=RUNS)
    args = parser.parse_args()
    if args.staged:
        print(render_cold_start_section(measure(args.staged, args.runs)))
        return
    with tempfile.TemporaryDirectory(prefix="imgsvc-cold-") as tmp:
        print(render_cold_start_section(cold_start_benchmark(Path(tmp), args.runs)))


if __name__ == "__main__":
    main()
