"""The codec: what comes out for each kind of image that comes in (SPEC "Images").

Every test runs against the codec the service ships (`build_codec`): JPEGs re-quantized in
the DCT domain where they can be, Pillow for everything else.
"""

from __future__ import annotations

import io
import itertools
import struct
import subprocess
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from PIL import EpsImagePlugin, ExifTags, Image, ImageCms, ImageFile, JpegImagePlugin, features

from shared.adapters.codec.pillow_codec import PillowCodec
from shared.bootstrap import build_codec
from shared.config import Limits, Settings
from shared.domain.errors import ErrorCode, ImageFailure
from shared.domain.model import CompressedImage
from shared.domain.quality import estimate_jpeg_quality
from shared.ports import ImageCodec

codec = build_codec(Limits())


# --------------------------------------------------------------------------- fixtures


def photo(width: int = 64, height: int = 48, *, seed: int = 0) -> Image.Image:
    """Photo-like RGB: smooth gradients plus sensor-like noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [x * 255 / width, y * 255 / height, (x + y) * 128 / (width + height) + 60], axis=-1
    )
    noisy = base + rng.normal(0, 12, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def reopen(result: CompressedImage) -> Image.Image:
    image = Image.open(io.BytesIO(result.data))
    image.load()
    return image


def failure_of(data: bytes, compressor: ImageCodec = codec) -> ImageFailure:
    with pytest.raises(ImageFailure) as caught:
        compressor.compress(data)
    assert caught.value.transient is False  # a broken file stays broken
    return caught.value


def with_transparent_corner(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    alpha = Image.new("L", rgba.size, 255)
    alpha.paste(0, (0, 0, 8, 8))
    rgba.putalpha(alpha)
    return rgba


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR for a huge RGB image, with a token of pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def cmyk_icc_profile() -> bytes:
    """A minimal ICC v2 CMYK printer profile (CMYK -> Lab, 2-point grid) for littleCMS."""

    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    def lab_of_rgb(r: float, g: float, b: float) -> tuple[float, float, float]:
        def linear(u: float) -> float:
            return u / 12.92 if u <= 0.04045 else ((u + 0.055) / 1.055) ** 2.4

        red, green, blue = linear(r), linear(g), linear(b)
        x = 0.4360747 * red + 0.3850649 * green + 0.1430804 * blue  # sRGB -> XYZ (D50)
        y = 0.2225045 * red + 0.7168786 * green + 0.0606169 * blue
        z = 0.0139322 * red + 0.0971045 * green + 0.7141733 * blue

        def f(t: float) -> float:
            return t ** (1 / 3) if t > 216 / 24389 else (24389 / 27 * t + 16) / 116

        fx, fy, fz = f(x / 0.9642), f(y), f(z / 0.8249)
        return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)

    grid = b""
    for c, m, y, k in itertools.product((0, 1), repeat=4):
        lightness, a, b = lab_of_rgb((1 - c) * (1 - k), (1 - m) * (1 - k), (1 - y) * (1 - k))
        grid += bytes(max(0, min(255, round(v))) for v in (lightness * 255 / 100, a + 128, b + 128))
    ramp = bytes(range(256))
    identity = b"".join(s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    a2b0 = b"mft1" + bytes(4) + bytes([4, 3, 2, 0]) + identity + ramp * 4 + grid + ramp * 3
    text = b"test CMYK\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(8 + 3 + 67)
    white = b"XYZ " + bytes(4) + s15(0.9642) + s15(1.0) + s15(0.8249)
    tags = [
        (b"desc", desc),
        (b"wtpt", white),
        (b"cprt", b"text" + bytes(4) + b"none\0"),
        (b"A2B0", a2b0),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for signature, data in tags:
        padded = data + bytes(-len(data) % 4)  # tags start on 4-byte boundaries
        table += signature + struct.pack(">II", offset + len(body), len(padded))
        body += padded
    header = (
        struct.pack(">I", offset + len(body))
        + bytes(4)
        + struct.pack(">I", 0x02100000)
        + b"prtrCMYKLab "
        + bytes(12)
        + b"acsp"
        + bytes(24)
        + bytes(4)
        + s15(0.9642)
        + s15(1.0)
        + s15(0.8249)
        + bytes(48)
    )
    return header + table + body


def srgb_icc_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def mean_colour(image: Image.Image, box: tuple[int, int, int, int]) -> tuple[float, ...]:
    pixels = np.asarray(image.convert("RGB").crop(box), dtype=float)
    return tuple(pixels.reshape(-1, 3).mean(axis=0))


def close_to(actual: tuple[float, ...], expected: tuple[float, ...], tolerance: float) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


# --------------------------------------------------------------------------- JPEG sources


@pytest.mark.parametrize(("source_quality", "expected"), [(90, 45), (75, 38)])
def test_jpeg_is_reencoded_at_half_its_quality(source_quality: int, expected: int) -> None:
    result = codec.compress(encode(photo(), "JPEG", quality=source_quality))

    assert (result.source_format, result.source_quality) == ("jpeg", source_quality)
    assert result.output_quality == expected
    assert (result.output_format, result.content_type, result.extension) == (
        "jpeg",
        "image/jpeg",
        "jpg",
    )
    output = reopen(result)
    assert output.format == "JPEG"
    assert estimate_jpeg_quality(output.quantization) == expected


def test_greyscale_jpeg_stays_greyscale() -> None:
    result = codec.compress(encode(photo().convert("L"), "JPEG", quality=80))

    output = reopen(result)
    assert output.mode == "L"
    assert result.output_quality == 40
    assert estimate_jpeg_quality(output.quantization) == 40


def test_cmyk_jpeg_becomes_rgb_with_its_colours() -> None:
    source = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # red
    source.paste((255, 0, 255, 0), (16, 0, 32, 32))  # green

    output = reopen(codec.compress(encode(source, "JPEG", quality=90)))

    assert output.mode == "RGB"
    assert close_to(mean_colour(output, (2, 2, 14, 30)), (255, 0, 0), 30)
    assert close_to(mean_colour(output, (18, 2, 30, 30)), (0, 255, 0), 30)


def test_cmyk_jpeg_with_a_press_profile_is_converted_to_srgb() -> None:
    source = Image.new("CMYK", (32, 32), (0, 255, 255, 0))

    result = codec.compress(encode(source, "JPEG", quality=90, icc_profile=cmyk_icc_profile()))

    output = reopen(result)
    assert output.mode == "RGB"
    profile = ImageCms.ImageCmsProfile(io.BytesIO(output.info["icc_profile"]))
    assert profile.profile.xcolor_space == "RGB "
    assert "sRGB" in profile.profile.profile_description
    assert close_to(mean_colour(output, (2, 2, 30, 30)), (255, 0, 0), 30)


def test_mpo_is_treated_as_jpeg_keeping_its_first_picture() -> None:
    first, second = Image.new("RGB", (32, 16), "red"), Image.new("RGB", (32, 16), "blue")
    data = encode(first, "MPO", save_all=True, append_images=[second], quality=80)

    result = codec.compress(data)

    assert (result.source_format, result.source_quality, result.output_quality) == (
        "jpeg",
        80,
        40,
    )
    assert result.animated is True
    assert close_to(mean_colour(reopen(result), (0, 0, 32, 16)), (255, 0, 0), 30)


def test_444_jpeg_keeps_full_resolution_colour() -> None:
    result = codec.compress(encode(photo(), "JPEG", quality=90, subsampling="4:4:4"))

    assert JpegImagePlugin.get_sampling(reopen(result)) == 0


def test_420_jpeg_stays_420() -> None:
    result = codec.compress(encode(photo(), "JPEG", quality=90, subsampling="4:2:0"))

    assert JpegImagePlugin.get_sampling(reopen(result)) == 2


def test_progressive_jpeg_is_reencoded_at_half_its_quality() -> None:
    result = codec.compress(encode(photo(), "JPEG", quality=80, progressive=True))

    assert (result.source_format, result.source_quality, result.output_quality) == (
        "jpeg",
        80,
        40,
    )
    assert estimate_jpeg_quality(reopen(result).quantization) == 40


def test_output_jpeg_is_baseline() -> None:
    output = reopen(codec.compress(encode(photo(), "JPEG", quality=90, progressive=True)))

    assert "progressive" not in output.info
    assert "progression" not in output.info


# --------------------------------------------------------------------------- lossless sources


def test_png_rgb_becomes_jpeg_at_50() -> None:
    result = codec.compress(encode(photo(), "PNG"))

    assert (result.source_format, result.source_quality, result.output_quality) == ("png", 100, 50)
    output = reopen(result)
    assert output.format == "JPEG"
    assert estimate_jpeg_quality(output.quantization) == 50


@pytest.mark.parametrize("image_format", ["BMP", "TIFF", "GIF"])
def test_other_lossless_formats_become_jpeg_at_50(image_format: str) -> None:
    result = codec.compress(encode(photo(), image_format))

    assert (result.source_format, result.output_format) == (image_format.lower(), "jpeg")
    assert (result.source_quality, result.output_quality) == (100, 50)
    assert reopen(result).format == "JPEG"


def test_grey_png_becomes_greyscale_jpeg_at_50() -> None:
    result = codec.compress(encode(photo().convert("L"), "PNG"))

    output = reopen(result)
    assert (result.source_format, result.output_quality, output.mode) == ("png", 50, "L")
    assert estimate_jpeg_quality(output.quantization) == 50


def png_16_bit_rgb(pixels: np.ndarray) -> bytes:
    """A 16-bit RGB PNG, written by hand: Pillow cannot save one."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_sixteen_bit_rgb_png_keeps_its_colours() -> None:
    pixels = np.zeros((16, 16, 3), dtype=np.uint16)
    pixels[:, :8] = (0xC000, 0x4000, 0x0000)  # left half: orange
    pixels[:, 8:] = (0x0000, 0x8000, 0xFFFF)  # right half: azure

    result = codec.compress(png_16_bit_rgb(pixels))

    output = reopen(result)
    assert (result.source_format, result.output_format, output.mode) == ("png", "jpeg", "RGB")
    assert close_to(mean_colour(output, (1, 1, 6, 15)), (192, 64, 0), 12)
    assert close_to(mean_colour(output, (10, 1, 15, 15)), (0, 128, 255), 12)


