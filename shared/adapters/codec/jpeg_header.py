"""What a JPEG's markers say before its first scan, read without decoding anything.

The DCT-domain codec decides from this whether a file is one it can re-quantize (and at what
quality) before any pixel or coefficient is touched. It reads what Pillow would read for the
same decisions, the same way: the quantization tables (in natural order, as
`Image.quantization` gives them), the first EXIF block's orientation, the ICC profile chunks
(sorted and counted as Pillow does), and, as XMP, whether an orientation hides there too.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

_SOI: Final = b"\xff\xd8"
_SOS: Final = 0xDA
_EOI: Final = 0xD9
_DQT: Final = 0xDB
_APP1: Final = 0xE1
_APP2: Final = 0xE2
_APP14: Final = 0xEE
# Start-of-frame markers are C0..CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF_MARKERS: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length: TEM and the restart markers.
_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD8)})

# Position in the zigzag sequence of each coefficient in natural (row-major) order.
_ZIGZAG_OF_NATURAL: Final = (
    0, 1, 5, 6, 14, 15, 27, 28,
    2, 4, 7, 13, 16, 26, 29, 42,
    3, 8, 12, 17, 25, 30, 41, 43,
    9, 11, 18, 24, 31, 40, 44, 53,
    10, 19, 23, 32, 39, 45, 52, 54,
    20, 22, 33, 38, 46, 51, 55, 60,
    21, 34, 37, 47, 50, 56, 59, 61,
    35, 36, 48, 49, 57, 58, 62, 63,
)  # fmt: skip

_EXIF_PREFIX: Final = b"Exif\x00\x00"
_XMP_PREFIX: Final = b"http://ns.adobe.com/xap/1.0/\x00"
_ICC_PREFIX: Final = b"ICC_PROFILE\x00"
_MPF_PREFIX: Final = b"MPF\x00"
_ORIENTATION_TAG: Final = 0x0112
_TIFF_SHORT: Final = 3


class JpegHeaderError(ValueError):
    """The markers before the first scan are not well formed."""


@dataclass(frozen=True)
class FrameComponent:
    identifier: int
    horizontal_sampling: int
    vertical_sampling: int
    table: int


@dataclass
class JpegHeader:
    frame_marker: int = 0
    precision: int = 0
    width: int = 0
    height: int = 0
    components: list[FrameComponent] = field(default_factory=list)
    # Table id -> 64 entries in natural order, like Pillow's `Image.quantization`.
    quantization: dict[int, list[int]] = field(default_factory=dict)
    # From the first EXIF block; None when there is none or it carries no orientation.
    exif_orientation: int | None = None
    xmp_mentions_orientation: bool = False
    icc_profile: bytes | None = None
    adobe_transform: int | None = None
    # An MPF block makes this a camera MPO: more pictures follow the first.
    multi_picture: bool = False

    @property
    def huffman_sequential_or_progressive(self) -> bool:
        """Baseline (C0), extended (C1) or progressive (C2): Huffman-coded, not lossless."""
        return self.frame_marker in (0xC0, 0xC1, 0xC2)


def read_jpeg_header(data: bytes) -> JpegHeader:
    """Walk the marker segments from SOI to the first SOS. Raises JpegHeaderError."""
    header = JpegHeader()
    icc_chunks: list[bytes] = []
    saw_exif = False
    for marker, segment in _segments_before_scan(data):
        if marker in _SOF_MARKERS:
            if header.frame_marker:
                raise JpegHeaderError("more than one frame header")
            _read_frame(segment, marker, header)
            # Pillow assembles the profile when it meets the frame header and ignores chunks
            # that come after it; so do we, so that both paths keep the same profile.
            header.icc_profile = _icc_profile(icc_chunks)
        elif marker == _DQT:
            _read_tables(segment, header.quantization)
        elif marker == _APP1 and segment.startswith(_EXIF_PREFIX) and not saw_exif:
            saw_exif = True  # only the first EXIF block counts, as in Pillow
            header.exif_orientation = _exif_orientation(segment[len(_EXIF_PREFIX) :])
        elif marker == _APP1 and segment.startswith(_XMP_PREFIX):
            header.xmp_mentions_orientation |= b"tiff:Orientation" in segment
        elif marker == _APP2 and segment.startswith(_ICC_PREFIX) and not header.frame_marker:
            icc_chunks.append(segment)
        elif marker == _APP2 and segment.startswith(_MPF_PREFIX):
            header.multi_picture = True
        elif marker == _APP14 and segment.startswith(b"Adobe") and len(segment) >= 12:
            header.adobe_transform = segment[11]
    if not header.frame_marker:
        raise JpegHeaderError("no frame header before the first scan")
    return header


def _segments_before_scan(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(marker, body) of each segment after SOI, up to and without the first SOS."""
    if not data.startswith(_SOI):
        raise JpegHeaderError("no start-of-image marker")
    position = 2
    while True:
        if position >= len(data) or data[position] != 0xFF:
            raise JpegHeaderError(f"expected a marker at byte {position}")
        while position < len(data) and data[position] == 0xFF:  # fill bytes
            position += 1
        if position + 3 > len(data):
            raise JpegHeaderError("the file ends inside a marker")
        marker = data[position]
        position += 1
        if marker in _STANDALONE:
            continue
        if marker == _EOI:
            raise JpegHeaderError("the image ends before its first scan")
        (length,) = struct.unpack_from(">H", data, position)
        if length < 2 or position + length > len(data):
            raise JpegHeaderError(f"marker {marker:#04x} has a bad length")
        if marker == _SOS:
            return
        yield marker, data[position + 2 : position + length]
        position += length


