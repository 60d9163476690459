"""The quality policy: what "half of the original quality" means, as pure functions.

A JPEG does not store the quality it was saved at; it stores quantization tables. Nearly every
encoder in the wild (libjpeg, libjpeg-turbo, mozjpeg's defaults, Pillow, most cameras' software
paths) derives them by scaling the two example tables of the JPEG standard (Annex K) with the
Independent JPEG Group's formula, so the quality is recovered by finding the IJG quality whose
scaled tables match. Tables that were not made that way (some cameras, Photoshop) get the
closest IJG quality, which is what "its quality" can reasonably mean for them.

No Pillow here: the codec adapter reads the tables and hands them over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache

# A source without a quality of its own (PNG, GIF, BMP, TIFF, lossless WebP) counts as 100, so
# it is encoded at 50 (SPEC "Images").
LOSSLESS_SOURCE_QUALITY = 100

MIN_QUALITY = 1
MAX_QUALITY = 100

# JPEG standard Annex K, tables K.1 and K.2, in natural (row-major) order: the same order as
# Pillow's `Image.quantization`, which un-zigzags the DQT segment when it reads it.
STANDARD_LUMINANCE: tuple[int, ...] = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
STANDARD_CHROMINANCE: tuple[int, ...] = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
)  # fmt: skip

_TABLE_SIZE = 64


def _clamp_quality(quality: int) -> int:
    return max(MIN_QUALITY, min(MAX_QUALITY, quality))


def ijg_table(base: Sequence[int], quality: int) -> list[int]:
    """`base` scaled to `quality` exactly as libjpeg's jpeg_set_quality does it.

    Integer arithmetic on purpose: libjpeg truncates (5000 // q, then (b * s + 50) // 100), and
    an exact estimate depends on reproducing that bit for bit. Entries are clamped to 1..255
    because Pillow (like most encoders) forces baseline-compatible 8-bit tables.
    """
    quality = _clamp_quality(quality)
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return [max(1, min(255, (value * scale + 50) // 100)) for value in base]


@cache
def _reference_tables() -> tuple[tuple[int, tuple[int, ...], tuple[int, ...]], ...]:
    # Highest quality first, so that when two qualities fit equally well the higher one wins
    # (strict "<" below keeps the first found).
    return tuple(
        (
            quality,
            tuple(ijg_table(STANDARD_LUMINANCE, quality)),
            tuple(ijg_table(STANDARD_CHROMINANCE, quality)),
        )
        for quality in range(MAX_QUALITY, MIN_QUALITY - 1, -1)
    )


def _distance(table: Sequence[int], reference: Sequence[int]) -> int:
    return sum(abs(a - b) for a, b in zip(table, reference, strict=True))


def estimate_jpeg_quality(tables: Mapping[int, Sequence[int]]) -> int:
    """The IJG quality (1..100) whose standard tables are closest to `tables`.

    `tables` maps a table id to its 64 entries in natural order, as `Image.quantization` gives
    them. Table 0 is the luminance table; table 1, when present, the chrominance one (a
    greyscale JPEG has only table 0). Closeness is the sum of absolute differences over both;
    an exact match has distance 0 and therefore always wins; ties go to the higher quality, so
    that an ambiguous source is never halved below what it could have been.
    """
    if not tables:
        raise ValueError("a JPEG without quantization tables has no quality to estimate")
    # Table 0 is luminance by convention; an encoder that numbered its only table otherwise
    # still has its first table used as such.
    luminance = tables[0] if 0 in tables else tables[min(tables)]
    chrominance = tables.get(1) if 0 in tables else None
    for table in (luminance, chrominance):
        if table is not None and len(table) != _TABLE_SIZE:
            raise ValueError(f"a quantization table has {_TABLE_SIZE} entries, got {len(table)}")

    best_quality, best_distance = MAX_QUALITY, None
    for quality, ref_luminance, ref_chrominance in _reference_tables():
        distance = _distance(luminance, ref_luminance)
        if chrominance is not None:
            distance += _distance(chrominance, ref_chrominance)
        if best_distance is None or distance < best_distance:
            best_quality, best_distance = quality, distance
            if distance == 0:
                break
    return best_quality


def output_quality(source_quality: int) -> int:
    """Half of the source quality, rounded half up, never below 1 (SPEC: max(1, round(Q/2))).

    Half up rather than Python's round-half-even so that 75 gives 38 and 3 gives 2: the same
    source quality always maps to the same output whatever its parity.
    """
    return _clamp_quality((_clamp_quality(source_quality) + 1) // 2)


# libwebp's spatial noise shaping strength, as betrayed by the chroma DC quantizer delta it
# writes (dq_uv_dc = -4 * sns / 100, truncated): each delta is mapped to the strength libwebp's
# presets actually use (default 50; photo and picture 80; drawing 25; icon and text 0).
_SNS_BY_UV_DC_DELTA = {0: 0, -1: 25, -2: 50, -3: 80, -4: 100}
_DEFAULT_SNS = 50
_VP8_MAX_QUANTIZER = 127
# libwebp's SNS_TO_DQ and the extreme "susceptibility" a segment can be given.
_SNS_TO_DQ = 0.9
_MAX_SEGMENT_ALPHA = 127


def estimate_webp_quality(segment_quantizers: Sequence[int], *, uv_dc_delta: int = -2) -> int:
    """The quality a lossy WebP (VP8) was encoded at, by inverting libwebp's quality model.

    libwebp turns quality Q into a base compressibility c = (Q-dependent linear term) ** (1/3)
    and gives each of up to four segments the quantizer index 127 * (1 - c ** (1 - amp * a)),
    where `a` in -127..127 is how much that segment's content can hide noise and
    `amp = 0.9 * sns / 100 / 128`. Only the quantizer indices reach the file, not `a`, so the
    inversion cannot be exact; but the most coarsely quantized segment has `a` >= -127, and
    assuming exactly -127 yields an upper bound of Q. Measured over photo-like, flat, noisy and
    mixed images at every quality 1..100 with Pillow's encoder, the estimate is never below the
    true quality and usually within 0..5 above it. Erring upwards is deliberate: the output is
    then never encoded below half of what the source really had, and it is still far closer
    than counting every lossy WebP as quality 100.

    `segment_quantizers` are the y_ac quantizer indices (0..127) of the segments, or the single
    base index when segmentation is off; `uv_dc_delta` the frame's chroma DC delta.
    """
    if not segment_quantizers:
        raise ValueError("a VP8 frame has at least one quantizer")
    coarsest = max(0, min(_VP8_MAX_QUANTIZER, max(segment_quantizers)))
    if coarsest == 0:
        return MAX_QUALITY
    sns = _SNS_BY_UV_DC_DELTA.get(uv_dc_delta, _DEFAULT_SNS)
    amp = _SNS_TO_DQ * sns / 100 / 128
    # With one distinct quantizer every segment had the same weight, i.e. a == 0.
    alpha = -_MAX_SEGMENT_ALPHA if len(set(segment_quantizers)) > 1 else 0
    # Inverse of libwebp's quant = (int)(127 * (1 - pow(c_base, 1 - amp * alpha))), taking the
    # low end of the truncated interval, which again errs towards the higher quality.
    c_base = (1 - coarsest / _VP8_MAX_QUANTIZER) ** (1 / (1 - amp * alpha))
    linear = c_base**3
    # Inverse of libwebp's QualityToCompression: linear = Q * 2/3 below Q = 0.75, else 2Q - 1.
    quality = linear * 1.5 if linear < 0.5 else (linear + 1) / 2
    return _clamp_quality(int(100 * quality + 0.5))
