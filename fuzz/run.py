"""Build the fuzz targets with AddressSanitizer and UBSan, and run them (`make fuzz`).

    python -m fuzz.run --seconds 600                       # every target, one after another
    python -m fuzz.run --seconds 3600 --targets requantize # one target
    python -m fuzz.run --seconds 0 --inputs tests/data/fuzz # the found inputs, once each

Everything lives in `.build/fuzz/`: the binaries, the seed corpus (written afresh each run from
`fuzz/seeds.py`), the corpus each target grew (kept between runs, so a long run resumes where
the last one stopped), the findings (crash-*, leak-*, timeout-*, oom-*) and a summary per run.
Needs clang with libFuzzer and the sanitizer runtimes (scripts/system-deps.sh installs them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / ".build" / "fuzz"
NATIVE = ROOT / "native" / "jpeg_requantize"
CORE = [NATIVE / "requantize.c"]
SANITIZERS = "address,undefined"
# -O1 with frame pointers: fast enough to fuzz, and sanitizer reports name the right lines.
CFLAGS = ["-g", "-O1", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
TARGETS = ("requantize", "shipped", "general")
# The C target takes an option byte pair before the JPEG (see requantize_fuzzer.c): quality
# 46 (1 + 45), standard tables, no scan limit.
C_SEED_PREFIX = bytes([45, 0])
FINDING_PREFIXES = ("crash-", "leak-", "timeout-", "oom-", "slow-unit-")


@dataclass
class RunSummary:
    target: str
    seconds: float
    executions: int
    coverage_edges: int
    features: int
    corpus_units: int
    findings: list[str]
    exit_code: int


def build() -> None:
    """Compile the C target and the sanitized copy of the Python module, if out of date."""
    BUILD.mkdir(parents=True, exist_ok=True)
    clang = shutil.which("clang")
    if clang is None:
        raise SystemExit("clang is needed to fuzz (scripts/system-deps.sh installs it)")
    headers = ["-I", str(NATIVE)]
    sources = [ROOT / "fuzz" / "requantize_fuzzer.c", *CORE, NATIVE / "requantize.h"]
    binary = BUILD / "requantize_fuzzer"
    if _stale(binary, sources):
        _compile(
            [clang, *CFLAGS, f"-fsanitize=fuzzer,{SANITIZERS}", *headers,
             str(ROOT / "fuzz" / "requantize_fuzzer.c"), *map(str, CORE), "-ljpeg",
             "-o", str(binary)]
        )  # fmt: skip
    package = BUILD / "python" / "jpeg_requantize"
    module = package / "_native.abi3.so"
    if _stale(module, [NATIVE / "_native.c", *sources[1:]]):
        package.mkdir(parents=True, exist_ok=True)
        shutil.copy(NATIVE / "__init__.py", package / "__init__.py")
        _compile(
            [clang, *CFLAGS, f"-fsanitize=fuzzer-no-link,{SANITIZERS}", "-fPIC", "-shared",
             "-DPy_LIMITED_API=0x030B0000", "-I", sysconfig.get_paths()["include"], *headers,
             str(NATIVE / "_native.c"), *map(str, CORE), "-ljpeg", "-o", str(module)]
        )  # fmt: skip


def _stale(product: Path, sources: list[Path]) -> bool:
    if not product.exists():
        return True
    built = product.stat().st_mtime
    return any(source.stat().st_mtime > built for source in sources)


def _compile(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"building a fuzz target failed:\n{' '.join(command)}\n{done.stderr}")


def write_seeds(target: str, work: Path = BUILD) -> Path:
    from fuzz.seeds import write_seeds as write

    folder = work / "seeds" / target
    shutil.rmtree(folder, ignore_errors=True)
    if target == "requantize":
        write(folder, jpegs_only=True, prefix=C_SEED_PREFIX)
    else:
        write(folder, jpegs_only=False)
    return folder


def command_for(target: str) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    if target == "requantize":
        return [str(BUILD / "requantize_fuzzer")], env
    import atheris

    # libFuzzer and ASan in one runtime, loaded before Python so that the sanitized module
    # and atheris share them; Python itself leaks by design, so leaks are not reported here.
    env["LD_PRELOAD"] = str(Path(atheris.path()) / "asan_with_fuzzer.so")
    env["ASAN_OPTIONS"] = "detect_leaks=0:allocator_may_return_null=1"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    env["PYTHONPATH"] = os.pathsep.join([str(BUILD / "python"), str(ROOT)])
    env["CODEC_FUZZ_TARGET"] = target
    return [sys.executable, "-m", "fuzz.codec_fuzzer"], env


_STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)")
_EXECUTED = re.compile(r"stat::number_of_executed_units: (\d+)")


def run_target(
    target: str, seconds: int, *, inputs: list[Path] | None = None, work: Path = BUILD
) -> RunSummary:
    """Fuzz `target` for `seconds`, or with `inputs`, run those files once each. Corpus,
    findings and log go under `work` (a test's short run keeps away from a long run's)."""
    build()
    command, env = command_for(target)
    findings = work / "findings" / target
    findings.mkdir(parents=True, exist_ok=True)
    before = {path.name for path in findings.iterdir()}
    options = [
        f"-artifact_prefix={findings}/",
        "-print_final_stats=1",
        "-rss_limit_mb=2560",
        "-timeout=20",
        "-max_len=262144",
    ]
    if inputs is not None:
        arguments = [*options, "-runs=1", *map(str, inputs)]
    else:
        corpus = work / "corpus" / target
        corpus.mkdir(parents=True, exist_ok=True)
        seeds = write_seeds(target, work)
        arguments = [*options, f"-max_total_time={seconds}", str(corpus), str(seeds)]
    log_path = work / f"{target}.log"
    started = time.monotonic()
    with log_path.open("w") as log:
        finished = subprocess.run(
            [*command, *arguments], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            check=False,
        )  # fmt: skip
    elapsed = time.monotonic() - started
    text = log_path.read_text(errors="replace")
    statuses = [m for line in text.splitlines() if (m := _STATUS.match(line))]
    executed = _EXECUTED.findall(text)
    last = statuses[-1] if statuses else None
    new_findings = sorted(
        path.name
        for path in findings.iterdir()
        if path.name not in before and path.name.startswith(FINDING_PREFIXES)
    )
    summary = RunSummary(
        target=target,
        seconds=round(elapsed, 1),
        executions=int(executed[-1]) if executed else (int(last.group(1)) if last else 0),
        coverage_edges=int(last.group(2)) if last else 0,
        features=int(last.group(3)) if last else 0,
        corpus_units=int(last.group(4)) if last else 0,
        findings=new_findings,
        exit_code=finished.returncode,
    )
    with (work / "summaries.jsonl").open("a") as record:
        record.write(json.dumps({"at": time.strftime("%Y-%m-%d %H:%M:%S"), **asdict(summary)}))
        record.write("\n")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=60, help="per target")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--inputs", type=Path, help="run these files (a folder) once instead")
    args = parser.parse_args()
    targets = [name for name in args.targets.split(",") if name]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; choose from {', '.join(TARGETS)}")
    failed = False
    for target in targets:
        inputs = None
        if args.inputs is not None:
            inputs = sorted(p for p in (args.inputs / target).glob("*") if p.is_file())
            if not inputs:
                continue
        summary = run_target(target, args.seconds, inputs=inputs)
        print(
            f"{target}: {summary.executions:,} executions in {summary.seconds:.0f} s, "
            f"cov {summary.coverage_edges} ft {summary.features} corpus {summary.corpus_units}, "
            f"findings: {', '.join(summary.findings) or 'none'} "
            f"(log: {BUILD / (target + '.log')})",
            flush=True,
        )
        failed |= bool(summary.findings) or summary.exit_code != 0
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
