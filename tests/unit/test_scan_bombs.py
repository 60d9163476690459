"""Scan bombs: a JPEG with more scans than MAX_JPEG_SCANS fails at once, on both codec paths,
decided from its markers before anything is decoded.

Each scan of a progressive JPEG is a pass over the whole picture; the format sets no limit on
how many there are. The bomb here is a real progressive JPEG whose last scan is repeated
thousands of times: libjpeg (ours and Pillow's) would decode every one of them.
"""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import tempfile
import time

import pytest
from jpeg_requantize import TooManyScans, requantize
from PIL import Image, ImageFile

import shared.adapters.codec.jpeg_requantizer as requantizer_module
from shared.adapters.codec.jpeg_requantizer import JpegRequantizer
from shared.adapters.codec.jpeg_scans import count_scans
from shared.adapters.codec.pillow_codec import PillowCodec
from shared.bootstrap import build_codec
from shared.config import ConfigError, Limits, Settings
from shared.domain.errors import ErrorCode, ImageFailure
from shared.domain.quality import STANDARD_CHROMINANCE, STANDARD_LUMINANCE, ijg_table
from shared.ports import ImageCodec
from tests.unit.test_codec import encode, photo

# libjpeg's default progression, which Pillow writes: ten scans for colour, six for grey.
PILLOW_PROGRESSIVE_SCANS = 10


def progressive(image: Image.Image | None = None) -> bytes:
    return encode(image or photo(256, 192), "JPEG", quality=90, progressive=True)


def with_repeated_last_scan(jpeg: bytes, copies: int) -> bytes:
    """The file with its last scan (SOS header and entropy-coded data) repeated before EOI."""
    last_scan = jpeg.rindex(b"\xff\xda")
    assert jpeg.endswith(b"\xff\xd9")
    scan = jpeg[last_scan:-2]
    return jpeg[:-2] + scan * copies + b"\xff\xd9"


def scan_bomb(scans: int = 5_000, image: Image.Image | None = None) -> bytes:
    """A progressive JPEG with `scans` scans. Of a flat picture by default, whose last scan (a
    refinement of luma's AC coefficients) is a few bytes: a bomb of some kilobytes."""
    flat = Image.new("RGB", (1024, 768), (120, 130, 140))
    return with_repeated_last_scan(progressive(image or flat), scans - PILLOW_PROGRESSIVE_SCANS)


CODECS: dict[str, ImageCodec] = {
    "shipped (DCT path)": build_codec(Limits()),
    "pillow": PillowCodec(Limits()),
}


def refused_in(codec: ImageCodec, data: bytes) -> tuple[ImageFailure, float]:
    started = time.perf_counter()
    with pytest.raises(ImageFailure) as caught:
        codec.compress(data)
    return caught.value, time.perf_counter() - started


@pytest.mark.parametrize("codec", CODECS.values(), ids=CODECS.keys())
def test_a_jpeg_with_thousands_of_scans_fails_at_once_with_too_many_scans(
    codec: ImageCodec,
) -> None:
    bomb = scan_bomb(5_000)
    assert count_scans(bomb, 10_000) == 5_000

    failure, seconds = refused_in(codec, bomb)

    assert failure.code is ErrorCode.TOO_MANY_SCANS
    assert failure.transient is False
    assert "more than 100 scans" in failure.message
    # Counting the markers takes milliseconds; decoding 5,000 scans would take many seconds.
    assert seconds < 1.0


def test_a_scan_bomb_the_dct_path_would_take_fails_without_reaching_either_decoder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the file was decoded")

    monkeypatch.setattr(requantizer_module, "requantize", no_decoding)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    general = PillowCodec(Limits())

    failure, _ = refused_in(JpegRequantizer(Limits(), general), scan_bomb())

    assert failure.code is ErrorCode.TOO_MANY_SCANS


def test_a_scan_bomb_left_to_pillow_fails_before_pillow_decodes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    cmyk_bomb = scan_bomb(image=photo(64, 48).convert("CMYK"))  # the DCT path leaves CMYK

    failure, _ = refused_in(build_codec(Limits()), cmyk_bomb)

    assert failure.code is ErrorCode.TOO_MANY_SCANS


@pytest.mark.parametrize("codec", CODECS.values(), ids=CODECS.keys())
def test_real_progressive_jpegs_are_well_within_the_limit(codec: ImageCodec) -> None:
    colour, grey = progressive(), progressive(photo(64, 48).convert("L"))

    assert (count_scans(colour, 100), count_scans(grey, 100)) == (PILLOW_PROGRESSIVE_SCANS, 6)
    assert codec.compress(colour).output_quality == 45
    assert codec.compress(grey).output_quality == 45


@pytest.mark.parametrize("path", ["shipped", "pillow"])
def test_the_limit_is_a_setting_and_a_file_at_the_limit_passes(path: str) -> None:
    def codec(limit: int) -> ImageCodec:
        limits = Limits(max_jpeg_scans=limit)
        return build_codec(limits) if path == "shipped" else PillowCodec(limits)

    data = progressive()

    assert codec(PILLOW_PROGRESSIVE_SCANS).compress(data).width == 256
    failure, _ = refused_in(codec(PILLOW_PROGRESSIVE_SCANS - 1), data)
    assert failure.code is ErrorCode.TOO_MANY_SCANS


