"""The quantizers of a lossy WebP's first frame, read from its VP8 frame header.

A lossy WebP does not store the quality it was saved at; `shared.domain.quality` turns the
quantizer indices read here into an estimate of it. Only the first few hundred bytes of the
frame are read, with a boolean decoder written after RFC 6386, and no pixel is decoded.
"""

from __future__ import annotations

import struct
from typing import Final


def vp8_frame_quantizers(data: bytes) -> tuple[list[int], int] | None:
    """Segment quantizers and chroma DC delta of a WebP's first frame, None when lossless.

    Also None when the header cannot be read, which leaves the source at quality 100: the
    image decoded, so our reading of it is at fault and the safe side is the higher quality.
    """
    try:
        chunk = _first_image_chunk(data, 12, len(data))
        if chunk is None or chunk[0] != b"VP8 ":
            return None
        return _read_vp8_header(chunk[1])
    except (IndexError, ValueError, struct.error):
        return None


_VP8_HEADER_BYTES: Final = 512


def _first_image_chunk(data: bytes, start: int, end: int) -> tuple[bytes, bytes] | None:
    """The first VP8/VP8L chunk of a RIFF WebP, looking inside the first animation frame."""
    position = start
    while position + 8 <= end:
        tag = data[position : position + 4]
        (size,) = struct.unpack("<I", data[position + 4 : position + 8])
        body_start, body_end = position + 8, min(position + 8 + size, end)
        if tag in (b"VP8 ", b"VP8L"):
            # The frame header needs a few dozen bytes; no need to copy the whole bitstream.
            return tag, data[body_start : min(body_end, body_start + _VP8_HEADER_BYTES)]
        if tag == b"ANMF":
            # 16 bytes of frame geometry and timing, then the frame's own chunks.
            return _first_image_chunk(data, body_start + 16, body_end)
        position = body_start + size + (size & 1)
    return None


class _BoolDecoder:
    """The boolean entropy decoder of VP8 (RFC 6386, section 7), enough to read a header."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._position = 2
        self._value = (data[0] << 8) | data[1]
        self._range = 255
        self._bit_count = 0

    def bit(self, probability: int = 128) -> int:
        split = 1 + (((self._range - 1) * probability) >> 8)
        big_split = split << 8
        if self._value >= big_split:
            result = 1
            self._range -= split
            self._value -= big_split
        else:
            result = 0
            self._range = split
        while self._range < 128:
            self._value <<= 1
            self._range <<= 1
            self._bit_count += 1
            if self._bit_count == 8:
                self._bit_count = 0
                if self._position < len(self._data):
                    self._value |= self._data[self._position]
                    self._position += 1
        return result

    def literal(self, bits: int) -> int:
        value = 0
        for _ in range(bits):
            value = (value << 1) | self.bit()
        return value

    def signed(self, bits: int) -> int:
        value = self.literal(bits)
        return -value if self.bit() else value

    def optional_signed(self, bits: int) -> int:
        return self.signed(bits) if self.bit() else 0


_VP8_SEGMENTS = 4


def _read_vp8_header(frame: bytes) -> tuple[list[int], int] | None:
    """Walk a VP8 key frame header (RFC 6386, 9.2 to 9.6) up to its quantizer indices."""
    if len(frame) < 12 or frame[0] & 1 or frame[3:6] != b"\x9d\x01\x2a":
        return None  # not a key frame: cannot be the first frame of a still WebP
    header = _BoolDecoder(frame[10:])
    header.literal(2)  # colour space, clamping type
    segment_quantizers: list[int] | None = None
    absolute = True
    if header.bit():  # segmentation enabled
        update_map = header.bit()
        if header.bit():  # segment feature data follows
            absolute = bool(header.bit())
            segment_quantizers = [header.optional_signed(7) for _ in range(_VP8_SEGMENTS)]
            for _ in range(_VP8_SEGMENTS):
                header.optional_signed(6)  # loop filter level per segment
        if update_map:
            for _ in range(3):
                if header.bit():
                    header.literal(8)  # segment tree probabilities
    header.literal(1 + 6 + 3)  # filter type, loop filter level, sharpness
    if header.bit() and header.bit():  # loop filter deltas enabled and updated
        for _ in range(8):
            header.optional_signed(6)
    header.literal(2)  # log2 of the number of DCT partitions
    base = header.literal(7)  # y_ac_qi
    # Deltas of y_dc, y2_dc, y2_ac, uv_dc and uv_ac, in that order.
    uv_dc = [header.optional_signed(4) for _ in range(5)][3]
    if segment_quantizers is None:
        return [base], uv_dc
    if not absolute:
        segment_quantizers = [max(0, min(127, base + delta)) for delta in segment_quantizers]
    return segment_quantizers, uv_dc
