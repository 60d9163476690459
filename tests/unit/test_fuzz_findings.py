"""What the fuzzers found (`make fuzz`), kept as inputs under tests/data/fuzz/<target>/.

Inputs for the C target (`requantize`) start with its two option bytes (target quality minus
one, then flags; see fuzz/requantize_fuzzer.c); the others are the bytes as fetched. Each one
must now give what a user should see: an image whose file reads back without a single
warning, or an ImageFailure with the error code of its fault. `make test` also runs every one
of them through the sanitized fuzz targets (tests/test_fuzz_targets.py).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from jpeg_requantize import Unsuitable, requantize
from PIL import Image

from shared.bootstrap import build_codec
from shared.config import Limits
from shared.domain.errors import ErrorCode, ImageFailure
from shared.domain.quality import STANDARD_CHROMINANCE, STANDARD_LUMINANCE, ijg_table

FINDINGS = Path(__file__).resolve().parents[1] / "data" / "fuzz"
CODEC = build_codec(Limits())


def c_target_input(name: str) -> tuple[int, bytes]:
    data = (FINDINGS / "requantize" / name).read_bytes()
    return 1 + data[0] % 100, data[2:]


def tables(quality: int) -> tuple[list[int], list[int]]:
    return ijg_table(STANDARD_LUMINANCE, quality), ijg_table(STANDARD_CHROMINANCE, quality)


def reads_back_without_a_warning(jpeg: bytes) -> bool:
    # The native module refuses anything libjpeg so much as warns about: a strict reader.
    try:
        requantize(jpeg, *tables(50))
    except Unsuitable:
        return False
    return True


def test_a_coefficient_beyond_ten_bits_is_clamped_instead_of_written_corrupt() -> None:
    # A crafted Huffman table decodes AC coefficients of up to 15 bits; libjpeg-turbo's encoder
    # does not check AC magnitudes, and wrote them with codes the standard tables do not have:
    # "Corrupt JPEG data: bad Huffman code" in every viewer.
    quality, source = c_target_input("ac-coefficient-beyond-10-bits")

    output = requantize(source, *tables(quality))

    assert reads_back_without_a_warning(output)
    assert Image.open(io.BytesIO(output)).size == Image.open(io.BytesIO(source)).size


@pytest.mark.parametrize(
    "path",
    sorted(path for path in FINDINGS.glob("*/*") if path.is_file()),
    ids=lambda path: f"{path.parent.name}/{path.name}",
)
def test_every_found_input_gives_a_readable_image_or_a_clear_failure(path: Path) -> None:
    data = path.read_bytes()
    source = data[2:] if path.parent.name == "requantize" else data

    try:
        result = CODEC.compress(source)
    except ImageFailure as failure:
        assert failure.transient is False
        return
    if result.output_format == "jpeg":
        assert reads_back_without_a_warning(result.data)
    with Image.open(io.BytesIO(result.data)) as output:
        output.load()
        assert output.size == (result.width, result.height)


def test_a_frame_header_claiming_gigapixels_is_refused_before_anything_is_allocated() -> None:
    # 638 bytes whose frame header says 65,487 x 64,959: libjpeg spent 10 s and gigabytes
    # allocating coefficient arrays for it. The service's pixel cap refuses it on the header;
    # the native module now has a cap of its own, checked before libjpeg allocates.
    quality, source = c_target_input("frame-of-4-gigapixels")

    with pytest.raises(Unsuitable, match="more pixels than allowed"):
        requantize(source, *tables(quality), max_pixels=50_000_000)
    with pytest.raises(ImageFailure) as caught:
        CODEC.compress(source)
    assert caught.value.code is ErrorCode.TOO_MANY_PIXELS
