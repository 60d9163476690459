"""The image codec: bytes of a fetched image in, the same picture at half its quality out.

Everything that decodes pixels is here, over Pillow. Plain JPEGs usually take a faster road
that never decodes them (`jpeg_requantizer.py`), which hands everything else back to this
codec; both follow the same policy (SPEC "Images"):

- The bytes decide the format. Only JPEG (and MPO, which is how Pillow names camera JPEGs that
  carry a second image), PNG, GIF, WebP, BMP, TIFF and, where this Pillow has it, AVIF are
  opened, and HEIF/HEIC where pillow-heif is installed (phones save photos as HEIC). Pillow's
  other plugins never see hostile bytes: EPS could start Ghostscript, and the rarer parsers
  are not worth the exposure for formats nobody serves as product photos.
- The pixel cap is checked on the header, before anything is decoded, and so is a JPEG's
  number of scans (`jpeg_scans`: scan bombs).
- JPEG sources have their quality estimated from their quantization tables, lossy WebP from
  its VP8 quantizers (an estimate that errs upwards, see `estimate_webp_quality`). Everything
  else, AVIF and HEIC included (their quantizers sit deep in the AV1 or HEVC bitstream and
  the mapping from quality differs between encoders), counts as quality 100.
- The output is a baseline JPEG unless the picture really uses transparency, in which case it
  is a lossy WebP with alpha (up to MAX_TRANSPARENT_PIXELS: libwebp needs about 18 bytes a
  pixel; larger ones are flattened onto white into a JPEG). Either way at
  `output_quality(source_quality)`.
- EXIF orientation is applied; the ICC profile is kept (or, for CMYK, converted to sRGB); all
  other metadata is dropped. Animated sources keep their first frame. Nothing is resized.
"""

from __future__ import annotations

import logging
from functools import cache
from io import BytesIO
from typing import Final, cast

import numpy as np
from PIL import Image, ImageCms, JpegImagePlugin, UnidentifiedImageError, features

from shared.adapters.codec.dimensions import check_dimensions
from shared.adapters.codec.image_signatures import allowed_signature, unsupported_signature
from shared.adapters.codec.jpeg_scans import check_scan_count
from shared.adapters.codec.vp8_header import vp8_frame_quantizers
from shared.config import Limits
from shared.domain.errors import ErrorCode, ImageFailure
from shared.domain.model import CompressedImage
from shared.domain.quality import (
    LOSSLESS_SOURCE_QUALITY,
    estimate_jpeg_quality,
    estimate_webp_quality,
    output_quality,
)

log = logging.getLogger(__name__)


def _register_heif() -> bool:
    # pillow-heif is a requirement, but a deployment without it should refuse HEIC as
    # unsupported (as before it was added) rather than fail to start.
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        log.info("pillow-heif is not installed: HEIF/HEIC images are refused as unsupported")
        return False
    # Only the opener: Pillow learns to read HEIF, nothing to save it is needed.
    register_heif_opener()
    return True


# MPO is not listed: Pillow has no opener of its own for it; the JPEG opener returns an
# MpoImageFile when the file carries several pictures.
ALLOWED_FORMATS: Final[tuple[str, ...]] = (
    "JPEG",
    "PNG",
    "GIF",
    "WEBP",
    "BMP",
    "TIFF",
    *(("AVIF",) if features.check("avif") else ()),
    *(("HEIF",) if _register_heif() else ()),
)

_JPEG_SOI: Final = b"\xff\xd8"

# WebP describes smaller pictures than JPEG (dimensions.JPEG_MAX_SIDE).
WEBP_MAX_SIDE: Final = 16_383

# What Pillow's JpegImagePlugin.get_sampling answers for 4:4:4 (no chroma subsampling).
_SAMPLING_444: Final = 0

_ORIENTATION_TAG: Final = 0x0112
_TRANSPOSE_FOR_ORIENTATION: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# Pillow modes that carry 16 or 32 bits of grey; their full range is scaled into 8 bits.
_WIDE_GREY_MODES: Final = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