def test_sixteen_bit_grey_png_is_scaled_not_clipped() -> None:
    mid_grey = np.full((16, 16), 0x8000, dtype=np.uint16)
    source = Image.fromarray(mid_grey)
    assert source.mode == "I;16"  # the premise: Pillow would clip this to white in convert("L")

    output = reopen(codec.compress(encode(source, "PNG")))

    assert output.mode == "L"
    assert 120 <= np.asarray(output).mean() <= 136


def test_one_bit_image_becomes_greyscale_jpeg() -> None:
    source = Image.new("1", (16, 16), 0)
    source.paste(1, (0, 0, 8, 16))

    result = codec.compress(encode(source, "PNG"))

    output = reopen(result)
    assert (result.output_format, output.mode) == ("jpeg", "L")
    assert np.asarray(output)[:, :4].mean() > 240
    assert np.asarray(output)[:, 12:].mean() < 15


# --------------------------------------------------------------------------- transparency


def test_png_with_real_transparency_becomes_webp_with_alpha() -> None:
    result = codec.compress(encode(with_transparent_corner(photo()), "PNG"))

    assert (result.output_format, result.content_type, result.extension) == (
        "webp",
        "image/webp",
        "webp",
    )
    assert result.output_quality == 50
    output = reopen(result)
    assert output.format == "WEBP"
    assert output.mode == "RGBA"
    assert output.getchannel("A").getextrema()[0] < 255
    assert output.getpixel((2, 2))[3] < 16  # the transparent corner is still see-through


