"""The seed corpus: every kind of image the tests make, then truncated and bit-flipped copies.

Seeds are small (at most a few hundred pixels a side) so that the fuzzers spend their time on
odd structure rather than on decoding large, ordinary pictures. JPEGs that Pillow cannot
write (arithmetic coding, non-interleaved and odd progressive scan scripts, restart markers)
come from jpegtran (Debian's libjpeg-turbo-progs, installed by scripts/system-deps.sh).
"""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from PIL import Image

from tests.unit.test_codec import (
    cmyk_icc_profile,
    encode,
    heic,
    photo,
    srgb_icc_profile,
    with_transparent_corner,
)
from tests.unit.test_jpeg_requantizer import with_exif_orientation

# Scan scripts for jpegtran: a non-interleaved sequential file (one scan per component) and a
# spectral-selection plus successive-approximation progression of our own.
_NON_INTERLEAVED = "0;\n1;\n2;\n"
_PROGRESSION = (
    "0,1,2: 0-0, 0, 1;\n0: 1-9, 0, 0;\n0: 10-63, 0, 0;\n1: 1-63, 0, 0;\n"
    "2: 1-63, 0, 0;\n0,1,2: 0-0, 1, 0;\n"
)


def _jpegs() -> Iterator[tuple[str, bytes]]:
    base = photo(64, 48)
    yield "baseline-420", encode(base, "JPEG", quality=90)
    yield "baseline-422", encode(base, "JPEG", quality=75, subsampling="4:2:2")
    yield "baseline-444", encode(base, "JPEG", quality=92, subsampling="4:4:4")
    yield "progressive", encode(base, "JPEG", quality=85, progressive=True)
    yield "optimized", encode(base, "JPEG", quality=50, optimize=True)
    yield "grey", encode(base.convert("L"), "JPEG", quality=90)
    yield "grey-progressive", encode(base.convert("L"), "JPEG", quality=30, progressive=True)
    yield "cmyk", encode(base.convert("CMYK"), "JPEG", quality=90)
    yield "cmyk-profile", encode(base.convert("CMYK"), "JPEG", icc_profile=cmyk_icc_profile())
    yield "srgb-profile", encode(base, "JPEG", quality=90, icc_profile=srgb_icc_profile())
    yield "odd-size", encode(photo(37, 23), "JPEG", quality=90)
    yield "one-pixel", encode(photo(1, 1), "JPEG", quality=90)
    yield "wide", encode(photo(300, 9), "JPEG", quality=60)
    yield "orientation-1", with_exif_orientation(1)
    yield "orientation-6", with_exif_orientation(6)
    yield "quality-5", encode(base, "JPEG", quality=5)
    yield "quality-100", encode(base, "JPEG", quality=100)
    yield "restart-markers", encode(base, "JPEG", quality=80, restart_marker_blocks=4)
    yield "mpo", encode(base, "MPO", save_all=True, append_images=[photo(64, 48, seed=1)])
    yield "exif-thumbnail", _with_exif_thumbnail(encode(base, "JPEG", quality=90))
    plain = encode(base, "JPEG", quality=88)
    for name, options in (
        ("arithmetic", ["-arithmetic"]),
        ("restart-rows", ["-restart", "1"]),
        ("non-interleaved", ["-scans", _NON_INTERLEAVED]),
        ("progression", ["-scans", _PROGRESSION]),
        ("progressive-jpegtran", ["-progressive", "-optimize"]),
    ):
        made = _jpegtran(plain, options)
        if made is not None:
            yield name, made


def _others() -> Iterator[tuple[str, bytes]]:
    """Every other format the general codec opens, and a few it refuses."""
    base = photo(48, 32)
    clear = with_transparent_corner(base)
    frames = [Image.new("RGB", (16, 16), colour) for colour in ("red", "lime", "blue")]
    makers: dict[str, Callable[[], bytes]] = {
        "png-rgb": lambda: encode(base, "PNG"),
        "png-rgba": lambda: encode(clear, "PNG"),
        "png-grey-alpha": lambda: encode(clear.convert("LA"), "PNG"),
        "png-palette-trns": lambda: encode(clear.convert("P"), "PNG", transparency=0),
        "png-16-bit": lambda: encode(base.convert("I;16"), "PNG"),
        "png-1-bit": lambda: encode(base.convert("1"), "PNG"),
        "apng": lambda: encode(frames[0], "PNG", save_all=True, append_images=frames[1:]),
        "gif": lambda: encode(base, "GIF"),
        "gif-animated": lambda: encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "webp-lossy": lambda: encode(base, "WEBP", quality=70),
        "webp-lossless": lambda: encode(base, "WEBP", lossless=True),
        "webp-alpha": lambda: encode(clear, "WEBP", quality=70),
        "webp-animated": lambda: encode(
            frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True
        ),
        "bmp": lambda: encode(base, "BMP"),
        "tiff": lambda: encode(base, "TIFF"),
        "tiff-cmyk": lambda: encode(base.convert("CMYK"), "TIFF", compression="tiff_lzw"),
        "tiff-float": lambda: encode(base.convert("F"), "TIFF"),
        "avif": lambda: encode(base, "AVIF", quality=60),
        "heic": lambda: heic(base),
        "heic-alpha": lambda: heic(clear),
    }
    for name, make in makers.items():
        try:
            yield name, make()
        except (OSError, ValueError, KeyError, ImportError):
            continue  # a format this Pillow cannot write: one seed fewer


def _with_exif_thumbnail(jpeg: bytes) -> bytes:
    """An APP1 EXIF block carrying a whole JPEG, with its own SOS, as cameras write them."""
    thumbnail = encode(photo(16, 12), "JPEG", quality=70)
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 0) + struct.pack("<I", 0)
    body = b"Exif\x00\x00" + tiff + thumbnail
    segment = b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body
    return jpeg[:2] + segment + jpeg[2:]


def _jpegtran(jpeg: bytes, options: list[str]) -> bytes | None:
    command = shutil.which("jpegtran")
    if command is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        arguments = []
        for option in options:
            if option.endswith(";\n"):  # a scan script goes through a file
                script = Path(folder) / "scans.txt"
                script.write_text(option)
                arguments.append(str(script))
            else:
                arguments.append(option)
        done = subprocess.run(
            [command, "-copy", "none", *arguments], input=jpeg, capture_output=True, check=False
        )
    return done.stdout if done.returncode == 0 and done.stdout else None


def _damaged(name: str, data: bytes, rng: random.Random) -> Iterator[tuple[str, bytes]]:
    yield name, data
    for fraction in (0.3, 0.6, 0.95):
        yield f"{name}-truncated-{int(fraction * 100)}", data[: int(len(data) * fraction)]
    for flip in range(3):
        damaged = bytearray(data)
        for _ in range(1 + flip * 2):
            position = rng.randrange(len(damaged))
            damaged[position] ^= 1 << rng.randrange(8)
        yield f"{name}-flipped-{flip}", bytes(damaged)


def write_seeds(folder: Path, *, jpegs_only: bool, prefix: bytes = b"") -> int:
    """Write the seeds into `folder` (each with `prefix`, the C target's option bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(10)
    kinds = list(_jpegs()) + ([] if jpegs_only else list(_others()))
    count = 0
    for name, data in kinds:
        for seed_name, seed in _damaged(name, data, rng):
            (folder / f"seed-{seed_name}").write_bytes(prefix + seed)
            count += 1
    return count