class PillowCodec:
    """`shared.ports.ImageCodec` over Pillow. Stateless apart from its limits: thread-safe."""

    def __init__(self, limits: Limits) -> None:
        self._max_pixels = limits.max_image_pixels
        self._max_scans = limits.max_jpeg_scans
        self._max_transparent_pixels = limits.max_transparent_pixels
        # Pillow refuses, process-wide, images above 2 * MAX_IMAGE_PIXELS (89.5 M by default)
        # and warns above it. Our own cap is checked on every image, so Pillow's must never be
        # the stricter of the two: raise it to ours if ours is higher, never lower it (other
        # code in the process may rely on it), and never set it per call (not thread-safe).
        current = Image.MAX_IMAGE_PIXELS
        if current is not None and current < self._max_pixels:
            Image.MAX_IMAGE_PIXELS = self._max_pixels

    def compress(self, data: bytes) -> CompressedImage:
        try:
            return self._compress(data)
        except ImageFailure:
            raise
        except Image.DecompressionBombError as exc:
            raise ImageFailure(ErrorCode.TOO_MANY_PIXELS, str(exc)) from exc
        except MemoryError as exc:
            # Not the image's fault under the pixel cap, and not worth a retry either: report
            # it as ours, permanently, instead of letting the worker die on it.
            raise ImageFailure(ErrorCode.INTERNAL, "out of memory while decoding") from exc

    def _compress(self, data: bytes) -> CompressedImage:
        if data.startswith(_JPEG_SOI):
            # Before Pillow's own marker loop (Python, a few microseconds a segment) sees it.
            check_scan_count(data, self._max_scans)
        # The context manager matters only for its end: the encoder below must run while the
        # source is still open, since a picture that needed no conversion *is* the source.
        with _open(data) as source:
            check_dimensions(source.size, self._max_pixels)
            source_format = "jpeg" if source.format in ("JPEG", "MPO") else str(source.format)
            source_format = source_format.lower()
            try:
                animated = bool(getattr(source, "is_animated", False))
            except Exception:  # a broken second frame does not spoil the first
                animated = False
            try:
                # Counting frames may have walked the file; the first frame is the one kept.
                source.seek(0)
                source_quality = _source_quality(source, data)
                subsampling = _subsampling_for(source)
                picture, icc_profile = _decode(source)
            except (ImageFailure, Image.DecompressionBombError, MemoryError):
                raise
            except Exception as exc:
                # Truncated data, bad Huffman codes, CRC errors, unknown compression...
                # every decoder error is the file's fault, and permanent.
                raise ImageFailure(
                    ErrorCode.CORRUPT_IMAGE, f"the {source_format} data cannot be decoded: {exc}"
                ) from exc

            quality = output_quality(source_quality)
            if picture.mode == "RGBA" and not self._webp_takes(picture):
                picture = _flatten_on_white(picture)
                # The decoded RGBA (often the source itself) is not needed any more: its
                # memory goes back before the encoder takes its own.
                source.close()
            encoded, output_format = _encode(picture, quality, icc_profile, subsampling)
        return CompressedImage(
            data=encoded,
            output_format=output_format,
            content_type=f"image/{output_format}",
            extension="jpg" if output_format == "jpeg" else output_format,
            width=picture.width,
            height=picture.height,
            source_format=source_format,
            source_quality=source_quality,
            output_quality=quality,
            animated=animated,
        )

    def _webp_takes(self, picture: Image.Image) -> bool:
        # WebP cannot describe sides above 16,383 pixels, and libwebp's lossy encoder with its
        # lossless alpha plane holds about 18 bytes a pixel (BENCHMARKS.md): 900 MB for a
        # 50-megapixel picture. Above MAX_TRANSPARENT_PIXELS the picture is flattened instead.
        width, height = picture.size
        return max(width, height) <= WEBP_MAX_SIDE and width * height <= (
            self._max_transparent_pixels
        )


# --------------------------------------------------------------------------- identification