def test_fully_opaque_rgba_png_becomes_jpeg() -> None:
    result = codec.compress(encode(photo().convert("RGBA"), "PNG"))

    assert result.output_format == "jpeg"
    assert reopen(result).mode == "RGB"


def test_palette_png_whose_transparency_is_used_becomes_webp() -> None:
    source = photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    transparent_index = source.getpixel((0, 0))
    source.info["transparency"] = transparent_index

    result = codec.compress(encode(source, "PNG", transparency=transparent_index))

    assert result.output_format == "webp"
    assert reopen(result).getchannel("A").getextrema()[0] < 255


def test_palette_png_with_unused_transparency_becomes_jpeg() -> None:
    source = photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    unused = next(i for i in range(256) if i not in {c for _, c in source.getcolors()})

    result = codec.compress(encode(source, "PNG", transparency=unused))

    assert result.output_format == "jpeg"
    assert reopen(result).mode == "RGB"


def test_grey_with_transparency_becomes_rgba_webp() -> None:
    grey_alpha = with_transparent_corner(photo().convert("L")).convert("LA")

    result = codec.compress(encode(grey_alpha, "PNG"))

    assert result.output_format == "webp"
    assert reopen(result).getchannel("A").getextrema()[0] < 255


def test_transparent_image_too_wide_for_webp_is_flattened_to_jpeg() -> None:
    wide = Image.new("RGBA", (16_400, 2), (0, 0, 255, 255))
    wide.paste((0, 0, 0, 0), (0, 0, 10, 2))

    result = codec.compress(encode(wide, "PNG"))

    assert result.output_format == "jpeg"
    assert (result.width, result.height) == (16_400, 2)
    assert mean_colour(reopen(result), (0, 0, 8, 2))[0] > 200  # flattened onto white


