"""Memory per image is bounded: the peak while compressing one large picture, measured in a
process of its own (a test process's high-water mark says nothing about one image).

The bounds, per path (the figures are in BENCHMARKS.md):
- a JPEG, on the DCT path or through Pillow: 1.5 times the decoded RGB picture (4.5 bytes a
  pixel);
- a picture with real transparency, written as WebP with alpha: 20 bytes a pixel (libwebp's
  lossy encoder and its lossless alpha plane), allowed only up to MAX_TRANSPARENT_PIXELS
  (16 MP: at most 320 MB, where a 50 MP one took 900 MB);
- a transparent picture above that cap, flattened onto white into a JPEG: 10 bytes a pixel
  (Pillow holds RGB as 4 bytes a pixel, so the decoded RGBA and the flattened RGB are 8).

The peak is `ru_maxrss` after compressing minus `ru_maxrss` before, in the same child, once the
codec has warmed up and the source bytes are in memory: what compressing that one image added
to the process's high-water mark.

Linux carries a process's `ru_maxrss` across exec from whatever it was forked from: a child
of this test process would start with the test process's own high-water mark (hundreds of MB
after making the photos) and report no growth at all. So the child is started by a shell,
which forks it afresh from the shell's small footprint.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from local_profile.sample_images import photo_array, photo_jpeg, transparent_png
from shared.config import Limits

ROOT = Path(__file__).resolve().parents[2]
WIDTH, HEIGHT = 4000, 3000
# Smaller: the bound is per pixel, and a 12 MP transparent PNG takes seconds to make.
CLEAR_WIDTH, CLEAR_HEIGHT = 2000, 1500
MAX_PEAK_OVER_DECODED_RGB = 1.5

CHILD = """
import io, json, resource, sys
from PIL import Image
from shared.adapters.codec.pillow_codec import PillowCodec
from shared.bootstrap import build_codec
from shared.config import Limits

path, which, transparent_cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
limits = Limits(max_transparent_pixels=transparent_cap, optimal_huffman_tables=which == "optimal")
codec = PillowCodec(limits) if which == "pillow" else build_codec(limits)
clear = Image.new("RGBA", (64, 64))
clear.putpixel((0, 0), (0, 0, 0, 0))
for picture, kind in ((Image.new("RGB", (64, 64)), "JPEG"), (clear, "PNG")):
    warm_up = io.BytesIO()  # load every library on the way: libjpeg, zlib, libwebp
    picture.save(warm_up, kind)
    codec.compress(warm_up.getvalue())
data = open(path, "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = codec.compress(data)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_bytes": (after - before) * 1024, "pixels": result.width * result.height,
                  "path": type(codec).__name__, "format": result.output_format}))
"""


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("large")
    (folder / "420.jpg").write_bytes(photo_jpeg(WIDTH, HEIGHT, 90))
    (folder / "444.jpg").write_bytes(photo_jpeg(WIDTH, HEIGHT, 90, subsampling="4:4:4"))
    Image.fromarray(photo_array(WIDTH, HEIGHT)).save(folder / "photo.png", compress_level=1)
    (folder / "clear.png").write_bytes(transparent_png(CLEAR_WIDTH, CLEAR_HEIGHT))
    return folder


def peak_in_child(
    source: Path, which: str, transparent_cap: int = Limits().max_transparent_pixels
) -> dict[str, int | str]:
    arguments = [str(source), which, str(transparent_cap)]
    finished = subprocess.run(
        # `; exit` keeps the shell from exec-ing the child in its own (inherited) process.
        ["/bin/sh", "-c", '"$@"; exit $?', "sh", sys.executable, "-c", CHILD, *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    measured: dict[str, int | str] = json.loads(finished.stdout)
    return measured


@pytest.mark.parametrize(
    ("name", "which", "path"),
    [
        ("420.jpg", "shipped", "JpegRequantizer"),  # re-quantized in the DCT domain
        ("444.jpg", "shipped", "JpegRequantizer"),  # left to Pillow by the fast path
        ("420.jpg", "pillow", "PillowCodec"),
        # With OPTIMAL_HUFFMAN_TABLES=1: the DCT path's second entropy pass, and a PNG through
        # Pillow given optimal tables in a second pass once its picture is gone.
        ("420.jpg", "optimal", "JpegRequantizer"),
        ("photo.png", "optimal", "JpegRequantizer"),
    ],
    ids=["4:2:0 fast path", "4:4:4 shipped", "4:2:0 pillow", "4:2:0 optimal", "png optimal"],
)
def test_peak_memory_of_a_12_megapixel_opaque_picture_is_within_1_5_times_its_decoded_size(
    photos: Path, name: str, which: str, path: str
) -> None:
    measured = peak_in_child(photos / name, which)

    assert (measured["path"], measured["pixels"]) == (path, WIDTH * HEIGHT)
    decoded_rgb = WIDTH * HEIGHT * 3
    # At least half of it: holding the picture (or its coefficients) shows, or nothing was measured.
    assert (
        0.5 * decoded_rgb <= int(measured["peak_bytes"]) <= MAX_PEAK_OVER_DECODED_RGB * decoded_rgb
    )


@pytest.mark.parametrize(
    ("transparent_cap", "output_format", "max_bytes_per_pixel"),
    [
        (CLEAR_WIDTH * CLEAR_HEIGHT, "webp", 20),  # at the cap: WebP with alpha
        (CLEAR_WIDTH * CLEAR_HEIGHT - 1, "jpeg", 10),  # above it: flattened onto white
    ],
    ids=["webp at the transparent cap", "flattened above it"],
)
def test_peak_memory_of_a_transparent_picture_is_bounded_per_pixel(
    photos: Path, transparent_cap: int, output_format: str, max_bytes_per_pixel: int
) -> None:
    measured = peak_in_child(photos / "clear.png", "shipped", transparent_cap)

    pixels = CLEAR_WIDTH * CLEAR_HEIGHT
    assert (measured["format"], measured["pixels"]) == (output_format, pixels)
    # At least the decoded RGBA picture, or nothing was measured.
    assert 4 * pixels <= int(measured["peak_bytes"]) <= max_bytes_per_pixel * pixels
