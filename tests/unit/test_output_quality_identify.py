"""Half the quality, as someone else reads it: ImageMagick's `identify -format %Q` on our output.

Our own estimate (`estimate_jpeg_quality`) could share a mistake with the code it checks;
ImageMagick estimates a JPEG's quality its own way. Both codec paths are checked: the DCT
fast path the service ships for JPEGs, and Pillow, which takes the JPEGs the fast path leaves.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from jpeg_requantize import requantize

from shared.adapters.codec.pillow_codec import PillowCodec
from shared.bootstrap import build_codec
from shared.config import Limits
from shared.domain.quality import STANDARD_CHROMINANCE, STANDARD_LUMINANCE, ijg_table
from shared.ports import ImageCodec
from tests.unit.test_codec import encode, photo

CODECS: dict[str, ImageCodec] = {
    "shipped": build_codec(Limits()),
    "pillow": PillowCodec(Limits()),
}


def imagemagick_identify() -> str:
    path = shutil.which("identify")
    version = (
        subprocess.run([path, "-version"], capture_output=True, text=True, check=False).stdout
        if path
        else ""
    )
    if "ImageMagick" not in version:
        pytest.fail(
            "ImageMagick's identify is needed (Debian package imagemagick; `make install` "
            "installs it when run as root)",
            pytrace=False,
        )
    assert path is not None
    return path


@pytest.mark.parametrize("path_name", CODECS.keys())
@pytest.mark.parametrize("source_quality", [30, 50, 75, 85, 92, 100])
def test_imagemagick_reads_half_the_source_quality(
    source_quality: int, path_name: str, tmp_path: Path
) -> None:
    identify = imagemagick_identify()
    result = CODECS[path_name].compress(encode(photo(96, 64), "JPEG", quality=source_quality))
    output = tmp_path / "output.jpg"
    output.write_bytes(result.data)

    measured = subprocess.run(
        [identify, "-format", "%Q", str(output)], capture_output=True, text=True, check=True
    ).stdout

    assert abs(int(measured) - round(source_quality / 2)) <= 1
    assert result.output_quality == (source_quality + 1) // 2


@pytest.mark.parametrize("source_quality", [50, 75, 92])
def test_optimal_huffman_tables_leave_what_imagemagick_reads_unchanged(
    source_quality: int, tmp_path: Path
) -> None:
    identify = imagemagick_identify()
    source = encode(photo(96, 64), "JPEG", quality=source_quality)
    half = (source_quality + 1) // 2
    tables = ijg_table(STANDARD_LUMINANCE, half), ijg_table(STANDARD_CHROMINANCE, half)
    files = {
        "standard": requantize(source, *tables),
        "optimal": requantize(source, *tables, optimize_huffman=True),
        "shipped": build_codec(Limits(optimal_huffman_tables=True)).compress(source).data,
    }
    for name, data in files.items():
        (tmp_path / f"{name}.jpg").write_bytes(data)

    read = {
        name: subprocess.run(
            [identify, "-format", "%Q", str(tmp_path / f"{name}.jpg")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for name in files
    }

    assert read["optimal"] == read["standard"] == read["shipped"]
    assert len(files["optimal"]) < len(files["standard"])