@pytest.mark.parametrize(("cap", "output_format"), [(64 * 48, "webp"), (64 * 48 - 1, "jpeg")])
def test_transparent_pictures_above_max_transparent_pixels_are_flattened_to_jpeg(
    cap: int, output_format: str
) -> None:
    # libwebp needs about 18 bytes a pixel for a transparent picture; above the cap the
    # picture is delivered flattened onto white rather than failed (test_codec_memory.py).
    capped = PillowCodec(Limits(max_transparent_pixels=cap))

    result = capped.compress(encode(with_transparent_corner(photo()), "PNG"))

    assert (result.output_format, result.width, result.height) == (output_format, 64, 48)
    output = reopen(result)
    if output_format == "jpeg":
        assert close_to(mean_colour(output, (0, 0, 8, 8)), (255, 255, 255), 12)  # on white
    else:
        assert output.getchannel("A").getpixel((2, 2)) == 0  # still transparent


def test_max_transparent_pixels_comes_from_the_environment() -> None:
    assert Settings.from_env({"MAX_TRANSPARENT_PIXELS": "4000000"}).limits == Limits(
        max_transparent_pixels=4_000_000
    )


# --------------------------------------------------------------------------- WebP and AVIF


def test_lossless_webp_counts_as_quality_100() -> None:
    result = codec.compress(encode(photo(), "WEBP", lossless=True))

    assert (result.source_format, result.source_quality, result.output_quality) == (
        "webp",
        100,
        50,
    )


@pytest.mark.parametrize("source_quality", [10, 30, 50, 75, 90])
def test_lossy_webp_quality_is_estimated_never_below_the_truth(source_quality: int) -> None:
    data = encode(photo(160, 120), "WEBP", quality=source_quality)

    result = codec.compress(data)

    assert source_quality <= result.source_quality <= source_quality + 6
    assert result.output_quality == (result.source_quality + 1) // 2


def test_lossy_webp_with_alpha_is_estimated_and_keeps_alpha() -> None:
    result = codec.compress(encode(with_transparent_corner(photo(160, 120)), "WEBP", quality=60))

    assert 60 <= result.source_quality <= 66
    assert result.output_format == "webp"


def test_avif_counts_as_quality_100_and_becomes_jpeg() -> None:
    assert features.check("avif"), "this Pillow cannot read AVIF (Pillow 13 wheels can)"

    result = codec.compress(encode(photo(), "AVIF", quality=60))

    assert (result.source_format, result.source_quality, result.output_quality) == (
        "avif",
        100,
        50,
    )
    assert reopen(result).format == "JPEG"


def heic(image: Image.Image, **options: object) -> bytes:
    from pillow_heif import from_pillow

    buffer = io.BytesIO()
    from_pillow(image).save(buffer, quality=60, **options)
    return buffer.getvalue()


