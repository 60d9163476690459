"""Each staged function folder is deployable as it stands: a fresh virtual environment built
from nothing but its own requirements.txt, binary packages only, imports its main.py, finds its
entry point, and compresses JPEGs with the DCT codec from the staged wheel, whose libjpeg is
its own.

This is what `gcloud functions deploy --source` does with the folder (Cloud Build runs pip in
the folder on an image with no libjpeg headers and no native/, the runtime imports main.py),
minus the upload: `--only-binary=:all:` stands for the missing compiler and headers, since
nothing may be built from source.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.stage_functions import FUNCTIONS, stage_all

# The glibc of the Cloud Functions Python runtimes' Ubuntu 22.04.
RUNTIME_GLIBC = (2, 35)

CHECK = """
import importlib.util, io, json, sys
sys.path.insert(0, sys.argv[2])  # the runtime serves the folder as its working directory
spec = importlib.util.spec_from_file_location("main", "main.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
assert callable(getattr(module, sys.argv[1])), "no entry point"
import shared
assert shared.__file__.startswith(sys.argv[2]), shared.__file__  # the folder's own copy

from PIL import Image
from shared.bootstrap import build_codec
from shared.config import Limits

codec = build_codec(Limits())
photo = io.BytesIO()
Image.radial_gradient("L").convert("RGB").resize((640, 480)).save(photo, "JPEG", quality=80)
out = codec.compress(photo.getvalue())
# Pillow's own libjpeg decodes what the wheel's libjpeg wrote, in the same process.
Image.open(io.BytesIO(out.data)).load()
import jpeg_requantize
print(json.dumps({
    "entry_point": sys.argv[1],
    "codec": type(codec).__name__,
    "source_quality": out.source_quality,
    "output_quality": out.output_quality,
    "extension": jpeg_requantize._native.__file__,
    "maps": [line.split()[-1] for line in open("/proc/self/maps") if "libjpeg" in line],
}))
"""


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("staged")
    stage_all(out)
    return out


def wheel_tags(name: str) -> tuple[str, str, list[str]]:
    """(python tag, abi tag, platform tags) of a wheel's file name (PEP 427)."""
    _, _, python, abi, platforms = name.removesuffix(".whl").split("-")
    return python, abi, platforms.split(".")


def glibc_of(platform: str) -> tuple[int, int]:
    if platform == "manylinux2014_x86_64":  # PEP 599's name for manylinux_2_17
        return (2, 17)
    match = re.fullmatch(r"manylinux_(\d+)_(\d+)_x86_64", platform)
    assert match, f"{platform} is not a manylinux x86_64 tag"
    return int(match.group(1)), int(match.group(2))


def test_the_codec_wheel_is_abi3_and_manylinux_within_the_runtime_glibc(staged: Path) -> None:
    (wheel,) = (staged / "process_image" / "wheels").glob("*.whl")
    python, abi, platforms = wheel_tags(wheel.name)
    assert (python, abi) == ("cp311", "abi3")  # one file for the 3.11 and 3.12 runtimes
    assert platforms and all(glibc_of(p) <= RUNTIME_GLIBC for p in platforms), platforms


def test_staged_folders_hold_everything_they_import(
    staged: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    venvs: dict[str, Path] = {}
    for name in FUNCTIONS:
        folder = staged / name
        assert {p.name for p in folder.iterdir()} == {
            "main.py",
            "requirements.txt",
            "shared",
            "wheels",
        }
        requirements = (folder / "requirements.txt").read_text().splitlines()
        assert not [line for line in requirements if line.startswith(("-r ", "--requirement"))]
        # The codec is named by its exact file in the folder, never by a bare name that the
        # public index would resolve (nor found through --find-links).
        (wheel,) = (folder / "wheels").glob("*.whl")
        assert f"./wheels/{wheel.name}" in requirements
        assert not [line for line in requirements if line.startswith(("-f", "--find-links"))]
        assert not [line for line in requirements if line.startswith("imgsvc")]

        # Folders with identical requirements share one fresh environment.
        key = hashlib.sha256("\n".join(requirements).encode()).hexdigest()
        if key not in venvs:
            venv = tmp_path_factory.mktemp(f"venv-{name}")
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run(
                [str(venv / "bin" / "pip"), "install", "--quiet", "--only-binary=:all:",
                 "-r", "requirements.txt"],
                cwd=folder,
                check=True,
                timeout=600,
            )  # fmt: skip
            venvs[key] = venv
        venv = venvs[key]
        result = subprocess.run(
            [str(venv / "bin" / "python"), "-I", "-c", CHECK, name, str(folder)],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        seen = json.loads(result.stdout)
        assert seen["entry_point"] == name
        assert seen["codec"] == "JpegRequantizer"  # the DCT path, not the Pillow fallback
        assert (seen["source_quality"], seen["output_quality"]) == (80, 40)

        extension = Path(seen["extension"])
        assert extension.is_relative_to(venv)
        site_packages = extension.parents[1]
        # ldd: the extension's libjpeg is the copy the wheel bundles, not the system's.
        ldd = subprocess.run(
            ["ldd", str(extension)], capture_output=True, text=True, check=True
        ).stdout
        (libjpeg,) = [line for line in ldd.splitlines() if "libjpeg" in line]
        resolved = Path(libjpeg.split("=>")[1].split("(")[0].strip()).resolve()
        assert resolved.parent == site_packages / "imgsvc_jpeg_requantize.libs", ldd
        # And in the running process: the wheel's libjpeg beside Pillow's own, no system one.
        loaded = {Path(path).resolve().parent for path in seen["maps"]}
        assert site_packages / "imgsvc_jpeg_requantize.libs" in loaded
        assert site_packages / "pillow.libs" in loaded
        assert not [p for p in loaded if not p.is_relative_to(site_packages)], loaded
