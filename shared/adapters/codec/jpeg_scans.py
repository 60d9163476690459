"""Scan bombs: a JPEG's scans counted from its markers, before anything is decoded.

Each scan of a progressive JPEG is a pass over the whole picture, in libjpeg as in Pillow
(which decodes through libjpeg), and nothing in the format limits how many there are: a file
of a few kilobytes with thousands of scans keeps a decoder busy for minutes. Real files have
about ten (libjpeg's default progression has ten, mozjpeg's a dozen or so). Both codec paths
count the scans here first and fail the image at once above `MAX_JPEG_SCANS`.

The count follows the markers the way libjpeg reads them: segments are skipped by their
length (so an EXIF thumbnail's own scans do not count), entropy-coded data is skipped up to
the next marker (byte stuffing and restart markers are not markers there), bytes where a
marker should be are skipped as libjpeg skips them, and the count stops at the end of the
first image (what follows an MPO's first picture is another picture, never decoded here).
"""

from __future__ import annotations

import re
import struct
from typing import Final

from shared.domain.errors import ErrorCode, ImageFailure

_EOI: Final = 0xD9
_SOS: Final = 0xDA
# Markers that stand alone, without a length: TEM, the restart markers, SOI.
_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD9)})
# The next marker: 0xFF (and any fill bytes) followed by a code that is not a stuffed zero.
# Restart markers are matched too and skipped like any other standalone marker.
_NEXT_MARKER: Final = re.compile(rb"\xff+([^\x00\xff])")


def count_scans(data: bytes, stop_above: int) -> int:
    """The number of SOS markers of the first image in `data`, counting no further than
    `stop_above + 1`. Bytes that are not a JPEG at all count as no scans."""
    scans = 0
    position = 2  # after SOI
    size = len(data)
    while position < size:
        found = _NEXT_MARKER.search(data, position)
        if found is None:
            break
        marker = found.group(1)[0]
        position = found.end()
        if marker == _EOI:
            break
        if marker in _STANDALONE:
            continue
        if position + 2 > size:
            break
        (length,) = struct.unpack_from(">H", data, position)
        if marker == _SOS:
            scans += 1
            if scans > stop_above:
                break
        # A length below 2 is an error to libjpeg; step over the two bytes and look again.
        position += max(length, 2)
    return scans


def check_scan_count(data: bytes, max_scans: int) -> None:
    """Raise ImageFailure(too_many_scans) for a JPEG with more than `max_scans` scans."""
    if count_scans(data, max_scans) > max_scans:
        raise ImageFailure(
            ErrorCode.TOO_MANY_SCANS,
            f"the JPEG has more than {max_scans:,} scans (real ones have about ten); "
            "each would be a pass over the whole picture",
        )
