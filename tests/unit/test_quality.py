"""The quality policy: estimating a source's quality and halving it (SPEC "Images")."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shared.domain.quality import (
    LOSSLESS_SOURCE_QUALITY,
    STANDARD_CHROMINANCE,
    STANDARD_LUMINANCE,
    estimate_jpeg_quality,
    estimate_webp_quality,
    ijg_table,
    output_quality,
)

ALL_QUALITIES = range(1, 101)


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """Photo-like: smooth gradients plus sensor-like noise."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:64, 0:64]
    base = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(float)
    return Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))


def tables_of(image: Image.Image, **save_options: object) -> dict[int, list[int]]:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **save_options)
    with Image.open(io.BytesIO(buffer.getvalue())) as saved:
        return dict(saved.quantization)


def test_pillow_reports_tables_in_natural_order(photo: Image.Image) -> None:
    # At quality 50 the IJG scale is 100%, so the stored table is the standard one verbatim;
    # its first row (not the zigzag sequence 16, 11, 12, 14, ...) proves the order.
    tables = tables_of(photo, quality=50)

    assert tables[0] == list(STANDARD_LUMINANCE)
    assert tables[1] == list(STANDARD_CHROMINANCE)


def test_ijg_table_at_50_is_the_base_table() -> None:
    assert ijg_table(STANDARD_LUMINANCE, 50) == list(STANDARD_LUMINANCE)


def test_ijg_table_at_100_is_all_ones() -> None:
    assert ijg_table(STANDARD_LUMINANCE, 100) == [1] * 64


def test_ijg_table_entries_are_clamped_to_baseline_range() -> None:
    assert ijg_table(STANDARD_LUMINANCE, 1) == [255] * 64


def test_ijg_table_uses_libjpeg_integer_scaling() -> None:
    # quality 10: scale 5000 // 10 = 500; 16 * 500 + 50 = 8050 -> 80; 11 -> 55; 10 -> 50.
    assert ijg_table(STANDARD_LUMINANCE, 10)[:3] == [80, 55, 50]


@pytest.mark.parametrize("quality", ALL_QUALITIES)
def test_colour_jpeg_quality_is_estimated_exactly(photo: Image.Image, quality: int) -> None:
    assert estimate_jpeg_quality(tables_of(photo, quality=quality)) == quality


@pytest.mark.parametrize("quality", ALL_QUALITIES)
def test_444_jpeg_quality_is_estimated_exactly(photo: Image.Image, quality: int) -> None:
    tables = tables_of(photo, quality=quality, subsampling="4:4:4")

    assert estimate_jpeg_quality(tables) == quality


@pytest.mark.parametrize("quality", [5, 33, 67, 90])
def test_420_and_422_jpeg_quality_is_estimated_exactly(photo: Image.Image, quality: int) -> None:
    for subsampling in ("4:2:0", "4:2:2"):
        tables = tables_of(photo, quality=quality, subsampling=subsampling)
        assert estimate_jpeg_quality(tables) == quality


@pytest.mark.parametrize("quality", ALL_QUALITIES)
def test_greyscale_jpeg_quality_is_estimated_from_its_one_table(
    photo: Image.Image, quality: int
) -> None:
    tables = tables_of(photo.convert("L"), quality=quality)

    assert list(tables) == [0]
    assert estimate_jpeg_quality(tables) == quality


def test_tables_not_made_by_ijg_scaling_get_the_closest_quality() -> None:
    luminance = ijg_table(STANDARD_LUMINANCE, 80)
    chrominance = ijg_table(STANDARD_CHROMINANCE, 80)
    luminance[5] += 3
    luminance[40] -= 2
    chrominance[63] += 4

    assert estimate_jpeg_quality({0: luminance, 1: chrominance}) == 80


def test_a_tie_goes_to_the_higher_quality() -> None:
    q99, q100 = ijg_table(STANDARD_LUMINANCE, 99), ijg_table(STANDARD_LUMINANCE, 100)
    differing = [i for i in range(64) if q99[i] != q100[i]]
    halfway = list(q100)
    for i in differing[: len(differing) // 2]:
        halfway[i] = q99[i]
    distance = {
        q: sum(abs(a - b) for a, b in zip(halfway, t, strict=True))
        for q, t in ((99, q99), (100, q100))
    }
    assert distance[99] == distance[100] > 0  # the premise of this test

    assert estimate_jpeg_quality({0: halfway}) == 100


def test_a_jpeg_without_tables_cannot_be_estimated() -> None:
    with pytest.raises(ValueError, match="quantization"):
        estimate_jpeg_quality({})


def test_a_table_of_the_wrong_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="64"):
        estimate_jpeg_quality({0: [1] * 63})


@pytest.mark.parametrize(
    ("source", "expected"),
    [(1, 1), (2, 1), (3, 2), (50, 25), (75, 38), (85, 43), (92, 46), (100, 50)],
)
def test_output_quality_is_half_rounded_up(source: int, expected: int) -> None:
    assert output_quality(source) == expected


@pytest.mark.parametrize(("source", "expected"), [(0, 1), (-5, 1), (250, 50)])
def test_output_quality_stays_in_range_for_out_of_range_input(source: int, expected: int) -> None:
    assert output_quality(source) == expected


def test_a_source_without_quality_is_encoded_at_50() -> None:
    assert output_quality(LOSSLESS_SOURCE_QUALITY) == 50


def test_webp_quantizer_zero_means_quality_100() -> None:
    assert estimate_webp_quality([0, 0, 0, 0]) == 100


def test_webp_coarsest_quantizer_means_quality_1() -> None:
    assert estimate_webp_quality([127]) == 1


def test_webp_single_segment_inverts_libwebp_quality_model() -> None:
    # libwebp at quality 50: c = (0.5 * 2/3) ** (1/3) = 0.693; quantizer int(127 * 0.307) = 38.
    # Read back from the bottom of the truncated interval, which errs upwards by design.
    assert 50 <= estimate_webp_quality([38]) <= 52


def test_webp_estimate_falls_as_quantizers_grow() -> None:
    estimates = [estimate_webp_quality([q, max(0, q - 10)]) for q in range(10, 128)]

    assert estimates == sorted(estimates, reverse=True)


def test_webp_estimate_without_quantizers_is_rejected() -> None:
    with pytest.raises(ValueError, match="quantizer"):
        estimate_webp_quality([])
