"""`pip install .` gives a working `imgsvc` command: the wheel pip builds from pyproject.toml
carries the console script and every module the command imports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_an_imgsvc_command_that_runs_from_anywhere(tmp_path: Path) -> None:
    # Built from a copy of what `pip install .` reads, so the build leaves nothing behind in
    # the checkout (setuptools writes build/ and *.egg-info beside pyproject.toml).
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy2(ROOT / "pyproject.toml", source)
    for package in ("imgsvc_cli", "shared"):
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    wheels = tmp_path / "wheels"
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels)]
    subprocess.run([*command, str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("imgsvc-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "imgsvc_cli/app.py" in names and "shared/domain/csv_table.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "imgsvc = imgsvc_cli.app:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    assert not any(n.startswith(("tests/", "local_profile/", "functions/")) for n in names)

    # Installed on its own (its dependencies come from this environment), run from a folder
    # that is not the checkout: what runs is the installed copy.
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
         str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONSAFEPATH": "1"}
    where = subprocess.run(
        [sys.executable, "-c", "import imgsvc_cli; print(imgsvc_cli.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.startswith(str(site))
    shown = subprocess.run(
        [str(site / "bin" / "imgsvc"), "--help"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "submit" in shown.stdout and "Exit codes:" in shown.stdout
    assert "3  the request completed with failed images" in shown.stdout