def test_heic_counts_as_quality_100_and_becomes_jpeg() -> None:
    result = codec.compress(heic(photo(64, 48)))

    assert (result.source_format, result.source_quality, result.output_quality) == (
        "heif",
        100,
        50,
    )
    assert (result.width, result.height) == (64, 48)
    output = reopen(result)
    assert output.format == "JPEG"
    assert close_to(
        mean_colour(output, (0, 0, 64, 48)), mean_colour(photo(64, 48), (0, 0, 64, 48)), 8
    )


def test_heic_with_transparency_becomes_webp_with_alpha() -> None:
    result = codec.compress(heic(with_transparent_corner(photo(64, 48))))

    assert (result.source_format, result.output_format) == ("heif", "webp")
    assert reopen(result).getpixel((2, 2))[3] < 16


def test_heic_orientation_is_applied_once() -> None:
    # libheif turns the picture as the file says and resets the EXIF orientation to 1; a
    # second turn by our own EXIF handling would show it sideways.
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 8, 8))  # marks the stored top-left corner
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6

    result = codec.compress(heic(stored, exif=exif.tobytes()))

    assert (result.width, result.height) == (20, 40)
    output = reopen(result)
    assert close_to(mean_colour(output, (14, 1, 19, 6)), (255, 0, 0), 40)
    assert close_to(mean_colour(output, (1, 1, 6, 6)), (0, 0, 255), 40)


def test_a_heic_without_a_picture_is_corrupt() -> None:
    data = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(32)

    assert failure_of(data).code is ErrorCode.CORRUPT_IMAGE


# --------------------------------------------------------------------------- animation


def _frames() -> list[Image.Image]:
    return [Image.new("RGB", (24, 24), colour) for colour in ("red", "lime", "blue")]


@pytest.mark.parametrize(
    ("image_format", "options"),
    [("GIF", {}), ("PNG", {}), ("WEBP", {"lossless": True})],
    ids=["gif", "apng", "webp"],
)
def test_animated_source_keeps_its_first_frame(
    image_format: str, options: dict[str, object]
) -> None:
    first, *rest = _frames()
    data = encode(first, image_format, save_all=True, append_images=rest, duration=100, **options)

    result = codec.compress(data)

    assert result.animated is True
    assert close_to(mean_colour(reopen(result), (4, 4, 20, 20)), (255, 0, 0), 30)


def test_still_image_is_not_animated() -> None:
    assert codec.compress(encode(photo(), "GIF")).animated is False


# --------------------------------------------------------------------------- metadata


def test_exif_orientation_is_applied_and_removed() -> None:
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 8, 8))  # marks the stored top-left corner
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # "rotate 90 degrees clockwise to display"

    result = codec.compress(encode(stored, "JPEG", quality=95, exif=exif))

    assert (result.width, result.height) == (20, 40)
    output = reopen(result)
    assert output.size == (20, 40)
    assert ExifTags.Base.Orientation not in output.getexif()
    # Turned clockwise, the stored top-left corner is now at the top right.
    assert close_to(mean_colour(output, (14, 1, 19, 6)), (255, 0, 0), 40)
    assert close_to(mean_colour(output, (1, 1, 6, 6)), (0, 0, 255), 40)


def test_gps_and_other_metadata_are_stripped_but_the_icc_profile_is_kept() -> None:
    icc = srgb_icc_profile()
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Camera"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 22.0, 1.0)
    data = encode(
        photo(),
        "JPEG",
        quality=90,
        exif=exif,
        icc_profile=icc,
        comment=b"shot at home",
        xmp=b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>",
    )

    output = reopen(codec.compress(data))

    assert output.info["icc_profile"] == icc
    assert dict(output.getexif()) == {}
    assert not output.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    for key in ("exif", "comment", "xmp"):
        assert key not in output.info


def test_icc_profile_of_a_transparent_png_is_kept_in_the_webp() -> None:
    icc = srgb_icc_profile()

    output = reopen(
        codec.compress(encode(with_transparent_corner(photo()), "PNG", icc_profile=icc))
    )

    assert output.format == "WEBP"
    assert output.info["icc_profile"] == icc


