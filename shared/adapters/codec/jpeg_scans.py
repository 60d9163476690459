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
# The next marker that has a length, or EOI: 0xFF followed by anything but a stuffed zero, a
# fill byte (the last 0xFF of a run is the marker's), TEM, a restart marker or SOI, which stand
# alone. A single literal first byte lets the regular expression engine skip entropy-coded
# data at memchr speed (a leading `\xff+` would try every position: 40 times slower), and
# the markers that stand alone never come back to Python, whatever their number.
_NEXT_MARKER: Final = re.compile(rb"\xff[^\x00\x01\xd0-\xd8\xff]")


# Marker segments walked at most per allowed scan (2,000 at the default 100 scans). Real files
# have a few dozen: APPn blocks (up to 255 for a chunked ICC profile), tables, a frame header,
# their scans. Walking each one costs Python a few microseconds, and 25 MB of empty comment
# segments would be 6.5 million of them (over 20 s here, and as long again in Pillow's own
# marker loop), so a flood of segments is refused like a flood of scans.
SEGMENTS_PER_SCAN: Final = 20


def count_scans(data: bytes, stop_above: int) -> int:
    """The number of SOS markers of the first image in `data`, counting no further than
    `stop_above + 1`. Bytes that are not a JPEG at all count as no scans."""
    return _walk(data, stop_above, max_segments=None)[0]


def check_scan_count(data: bytes, max_scans: int) -> None:
    """Raise ImageFailure(too_many_scans) for a JPEG with more than `max_scans` scans, or more
    than SEGMENTS_PER_SCAN times as many marker segments of any kind."""
    max_segments = SEGMENTS_PER_SCAN * max_scans
    scans, segments = _walk(data, max_scans, max_segments=max_segments)
    if scans > max_scans:
        raise ImageFailure(
            ErrorCode.TOO_MANY_SCANS,
            f"the JPEG has more than {max_scans:,} scans (real ones have about ten); "
            "each would be a pass over the whole picture",
        )
    if segments > max_segments:
        raise ImageFailure(
            ErrorCode.TOO_MANY_SCANS,
            f"the JPEG has more than {max_segments:,} marker segments (real ones have a few dozen)",
        )


def _walk(data: bytes, stop_above: int, *, max_segments: int | None) -> tuple[int, int]:
    """(scans, segments) of the first image, stopping once either is above its limit."""
    scans = segments = 0
    position = 2  # after SOI
    size = len(data)
    while True:
        found = _NEXT_MARKER.search(data, position)
        if found is None:
            break
        marker = data[found.start() + 1]
        position = found.end()
        if marker == _EOI or position + 2 > size:
            break
        segments += 1
        if max_segments is not None and segments > max_segments:
            break
        (length,) = struct.unpack_from(">H", data, position)
        if marker == _SOS:
            scans += 1
            if scans > stop_above:
                break
        # A length below 2 is an error to libjpeg; step over the two bytes and look again.
        position += max(length, 2)
    return scans, segments