def test_max_jpeg_scans_comes_from_the_environment() -> None:
    assert Settings.from_env({"MAX_JPEG_SCANS": "40"}).limits.max_jpeg_scans == 40
    assert Settings.from_env({}).limits.max_jpeg_scans == 100
    with pytest.raises(ConfigError):
        Settings.from_env({"MAX_JPEG_SCANS": "0"})


# --------------------------------------------------------------------------- how they are counted


def with_exif_thumbnail(jpeg: bytes, thumbnail: bytes) -> bytes:
    body = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00" + thumbnail
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


def test_the_scans_of_an_exif_thumbnail_do_not_count() -> None:
    thumbnail = scan_bomb(500, Image.new("RGB", (16, 12), "red"))
    data = with_exif_thumbnail(encode(photo(), "JPEG", quality=90), thumbnail)

    assert count_scans(data, 100) == 1
    assert build_codec(Limits()).compress(data).width == 64


def test_restart_markers_and_stuffed_bytes_are_not_scans() -> None:
    data = encode(photo(256, 192), "JPEG", quality=100, restart_marker_blocks=1)
    assert data.count(b"\xff\x00") > 0 and data.count(b"\xff\xd0") > 0

    assert count_scans(data, 100) == 1


def test_what_follows_the_first_picture_of_an_mpo_is_not_counted() -> None:
    second = scan_bomb(500, Image.new("RGB", (16, 12), "red"))
    data = encode(photo(), "JPEG", quality=90) + second

    assert count_scans(data, 1_000) == 1


def test_bytes_that_are_not_a_jpeg_count_no_scans() -> None:
    assert count_scans(b"", 100) == 0
    assert count_scans(b"\xff\xd8\xff", 100) == 0
    assert count_scans(b"\xff\xd8" + b"\xff\xda\x00\x02" * 10, 100) == 10


def test_the_count_stops_just_above_the_limit() -> None:
    assert count_scans(scan_bomb(5_000), 100) == 101


def test_the_native_module_stops_at_its_own_limit_as_it_reads() -> None:
    # The second line of defence, inside libjpeg's reading loop: used by the DCT path with the
    # same limit, so a file whose markers the count read differently still stops.
    tables = ijg_table(STANDARD_LUMINANCE, 45), ijg_table(STANDARD_CHROMINANCE, 45)
    data = progressive()

    with pytest.raises(TooManyScans, match="more than 9 scans"):
        requantize(data, *tables, max_scans=PILLOW_PROGRESSIVE_SCANS - 1)
    output = requantize(data, *tables, max_scans=PILLOW_PROGRESSIVE_SCANS)
    assert Image.open(io.BytesIO(output)).size == (256, 192)


def hundred_scans(jpeg: bytes) -> bytes:
    """A valid progression of 100 scans (jpegtran's most): the DC coefficients, then luma's AC
    coefficients one per scan and chroma's in a few more. No decoder warns about it."""
    jpegtran = shutil.which("jpegtran")
    if jpegtran is None:
        pytest.fail("jpegtran is needed (Debian libjpeg-turbo-progs; make install installs it)")
    script = (
        "0,1,2: 0-0, 0, 0;\n"
        + "".join(f"0: {k}-{k}, 0, 0;\n" for k in range(1, 64))
        + "".join(f"1: {k}-{k}, 0, 0;\n" for k in range(1, 35))
        + "1: 35-63, 0, 0;\n2: 1-63, 0, 0;\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as scans:
        scans.write(script)
        scans.flush()
        return subprocess.run(
            [jpegtran, "-scans", scans.name], input=jpeg, capture_output=True, check=True
        ).stdout


@pytest.mark.parametrize("path", ["shipped", "pillow"])
def test_a_valid_progression_with_too_many_scans_is_refused_too(path: str) -> None:
    data = hundred_scans(encode(photo(128, 96), "JPEG", quality=90))
    tables = ijg_table(STANDARD_LUMINANCE, 45), ijg_table(STANDARD_CHROMINANCE, 45)
    assert count_scans(data, 1_000) == 100
    assert Image.open(io.BytesIO(requantize(data, *tables))).size == (128, 96)  # well formed
    limits = Limits(max_jpeg_scans=60)
    codec = build_codec(limits) if path == "shipped" else PillowCodec(limits)

    failure, _ = refused_in(codec, data)

    assert failure.code is ErrorCode.TOO_MANY_SCANS


def comment_flood(segments: int) -> bytes:
    """A real JPEG with `segments` empty comment segments between its SOI and the rest."""
    jpeg = encode(photo(), "JPEG", quality=90)
    return jpeg[:2] + b"\xff\xfe\x00\x02" * segments + jpeg[2:]


@pytest.mark.parametrize("codec", CODECS.values(), ids=CODECS.keys())
def test_a_flood_of_marker_segments_is_refused_before_any_marker_loop_walks_it(
    codec: ImageCodec, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_parsing(*args: object, **kwargs: object) -> None:
        raise AssertionError("the markers were parsed")

    monkeypatch.setattr(Image, "open", no_parsing)
    monkeypatch.setattr(requantizer_module, "read_jpeg_header", no_parsing)
    flood = comment_flood(1_000_000)  # 4 MB: a few seconds in each Python marker loop

    failure, seconds = refused_in(codec, flood)

    assert failure.code is ErrorCode.TOO_MANY_SCANS
    assert "more than 2,000 marker segments" in failure.message
    assert seconds < 1.0


def test_a_few_hundred_segments_are_fine() -> None:
    result = build_codec(Limits()).compress(comment_flood(1_000))

    assert result.width == 64
