"""Stage each Cloud Function into a self-contained folder: `gcloud functions deploy --source`
ships exactly that folder, so it must hold everything the function imports.

    .build/functions/<name>/main.py           the entry point
    .build/functions/<name>/requirements.txt  its requirements, `-r` includes resolved
    .build/functions/<name>/shared/           a copy of the core

Used by deploy.sh and by `make up PROFILE=cloud`, which runs the staged folders under
functions-framework, so what is tested locally is what would be deployed.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = ("upload", "process_image", "finalize", "status")


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


def stage(name: str, out: Path) -> Path:
    source = ROOT / "functions" / name
    target = out / name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    shutil.copy2(source / "main.py", target / "main.py")
    requirements = list(dict.fromkeys(resolved_requirements(source / "requirements.txt")))
    (target / "requirements.txt").write_text("\n".join(requirements) + "\n")
    shutil.copytree(
        ROOT / "shared", target / "shared", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / ".build" / "functions")
    parser.add_argument("names", nargs="*", default=list(FUNCTIONS))
    args = parser.parse_args()
    for name in args.names:
        print(stage(name, args.out))


if __name__ == "__main__":
    main()