def _read_frame(segment: bytes, marker: int, header: JpegHeader) -> None:
    if len(segment) < 6:
        raise JpegHeaderError("short frame header")
    precision, height, width, count = struct.unpack_from(">BHHB", segment)
    if len(segment) < 6 + 3 * count:
        raise JpegHeaderError("short frame header")
    header.frame_marker, header.precision = marker, precision
    header.width, header.height = width, height
    for offset in range(6, 6 + 3 * count, 3):
        identifier, sampling, table = segment[offset : offset + 3]
        header.components.append(FrameComponent(identifier, sampling >> 4, sampling & 15, table))


def _read_tables(segment: bytes, tables: dict[int, list[int]]) -> None:
    offset = 0
    while offset < len(segment):
        precision_and_id = segment[offset]
        wide = precision_and_id >> 4 != 0
        size = 64 * (2 if wide else 1)
        body = segment[offset + 1 : offset + 1 + size]
        if len(body) < size:
            raise JpegHeaderError("short quantization table")
        zigzag = struct.unpack(">64H", body) if wide else tuple(body)
        tables[precision_and_id & 15] = [zigzag[i] for i in _ZIGZAG_OF_NATURAL]
        offset += 1 + size


def _exif_orientation(tiff: bytes) -> int | None:
    """The orientation in IFD0 of a TIFF-structured EXIF block. Raises JpegHeaderError."""
    try:
        if tiff.startswith(b"II*\x00"):
            order = "<"
        elif tiff.startswith(b"MM\x00*"):
            order = ">"
        else:
            raise JpegHeaderError("EXIF without a TIFF header")
        (ifd,) = struct.unpack_from(order + "I", tiff, 4)
        (entries,) = struct.unpack_from(order + "H", tiff, ifd)
        for entry in range(entries):
            tag, kind, count = struct.unpack_from(order + "HHI", tiff, ifd + 2 + 12 * entry)
            if tag == _ORIENTATION_TAG:
                if kind != _TIFF_SHORT or count != 1:
                    raise JpegHeaderError("an EXIF orientation that is not one short")
                (value,) = struct.unpack_from(order + "H", tiff, ifd + 2 + 12 * entry + 8)
                return int(value)
    except struct.error as exc:
        raise JpegHeaderError(f"unreadable EXIF: {exc}") from exc
    return None


def _icc_profile(chunks: list[bytes]) -> bytes | None:
    # As Pillow: chunks sorted by their sequence number, used only when their declared count
    # matches what arrived; a broken set means no profile (sRGB assumed).
    if not chunks:
        return None
    chunks = sorted(chunks)
    prefix = len(_ICC_PREFIX)
    if len(chunks[0]) < prefix + 2 or chunks[0][prefix + 1] != len(chunks):
        return None
    return b"".join(chunk[prefix + 2 :] for chunk in chunks)
