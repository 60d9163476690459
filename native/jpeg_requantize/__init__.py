"""Re-quantize a JPEG to other quantization tables in the DCT domain (see _native.c)."""

from jpeg_requantize._native import LIBJPEG_VERSION, Unsuitable, requantize

__all__ = ["LIBJPEG_VERSION", "Unsuitable", "requantize"]
