"""The stack runner's own rules, without starting anything."""

from __future__ import annotations

import os
from pathlib import Path

from local_profile.recipes import Stack


def test_a_relative_run_dir_is_made_absolute(tmp_path: Path) -> None:
    # `make up` passes `.run`; processes started in other folders must still find it.
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        stack = Stack(Path(".run"))
    finally:
        os.chdir(here)
    assert stack.run_dir == tmp_path / ".run"
