"""The fast path for JPEG sources: re-quantize in the DCT domain, the general codec for the rest.

Halving a JPEG's quality changes its quantization tables and nothing else, so the work can
stay where the JPEG keeps its picture: each quantized DCT coefficient is rescaled from the
source's table to the IJG table of the output quality (`jpeg_requantize`, a small C module
over libjpeg-turbo in `native/`). Decoding to pixels and encoding again would add an inverse
and a forward DCT, chroma upsampling and downsampling and two colour conversions, for an
output that is no better (BENCHMARKS.md has the figures).

The fast path takes only what it renders as the general path would:
- Huffman-coded 8-bit frames, baseline, extended or progressive (not arithmetic-coded,
  lossless, hierarchical or 12-bit);
- greyscale, or YCbCr with subsampled chroma (4:2:0, 4:2:2, 4:4:0); not CMYK, YCCK or RGB,
  which the general path converts. Not 4:4:4 either: its coefficients take 6 bytes a pixel,
  twice the decoded picture, where Pillow needs 1.3 times it (BENCHMARKS.md), and memory per
  image is bounded at 1.5 times the decoded size;
- no orientation other than 1 in EXIF (nor any in XMP): turning the picture in the DCT
  domain only works in whole blocks, so those go the general way;
- not an MPO (the general path records that a second picture was dropped);
- an ICC profile, if any, that describes the pixels it travels with.
Everything else, and every file libjpeg has anything to say about (truncated, corrupt), goes
to the general codec, which decides what is wrong with it. The output is what the general
path writes: a baseline JPEG with the IJG tables of `output_quality(source quality)`, the ICC
profile and no other metadata, the source's chroma sampling kept.

With `optimal_huffman_tables` (OPTIMAL_HUFFMAN_TABLES=1; off by default, since make bench
put the DCT path below 1.7x Pillow-naive's throughput with them), every JPEG this codec
returns has optimal Huffman tables, computed for its own coefficients: they change no
coefficient, so no pixel, and make photographs about 6% smaller than standard tables
(BENCHMARKS.md). The DCT path writes them directly (libjpeg's second pass over coefficients
it holds anyway); a JPEG the general codec wrote with standard tables is transcoded once
more, losslessly (the same tables in and out), after the general codec has let its decoded
picture go, so that memory stays within its bound (4:4:4 outputs, whose coefficients would
take twice the decoded picture, keep standard tables).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Final

from jpeg_requantize import TooManyScans, Unsuitable, requantize

from shared.adapters.codec.dimensions import check_dimensions
from shared.adapters.codec.jpeg_header import JpegHeader, JpegHeaderError, read_jpeg_header
from shared.adapters.codec.jpeg_scans import check_scan_count
from shared.config import Limits
from shared.domain.errors import ErrorCode, ImageFailure
from shared.domain.model import CompressedImage
from shared.domain.quality import (
    STANDARD_CHROMINANCE,
    STANDARD_LUMINANCE,
    estimate_jpeg_quality,
    ijg_table,
    output_quality,
)
from shared.ports import ImageCodec

log = logging.getLogger(__name__)

_JPEG_SIGNATURE: Final = b"\xff\xd8\xff"
_ICC_SPACE_FOR_COMPONENTS: Final = {1: b"GRAY", 3: b"RGB "}
_ADOBE_NO_TRANSFORM: Final = 0  # Adobe's way of saying "these three components are RGB"
# libjpeg holds every quantized coefficient (2 bytes) of the image at once; allowed at most
# 1.5 times the 3 bytes a pixel of the decoded RGB picture.
_MAX_COEFFICIENT_BYTES_PER_PIXEL: Final = 4.5
_BYTES_PER_COEFFICIENT: Final = 2


class JpegRequantizer:
    """`shared.ports.ImageCodec`: JPEGs re-quantized in the DCT domain, others by `general`.

    Stateless apart from its limits: thread-safe (the C module releases the GIL).
    """

    def __init__(self, limits: Limits, general: ImageCodec) -> None:
        self._max_pixels = limits.max_image_pixels
        self._max_scans = limits.max_jpeg_scans
        self._optimal_huffman = limits.optimal_huffman_tables
        self._general = general

    def compress(self, data: bytes) -> CompressedImage:
        if data.startswith(_JPEG_SIGNATURE):
            # Before any marker is parsed in Python, here or in Pillow: a flood of scans or
            # segments is refused before anything else walks it.
            check_scan_count(data, self._max_scans)
        header = _requantizable_header(data)
        if header is None:
            return self._from_general(data)
        check_dimensions((header.width, header.height), self._max_pixels)
        source_quality = estimate_jpeg_quality(header.quantization)
        quality = output_quality(source_quality)
        try:
            encoded = requantize(
                data,
                ijg_table(STANDARD_LUMINANCE, quality),
                ijg_table(STANDARD_CHROMINANCE, quality),
                header.icc_profile,
                optimize_huffman=self._optimal_huffman,
                # libjpeg counts too, as it reads: a file whose markers the count above read
                # differently from libjpeg still stops at the limit. The pixel cap likewise,
                # on the frame header libjpeg itself read.
                max_scans=self._max_scans,
                max_pixels=self._max_pixels,
            )
        except TooManyScans as exc:
            raise ImageFailure(ErrorCode.TOO_MANY_SCANS, f"the JPEG has {exc}") from exc
        except Unsuitable as exc:
            log.debug("JPEG left to the general codec: %s", exc)
            return self._from_general(data)
        except MemoryError as exc:
            raise ImageFailure(ErrorCode.INTERNAL, "out of memory while re-quantizing") from exc
        return CompressedImage(
            data=encoded,
            output_format="jpeg",
            content_type="image/jpeg",
            extension="jpg",
            width=header.width,
            height=header.height,
            source_format="jpeg",
            source_quality=source_quality,
            output_quality=quality,
            animated=False,
        )

    def _from_general(self, data: bytes) -> CompressedImage:
        result = self._general.compress(data)
        return with_optimal_huffman_tables(result) if self._optimal_huffman else result


def with_optimal_huffman_tables(result: CompressedImage) -> CompressedImage:
    """The general codec's JPEG rewritten with optimal Huffman tables, nothing else changed:
    its own quantization tables in and out, so every coefficient is kept as it is."""
    if result.output_format != "jpeg":
        return result
    try:
        header = read_jpeg_header(result.data)
    except JpegHeaderError:  # not expected of Pillow's output; keep it as it is
        log.warning("the general codec wrote a JPEG whose header does not read", exc_info=True)
        return result
    if _coefficient_bytes_per_pixel(header) > _MAX_COEFFICIENT_BYTES_PER_PIXEL:
        return result  # 4:4:4: its coefficients would take twice the decoded picture
    luminance = header.quantization.get(0)
    if luminance is None:
        return result
    try:
        optimal = requantize(
            result.data,
            luminance,
            header.quantization.get(1, luminance),
            header.icc_profile,
            optimize_huffman=True,
        )
    except (Unsuitable, ValueError):  # tables beyond 8 bits, and the like: not Pillow's
        log.warning("the general codec's JPEG kept its standard tables", exc_info=True)
        return result
    return replace(result, data=optimal)


def _requantizable_header(data: bytes) -> JpegHeader | None:
    """The header of a JPEG the fast path takes, or None for the general codec."""
    if not data.startswith(_JPEG_SIGNATURE):
        return None
    try:
        header = read_jpeg_header(data)
    except JpegHeaderError as exc:
        log.debug("JPEG header left to the general codec: %s", exc)
        return None
    components = len(header.components)
    tables = {component.table for component in header.components}
    suitable = (
        header.huffman_sequential_or_progressive
        and header.precision == 8
        and header.width > 0
        and header.height > 0
        and components in _ICC_SPACE_FOR_COMPONENTS
        and header.adobe_transform != _ADOBE_NO_TRANSFORM
        and _coefficient_bytes_per_pixel(header) <= _MAX_COEFFICIENT_BYTES_PER_PIXEL
        and header.exif_orientation in (None, 1)
        and not header.xmp_mentions_orientation
        and not header.multi_picture
        # The source quality is estimated from tables 0 and 1, as the general path does;
        # every table a component uses must be there to rescale from.
        and 0 in header.quantization
        and tables <= header.quantization.keys()
        and (
            header.icc_profile is None
            # Bytes 16..19 of an ICC header name the colour space it describes; the general
            # path drops a profile that does not describe its pixels, so it takes those.
            or header.icc_profile[16:20] == _ICC_SPACE_FOR_COMPONENTS[components]
        )
    )
    return header if suitable else None


def _coefficient_bytes_per_pixel(header: JpegHeader) -> float:
    widest = max(component.horizontal_sampling for component in header.components)
    tallest = max(component.vertical_sampling for component in header.components)
    if widest * tallest == 0:
        return float("inf")  # sampling factors of 0 are invalid; libjpeg would refuse them
    blocks = sum(c.horizontal_sampling * c.vertical_sampling for c in header.components)
    return _BYTES_PER_COEFFICIENT * blocks / (widest * tallest)
