"""What the first bytes of a file say it is, without running any decoder.

Used after the decoders of the allowed formats declined a file, to tell the user whether it
is a broken image of an allowed format (`corrupt_image`), an image format that is refused
(`unsupported_format`) or not an image at all (`not_an_image`).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final


def ftyp_brands(data: bytes) -> set[bytes]:
    """Major and compatible brands of an ISO-BMFF file (AVIF, HEIF, ...), or none."""
    if data[4:8] != b"ftyp" or len(data) < 16:
        return set()
    size = min(int.from_bytes(data[0:4], "big"), len(data), 4096)
    return {data[8:12]} | {data[i : i + 4] for i in range(16, size - 3, 4)}


HEIF_BRANDS: Final = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
)


def allowed_signature(data: bytes, allowed_formats: Collection[str]) -> str | None:
    """The allowed format the bytes claim to be, if any: such bytes are a broken image."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WebP"
    # "BM" alone is too common a start for text; require a known BMP info-header size.
    if data.startswith(b"BM") and int.from_bytes(data[14:18], "little") in {
        12,
        16,
        40,
        52,
        56,
        64,
        108,
        124,
    }:
        return "BMP"
    if data.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "TIFF"
    brands = ftyp_brands(data)
    if "AVIF" in allowed_formats and brands & {b"avif", b"avis"}:
        return "AVIF"
    if "HEIF" in allowed_formats and brands & HEIF_BRANDS:
        return "HEIF"
    return None


# Signatures of image (and image-like) formats that are recognised but refused, so that the
# user is told "unsupported" rather than "not an image". Checked only after the allowed formats
# failed, and without running any parser.
_UNSUPPORTED_PREFIXES: Final[tuple[tuple[bytes, str], ...]] = (
    (b"%PDF-", "PDF"),
    (b"%!PS", "PostScript/EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x00\x00\x02\x00", "CUR"),
    (b"icns", "ICNS"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"II\xbc", "JPEG XR"),
    (b"qoif", "QOI"),
    (b"DDS ", "DDS"),
    (b"gimp xcf", "XCF"),
    (b"\xd7\xcd\xc6\x9a", "WMF"),
    (b"#?RADIANCE", "Radiance HDR"),
    (b"#?RGBE", "Radiance HDR"),
    (b"\x76\x2f\x31\x01", "OpenEXR"),
    (b"BPG\xfb", "BPG"),
    (b"FLIF", "FLIF"),
    (b"SIMPLE  =", "FITS"),
    (b"\x59\xa6\x6a\x95", "Sun raster"),
    (b"\x01\xda", "SGI"),
)
_NETPBM_MAGIC: Final = frozenset(b"1234567")
_SVG_SNIFF_BYTES: Final = 4096


def unsupported_signature(data: bytes) -> str | None:
    for prefix, name in _UNSUPPORTED_PREFIXES:
        if data.startswith(prefix):
            return name
    if data.startswith(b"RIFF") and data[8:12] == b"ACON":
        return "animated cursor"
    brands = ftyp_brands(data)
    if brands & {b"avif", b"avis"}:
        return "AVIF"  # this Pillow was built without it
    if brands & HEIF_BRANDS:
        return "HEIF/HEIC"  # this build has no HEIF decoder
    if data[128:132] == b"DICM":
        return "DICOM"
    if data.startswith(b"FORM") and data[8:12] in (b"ILBM", b"PBM "):
        return "IFF"
    # Netpbm: "P1".."P7" followed by whitespace.
    if len(data) > 2 and data[0:1] == b"P" and data[1] in _NETPBM_MAGIC and data[2] in b" \t\r\n":
        return "Netpbm"
    head = data[:_SVG_SNIFF_BYTES].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<svg") or (
        head.startswith((b"<?xml", b"<!doctype svg", b"<!--"))
        and b"<svg" in head
        and b"<html" not in head
    ):
        return "SVG"
    return None