# --------------------------------------------------------------------------- size


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("jpeg", lambda: encode(photo(37, 23), "JPEG", quality=90)),
        ("png", lambda: encode(photo(37, 23), "PNG")),
        ("png-rgba", lambda: encode(with_transparent_corner(photo(37, 23)), "PNG")),
        ("gif", lambda: encode(photo(37, 23), "GIF")),
        ("webp", lambda: encode(photo(37, 23), "WEBP", quality=80)),
        ("bmp", lambda: encode(photo(37, 23), "BMP")),
        ("tiff", lambda: encode(photo(37, 23), "TIFF")),
        ("grey16", lambda: encode(Image.new("I;16", (37, 23), 300), "PNG")),
    ],
)
def test_images_are_never_resized(name: str, make: Callable[[], bytes]) -> None:
    result = codec.compress(make())

    assert (result.width, result.height) == (37, 23)
    assert reopen(result).size == (37, 23)


def test_too_many_pixels_are_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    # 64 megapixels: above our 50 M cap, below Pillow's own bomb limits.
    capped = PillowCodec(Limits(max_image_pixels=50_000_000))

    failure = failure_of(png_header_only(8_000, 8_000), capped)

    assert failure.code is ErrorCode.TOO_MANY_PIXELS


def test_a_decompression_bomb_is_refused_as_too_many_pixels() -> None:
    # 400 megapixels: Pillow's own guard fires while reading the header.
    failure = failure_of(png_header_only(20_000, 20_000))

    assert failure.code is ErrorCode.TOO_MANY_PIXELS


def test_a_side_longer_than_jpeg_allows_is_refused() -> None:
    assert failure_of(png_header_only(70_000, 1)).code is ErrorCode.TOO_MANY_PIXELS


def test_pillows_own_limit_never_undercuts_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)

    PillowCodec(Limits(max_image_pixels=200_000_000))

    assert Image.MAX_IMAGE_PIXELS == 200_000_000


def test_pillows_own_limit_is_never_lowered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)

    PillowCodec(Limits(max_image_pixels=1_000))

    assert Image.MAX_IMAGE_PIXELS == 89_478_485


# --------------------------------------------------------------------------- failures


def test_truncated_jpeg_is_corrupt() -> None:
    data = encode(photo(), "JPEG", quality=90)

    assert failure_of(data[: len(data) // 2]).code is ErrorCode.CORRUPT_IMAGE


def test_truncated_png_is_corrupt() -> None:
    data = encode(photo(), "PNG")

    assert failure_of(data[: len(data) // 2]).code is ErrorCode.CORRUPT_IMAGE


def test_png_signature_with_a_broken_header_is_corrupt() -> None:
    assert failure_of(b"\x89PNG\r\n\x1a\n" + bytes(40)).code is ErrorCode.CORRUPT_IMAGE


def test_random_bytes_are_not_an_image() -> None:
    noise = np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes()

    assert failure_of(noise).code is ErrorCode.NOT_AN_IMAGE


def test_html_is_not_an_image() -> None:
    page = b"<!DOCTYPE html><html><head><title>404</title></head><body>Not found</body></html>"

    assert failure_of(page).code is ErrorCode.NOT_AN_IMAGE


def test_empty_bytes_are_not_an_image() -> None:
    assert failure_of(b"").code is ErrorCode.NOT_AN_IMAGE


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("pdf", b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"),
        ("svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'),
        ("svg-xml", b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>'),
        ("psd", b"8BPS\x00\x01" + bytes(64)),
        ("ico", encode(Image.new("RGB", (16, 16), "red"), "ICO")),
        ("jpeg2000", encode(Image.new("RGB", (16, 16), "red"), "JPEG2000")),
    ],
)
def test_other_image_formats_are_unsupported(name: str, data: bytes) -> None:
    assert failure_of(data).code is ErrorCode.UNSUPPORTED_FORMAT


def test_eps_is_unsupported_and_ghostscript_never_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    launched: list[object] = []

    def record(*args: object, **kwargs: object) -> None:
        launched.append(args)
        raise AssertionError("a subprocess was started")

    monkeypatch.setattr(subprocess, "Popen", record)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", record)
    eps = (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n"
        b"newpath 0 0 moveto 100 100 lineto stroke\nshowpage\n%%EOF\n"
    )

    failure = failure_of(eps)

    assert failure.code is ErrorCode.UNSUPPORTED_FORMAT
    assert launched == []
