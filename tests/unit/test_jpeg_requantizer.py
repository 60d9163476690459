"""The DCT-domain fast path for JPEGs: what it takes, what it leaves to Pillow, what it writes."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from jpeg_requantize import requantize
from PIL import ExifTags, Image, JpegImagePlugin

import shared.adapters.codec.jpeg_requantizer as requantizer_module
from shared.adapters.codec.jpeg_header import read_jpeg_header
from shared.adapters.codec.jpeg_requantizer import JpegRequantizer
from shared.adapters.codec.pillow_codec import PillowCodec
from shared.bootstrap import build_codec
from shared.config import ConfigError, Limits, Settings
from shared.domain.errors import ErrorCode, ImageFailure
from shared.domain.model import CompressedImage
from shared.domain.quality import STANDARD_CHROMINANCE, STANDARD_LUMINANCE, ijg_table
from tests.unit.test_codec import cmyk_icc_profile, encode, photo, reopen, srgb_icc_profile


class RecordingCodec:
    """The general codec, noting every image handed to it."""

    def __init__(self) -> None:
        self.inner = PillowCodec(Limits())
        self.received: list[bytes] = []

    def compress(self, data: bytes) -> CompressedImage:
        self.received.append(data)
        return self.inner.compress(data)


@pytest.fixture
def general() -> RecordingCodec:
    return RecordingCodec()


@pytest.fixture
def fast(general: RecordingCodec) -> JpegRequantizer:
    return JpegRequantizer(Limits(), general)


def test_the_shipped_codec_requantizes_jpegs() -> None:
    # The native module is built by `make install`; without it the service silently runs
    # the slow path, which is exactly what this test is here to notice.
    assert isinstance(build_codec(Limits()), JpegRequantizer)


# --------------------------------------------------------------------------- what it takes


def with_exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = value
    return encode(photo(), "JPEG", quality=90, exif=exif)


TAKEN: dict[str, Callable[[], bytes]] = {
    "baseline 4:2:0": lambda: encode(photo(), "JPEG", quality=90),
    "progressive": lambda: encode(photo(), "JPEG", quality=90, progressive=True),
    "4:2:2": lambda: encode(photo(), "JPEG", quality=90, subsampling="4:2:2"),
    "grey": lambda: encode(photo().convert("L"), "JPEG", quality=90),
    "odd size": lambda: encode(photo(37, 23), "JPEG", quality=90),
    "orientation 1": lambda: with_exif_orientation(1),
    "srgb profile": lambda: encode(photo(), "JPEG", quality=90, icc_profile=srgb_icc_profile()),
}


@pytest.mark.parametrize("make", TAKEN.values(), ids=TAKEN.keys())
def test_plain_jpegs_never_reach_the_general_codec(
    make: Callable[[], bytes], fast: JpegRequantizer, general: RecordingCodec
) -> None:
    source = make()

    result = fast.compress(source)

    assert general.received == []
    assert (result.source_format, result.source_quality, result.output_quality) == (
        "jpeg",
        90,
        45,
    )
    output = reopen(result)
    original = Image.open(io.BytesIO(source))
    assert (output.size, output.mode) == (original.size, original.mode)
    assert JpegImagePlugin.get_sampling(output) == JpegImagePlugin.get_sampling(original)
    assert "progressive" not in output.info


@pytest.mark.parametrize("source_quality", [5, 30, 50, 75, 85, 92, 100])
def test_output_carries_exactly_the_ijg_tables_of_half_the_quality(
    source_quality: int, fast: JpegRequantizer
) -> None:
    result = fast.compress(encode(photo(), "JPEG", quality=source_quality))

    target = (source_quality + 1) // 2
    assert result.output_quality == target
    tables = reopen(result).quantization
    assert tables[0] == ijg_table(STANDARD_LUMINANCE, target)
    assert tables[1] == ijg_table(STANDARD_CHROMINANCE, target)


def test_requantized_picture_is_as_close_to_the_source_as_pillows(
    fast: JpegRequantizer,
) -> None:
    # A wrongly scaled coefficient (a table read in zigzag order, the chroma table used for
    # luma) would show here as a picture much further from its source than Pillow's output.
    source = encode(photo(160, 120, seed=4), "JPEG", quality=85)
    original = np.asarray(Image.open(io.BytesIO(source)).convert("RGB"), dtype=float)

    def error(result: CompressedImage) -> float:
        return float(np.abs(np.asarray(reopen(result), dtype=float) - original).mean())

    assert error(fast.compress(source)) <= error(PillowCodec(Limits()).compress(source)) + 0.5


def test_progressive_and_baseline_copies_of_a_picture_give_the_same_bytes(
    fast: JpegRequantizer,
) -> None:
    # The same coefficients, whether they arrived in one scan (rescaled while reading) or in
    # many (rescaled at the end).
    picture = photo(200, 150, seed=2)
    baseline = encode(picture, "JPEG", quality=90)
    progressive = encode(picture, "JPEG", quality=90, progressive=True)

    assert fast.compress(progressive).data == fast.compress(baseline).data


def test_a_profile_in_several_chunks_is_kept_whole(fast: JpegRequantizer) -> None:
    # Beyond 64 KB a profile is split over several APP2 markers.
    profile = srgb_icc_profile() + bytes(100_000)

    output = reopen(fast.compress(encode(photo(), "JPEG", quality=90, icc_profile=profile)))

    assert output.info["icc_profile"] == profile


def test_header_reads_what_pillow_reads() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 3
    profile = srgb_icc_profile() + bytes(70_000)
    for data in (
        encode(photo(), "JPEG", quality=37, exif=exif, icc_profile=profile),
        encode(photo().convert("L"), "JPEG", quality=91, progressive=True),
        encode(photo(), "JPEG", qtables="web_high", subsampling="4:4:4"),
    ):
        pillow = Image.open(io.BytesIO(data))
        header = read_jpeg_header(data)

        assert header.quantization == {k: list(v) for k, v in pillow.quantization.items()}
        assert header.icc_profile == pillow.info.get("icc_profile")
        assert header.exif_orientation == pillow.getexif().get(ExifTags.Base.Orientation)
        assert (header.width, header.height) == pillow.size


# --------------------------------------------------------------------------- what it leaves


def patched(data: bytes, old: bytes, new: bytes) -> bytes:
    assert old in data
    return data.replace(old, new, 1)


def sof_of(data: bytes) -> bytes:
    start = data.index(b"\xff\xc0")
    return data[start : start + 5]


def arithmetic(data: bytes) -> bytes:
    # SOF0 relabelled SOF9: the same frame, announced as arithmetic-coded.
    return patched(data, b"\xff\xc0", b"\xff\xc9")


def twelve_bit(data: bytes) -> bytes:
    sof = sof_of(data)
    return patched(data, sof, sof[:4] + b"\x0c")


def xmp_orientation() -> bytes:
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><tiff:Orientation>6</tiff:Orientation></x:xmpmeta>'
    return encode(photo(), "JPEG", quality=90, xmp=xmp)


def mpo() -> bytes:
    first, second = photo(), photo(seed=1)
    return encode(first, "MPO", save_all=True, append_images=[second], quality=90)


def cmyk() -> bytes:
    return encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=90)


def cmyk_with_profile() -> bytes:
    source = Image.new("CMYK", (32, 32), (0, 255, 255, 0))
    return encode(source, "JPEG", quality=90, icc_profile=cmyk_icc_profile())


def grey_with_rgb_profile() -> bytes:
    return encode(photo().convert("L"), "JPEG", quality=90, icc_profile=srgb_icc_profile())


def rgb_components() -> bytes:
    return encode(photo(), "JPEG", quality=90, keep_rgb=True)


def truncated() -> bytes:
    data = encode(photo(), "JPEG", quality=90)
    return data[: len(data) * 2 // 3]


def damaged_scan() -> bytes:
    data = bytearray(encode(photo(160, 120), "JPEG", quality=90))
    scan = data.index(b"\xff\xda") + 200
    data[scan : scan + 40] = b"\xff\xd3" * 20  # restart markers where none belong
    return bytes(data)


LEFT: dict[str, Callable[[], bytes]] = {
    "4:4:4": lambda: encode(photo(), "JPEG", quality=90, subsampling="4:4:4"),
    "exif orientation 6": lambda: with_exif_orientation(6),
    "xmp orientation": xmp_orientation,
    "mpo": mpo,
    "cmyk": cmyk,
    "cmyk with profile": cmyk_with_profile,
    "rgb components": rgb_components,
    "grey with an rgb profile": grey_with_rgb_profile,
    "arithmetic coding": lambda: arithmetic(encode(photo(), "JPEG", quality=90)),
    "12-bit": lambda: twelve_bit(encode(photo(), "JPEG", quality=90)),
    "truncated": truncated,
    "damaged scan": damaged_scan,
}


@pytest.mark.parametrize("make", LEFT.values(), ids=LEFT.keys())
def test_what_the_fast_path_cannot_render_goes_to_the_general_codec(
    make: Callable[[], bytes], fast: JpegRequantizer, general: RecordingCodec
) -> None:
    source = make()

    try:
        fast.compress(source)
    except ImageFailure as failure:  # the general codec's verdict on a broken file
        assert failure.code is ErrorCode.CORRUPT_IMAGE

    assert general.received == [source]


def test_non_jpeg_sources_go_to_the_general_codec(
    fast: JpegRequantizer, general: RecordingCodec
) -> None:
    source = encode(photo(), "PNG")

    assert fast.compress(source).output_quality == 50
    assert general.received == [source]


def test_too_many_pixels_are_refused_before_the_coefficients_are_read(
    fast: JpegRequantizer, general: RecordingCodec, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_reading(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("coefficients were read")

    monkeypatch.setattr(requantizer_module, "requantize", no_reading)
    data = encode(photo(16, 16), "JPEG", quality=90)
    sof = sof_of(data)
    # The frame header claims 8,000 x 8,000: 64 megapixels.
    huge = patched(data, data[data.index(sof) : data.index(sof) + 9], sof + b"\x1f\x40\x1f\x40")

    with pytest.raises(ImageFailure) as caught:
        fast.compress(huge)

    assert caught.value.code is ErrorCode.TOO_MANY_PIXELS
    assert general.received == []


def test_an_output_larger_than_its_first_buffer_comes_out_whole() -> None:
    # The C module starts with a quarter of the source's size and grows from there; finer
    # tables than the source's force it to grow several times.
    source = encode(photo(300, 200), "JPEG", quality=100)

    output = requantize(
        source, ijg_table(STANDARD_LUMINANCE, 99), ijg_table(STANDARD_CHROMINANCE, 99)
    )

    assert len(output) > len(source) // 4 + 16_384
    picture = Image.open(io.BytesIO(output))
    picture.load()
    assert picture.size == (300, 200)


def test_optimal_huffman_tables_only_make_the_file_smaller() -> None:
    source = encode(photo(200, 150), "JPEG", quality=90)
    tables = ijg_table(STANDARD_LUMINANCE, 45), ijg_table(STANDARD_CHROMINANCE, 45)

    standard = requantize(source, *tables)
    optimised = requantize(source, *tables, optimize_huffman=True)

    assert len(optimised) < len(standard)
    assert np.array_equal(
        np.asarray(Image.open(io.BytesIO(optimised))), np.asarray(Image.open(io.BytesIO(standard)))
    )


# --------------------------------------------------------------------------- Huffman tables


# OPTIMAL_HUFFMAN_TABLES=1: off by default (BENCHMARKS.md has the throughput it costs).
OPTIMAL = Limits(optimal_huffman_tables=True)


def pixels(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)))


def is_optimal(jpeg: bytes) -> bool:
    """Whether re-deriving optimal Huffman tables for the file's own coefficients (the same
    quantization tables in and out) leaves nothing to gain."""
    picture = Image.open(io.BytesIO(jpeg))
    tables, icc = picture.quantization, picture.info.get("icc_profile")
    again = requantize(jpeg, tables[0], tables.get(1, tables[0]), icc, optimize_huffman=True)
    return len(again) == len(jpeg)


def test_the_dct_path_writes_optimal_huffman_tables_and_the_same_pixels() -> None:
    source = encode(photo(200, 150), "JPEG", quality=90)
    standard = requantize(
        source, ijg_table(STANDARD_LUMINANCE, 45), ijg_table(STANDARD_CHROMINANCE, 45)
    )

    result = build_codec(OPTIMAL).compress(source)

    assert is_optimal(result.data) and not is_optimal(standard)
    assert len(result.data) < len(standard)
    assert reopen(result).quantization == Image.open(io.BytesIO(standard)).quantization
    assert np.array_equal(pixels(result.data), pixels(standard))


SOURCES_FOR_PILLOW: dict[str, Callable[[], bytes]] = {
    "png": lambda: encode(photo(200, 150), "PNG"),
    "cmyk jpeg": lambda: encode(photo(200, 150).convert("CMYK"), "JPEG", quality=90),
    "rotated jpeg": lambda: with_exif_orientation(6),
    "grey png": lambda: encode(photo(200, 150).convert("L"), "PNG"),
}


@pytest.mark.parametrize("make", SOURCES_FOR_PILLOW.values(), ids=SOURCES_FOR_PILLOW.keys())
def test_jpegs_the_general_codec_writes_get_optimal_tables_and_keep_their_pixels(
    make: Callable[[], bytes],
) -> None:
    source = make()
    plain = PillowCodec(Limits()).compress(source)  # standard tables

    result = build_codec(OPTIMAL).compress(source)

    assert (result.output_format, plain.output_format) == ("jpeg", "jpeg")
    assert is_optimal(result.data) and not is_optimal(plain.data)
    assert len(result.data) < len(plain.data)
    assert reopen(result).quantization == reopen(plain).quantization
    assert np.array_equal(pixels(result.data), pixels(plain.data))
    assert (result.width, result.height, result.output_quality) == (
        plain.width,
        plain.height,
        plain.output_quality,
    )


def test_a_444_output_keeps_standard_tables_so_its_memory_stays_bounded() -> None:
    # Its coefficients would take 6 bytes a pixel, above the 1.5 x decoded RGB bound.
    source = encode(photo(200, 150), "JPEG", quality=90, subsampling="4:4:4")

    result = build_codec(OPTIMAL).compress(source)

    assert result.data == PillowCodec(Limits()).compress(source).data


def test_the_icc_profile_survives_the_second_pass() -> None:
    source = encode(photo(200, 150), "PNG", icc_profile=srgb_icc_profile())

    result = build_codec(OPTIMAL).compress(source)

    assert reopen(result).info.get("icc_profile") == srgb_icc_profile()
    assert is_optimal(result.data)


def test_by_default_both_paths_write_standard_tables() -> None:
    photo_source = encode(photo(200, 150), "JPEG", quality=90)
    png_source = encode(photo(200, 150), "PNG")
    tables = ijg_table(STANDARD_LUMINANCE, 45), ijg_table(STANDARD_CHROMINANCE, 45)

    shipped = build_codec(Limits())

    assert shipped.compress(photo_source).data == requantize(photo_source, *tables)
    assert shipped.compress(png_source).data == PillowCodec(Limits()).compress(png_source).data


def test_optimal_huffman_tables_come_from_the_environment() -> None:
    assert Settings.from_env({"OPTIMAL_HUFFMAN_TABLES": "1"}).limits.optimal_huffman_tables
    assert not Settings.from_env({}).limits.optimal_huffman_tables
    with pytest.raises(ConfigError):
        Settings.from_env({"OPTIMAL_HUFFMAN_TABLES": "sometimes"})