def _open(data: bytes) -> Image.Image:
    """Identify the bytes among the allowed formats, reading headers only."""
    try:
        # BytesIO over bytes shares the buffer until written to: no copy of the download.
        return Image.open(BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        pass
    except Image.DecompressionBombError:
        raise
    except Exception as exc:
        # A plugin accepted the signature, then choked on the header.
        raise ImageFailure(ErrorCode.CORRUPT_IMAGE, f"unreadable image header: {exc}") from exc

    claimed = allowed_signature(data, ALLOWED_FORMATS)
    if claimed is not None:
        raise ImageFailure(ErrorCode.CORRUPT_IMAGE, f"starts like a {claimed} but is not one")
    other = unsupported_signature(data)
    if other is not None:
        raise ImageFailure(ErrorCode.UNSUPPORTED_FORMAT, f"{other} is not a supported format")
    raise ImageFailure(ErrorCode.NOT_AN_IMAGE, "the data is not an image")


# --------------------------------------------------------------------------- source quality


def _source_quality(source: Image.Image, data: bytes) -> int:
    if source.format in ("JPEG", "MPO"):
        return estimate_jpeg_quality(getattr(source, "quantization", {}))
    if source.format == "WEBP":
        frame = vp8_frame_quantizers(data)
        if frame is not None:
            quantizers, uv_dc_delta = frame
            return estimate_webp_quality(quantizers, uv_dc_delta=uv_dc_delta)
    return LOSSLESS_SOURCE_QUALITY


def _subsampling_for(source: Image.Image) -> str:
    # Pillow's default is 4:2:0; a source that spent the bytes on full-resolution colour (often
    # red text or fine coloured patterns) keeps 4:4:4 so that halving its quality does not also
    # smear its colours.
    if (
        isinstance(source, JpegImagePlugin.JpegImageFile)
        and JpegImagePlugin.get_sampling(source) == _SAMPLING_444
    ):
        return "4:4:4"
    return "4:2:0"


# --------------------------------------------------------------------------- pixels


def _decode(source: Image.Image) -> tuple[Image.Image, bytes | None]:
    """Decode the first frame into L, RGB or RGBA, upright, with the ICC profile that fits it."""
    icc_profile = source.info.get("icc_profile") or None
    source.load()
    # After load: a PNG may keep its eXIf chunk after the pixel data.
    orientation = _orientation(source)

    picture, icc_profile = _normalise_mode(source, icc_profile)
    transpose = _TRANSPOSE_FOR_ORIENTATION.get(orientation)
    if transpose is not None:
        picture = picture.transpose(transpose)
    if icc_profile is not None and _icc_colour_space(icc_profile) != _ICC_SPACE_FOR_MODE.get(
        picture.mode
    ):
        # A grey profile on a picture that had to become RGB (grey with transparency), or any
        # profile that does not describe the pixels it would travel with, would make viewers
        # misrender the picture; no profile (sRGB assumed) is the lesser evil.
        icc_profile = None
    return picture, icc_profile


def _orientation(source: Image.Image) -> int:
    try:
        value = source.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # broken EXIF is not a broken picture: show it as stored
        log.debug("unreadable EXIF ignored", exc_info=True)
        return 1
    return value if isinstance(value, int) else 1


_ICC_SPACE_FOR_MODE: Final = {"L": b"GRAY", "RGB": b"RGB ", "RGBA": b"RGB "}


def _icc_colour_space(profile: bytes) -> bytes:
    # Bytes 16..19 of every ICC profile header name the colour space of its device side.
    return profile[16:20]


_GREY_MODES: Final = frozenset({"1", "L", "LA", "La"})


def _normalise_mode(picture: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    """Bring any decoded mode to L, RGB or RGBA; alpha only where some pixel uses it."""
    mode = picture.mode
    if mode in _WIDE_GREY_MODES:
        return _scale_wide_grey(picture), icc
    if mode == "CMYK":
        return _cmyk_to_rgb(picture, icc)
    if mode == "F":
        # 32-bit float (TIFF) has no agreed range; Pillow's conversion clips it to 0..255.
        return picture.convert("L"), icc
    grey = mode in _GREY_MODES
    try:
        if not picture.has_transparency_data:
            if mode in ("L", "RGB"):
                return picture, icc
            return picture.convert("L" if grey else "RGB"), icc  # 1, P, RGBX, YCbCr, LAB...
        # An alpha channel that is 255 everywhere, or a palette/tRNS transparency that no pixel
        # uses, is not transparency: such pictures become JPEGs like any other.
        target = "LA" if grey else "RGBA"
        # convert() copies even to the same mode: at 50 megapixels that copy is 200 MB.
        # (Converting La/RGBa un-premultiplies them.)
        with_alpha = picture if mode == target else picture.convert(target)
        if not _uses_alpha(with_alpha):
            return with_alpha.convert("L" if grey else "RGB"), icc
        # WebP has no grey-with-alpha; such pictures travel as RGBA.
        return (with_alpha.convert("RGBA") if grey else with_alpha), icc
    except ValueError as exc:
        raise ImageFailure(
            ErrorCode.UNSUPPORTED_FORMAT, f"pixels in mode {mode} are not supported"
        ) from exc


def _uses_alpha(picture: Image.Image) -> bool:
    # getextrema works band by band in C, without copying the alpha band out.
    # Only called on LA and RGBA pictures, so extrema come per band, alpha last.
    *_, (alpha_min, _alpha_max) = cast("tuple[tuple[int, int], ...]", picture.getextrema())
    return alpha_min < 255


def _scale_wide_grey(picture: Image.Image) -> Image.Image:
    # Pillow's convert("L") clips 16-bit values to 255, turning anything above 1/256 of full
    # scale white. Keep the high byte instead, as Pillow itself does for 16-bit RGB.
    samples = np.asarray(picture)
    if picture.mode == "I":
        # 32-bit grey is how 16-bit PNGs and TIFFs came out of older Pillows; read it as such.
        samples = np.clip(samples, 0, 0xFFFF)
    return Image.fromarray((samples >> 8).astype(np.uint8), mode="L")


@cache
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _cmyk_to_rgb(picture: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    # CMYK values only mean a colour through the press profile they were separated for. With
    # that profile, convert properly and tag the result sRGB; without one (or with one that
    # littleCMS rejects), Pillow's naive formula is the best available guess, left untagged.
    if icc is not None and _icc_colour_space(icc) == b"CMYK":
        try:
            converted = ImageCms.profileToProfile(
                picture,
                ImageCms.ImageCmsProfile(BytesIO(icc)),
                _srgb_profile(),
                renderingIntent=ImageCms.Intent.PERCEPTUAL,
                outputMode="RGB",
            )
        except (ImageCms.PyCMSError, OSError, ValueError):
            log.info("CMYK ICC profile unusable; converting without it", exc_info=True)
        else:
            if converted is not None:
                return converted, _srgb_profile().tobytes()
    return picture.convert("RGB"), None


# --------------------------------------------------------------------------- encoding


def _flatten_on_white(picture: Image.Image) -> Image.Image:
    """A transparent picture WebP cannot take (too wide, or too many pixels for the memory it
    would need), as an opaque one on white: deliverable as a JPEG, which beats failing an
    image that is within every limit we announce. The RGBA picture is its own mask, so the
    only new copy is the RGB result (7 bytes a pixel in all, not 8 with a separate alpha)."""
    flat = Image.new("RGB", picture.size, "white")
    flat.paste(picture, mask=picture)
    return flat


def _encode(
    picture: Image.Image, quality: int, icc_profile: bytes | None, subsampling: str
) -> tuple[bytes, str]:
    # A fresh info dict: Pillow's JPEG writer falls back to picture.info for some metadata
    # (the COM comment), and nothing from the source but the ICC profile may reach the output.
    picture.info = {}
    extra = {"icc_profile": icc_profile} if icc_profile else {}
    output = BytesIO()
    try:
        if picture.mode == "RGBA":
            picture.save(output, "WEBP", quality=quality, method=4, exact=False, **extra)
            return output.getvalue(), "webp"
        # Baseline, not optimised: the fast path. Speed and size are tuned separately.
        picture.save(
            output,
            "JPEG",
            quality=quality,
            optimize=False,
            progressive=False,
            subsampling=subsampling,
            **extra,
        )
        return output.getvalue(), "jpeg"
    except (OSError, ValueError) as exc:
        raise ImageFailure(ErrorCode.INTERNAL, f"encoding failed: {exc}") from exc
