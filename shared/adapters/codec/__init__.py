"""Codecs: fetched bytes in, the same picture at half its quality out (`shared.ports.ImageCodec`).

- `pillow_codec.PillowCodec`: every supported format, through pixels;
- `jpeg_requantizer.JpegRequantizer`: plain JPEGs re-quantized in the DCT domain (the C module
  in `native/`), everything else handed to the general codec;
- `dimensions`, `jpeg_header`, `vp8_header`, `image_signatures`: what both read from the bytes
  before anything is decoded (pixel cap, tables, quantizers, the format the bytes really are).

Failures are `shared.domain.errors.ImageFailure`, never transient.
"""
