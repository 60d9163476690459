"""Re-quantize a JPEG to other quantization tables in the DCT domain (see requantize.c)."""

from jpeg_requantize._native import LIBJPEG_VERSION, TooManyScans, Unsuitable, requantize

__all__ = ["LIBJPEG_VERSION", "TooManyScans", "Unsuitable", "requantize"]
