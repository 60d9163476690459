"""The pixel cap, checked on a header before anything is decoded, by every codec path."""

from __future__ import annotations

from typing import Final

from shared.domain.errors import ErrorCode, ImageFailure

# The largest side a baseline JPEG can describe.
JPEG_MAX_SIDE: Final = 65_500


def check_dimensions(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageFailure(
            ErrorCode.TOO_MANY_PIXELS,
            f"{width}x{height} is {width * height:,} pixels, above the limit of {max_pixels:,}",
        )
    if max(width, height) > JPEG_MAX_SIDE:
        raise ImageFailure(
            ErrorCode.TOO_MANY_PIXELS,
            f"{width}x{height} has a side longer than the {JPEG_MAX_SIDE:,} pixels JPEG allows",
        )
