"""Each staged function folder is deployable as it stands: a fresh virtual environment built
from nothing but its own requirements.txt imports its main.py and finds its entry point.

This is what `gcloud functions deploy --source` does with the folder (Cloud Build installs the
requirements, the runtime imports main.py), minus the upload."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.stage_functions import FUNCTIONS, stage

CHECK = """
import importlib.util, sys
sys.path.insert(0, sys.argv[2])  # the runtime serves the folder as its working directory
spec = importlib.util.spec_from_file_location("main", "main.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
assert callable(getattr(module, sys.argv[1])), "no entry point"
import shared
assert shared.__file__.startswith(sys.argv[2]), shared.__file__  # the folder's own copy
print("ok", sys.argv[1])
"""


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("staged")
    for name in FUNCTIONS:
        stage(name, out)
    return out


def test_staged_folders_hold_everything_they_import(
    staged: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    venvs: dict[str, Path] = {}
    for name in FUNCTIONS:
        folder = staged / name
        assert {p.name for p in folder.iterdir()} == {"main.py", "requirements.txt", "shared"}
        requirements = (folder / "requirements.txt").read_text()
        assert "-r " not in requirements  # self-contained: no include outside the folder
        # Folders with identical requirements share one fresh environment.
        key = hashlib.sha256(requirements.encode()).hexdigest()
        if key not in venvs:
            venv = tmp_path_factory.mktemp(f"venv-{name}")
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run(
                [str(venv / "bin" / "pip"), "install", "--quiet", "-r", "requirements.txt"],
                cwd=folder,
                check=True,
                timeout=600,
            )
            venvs[key] = venv
        result = subprocess.run(
            [str(venvs[key] / "bin" / "python"), "-I", "-c", CHECK, name, str(folder)],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip() == f"ok {name}"
