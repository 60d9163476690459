"""atheris target: the codec's entry points, fed whatever bytes a stranger's URL could serve.

`CODEC_FUZZ_TARGET` picks the entry point: `shipped` is `build_codec` (the DCT path, whose C
module `fuzz.run` rebuilt with AddressSanitizer and UBSan, with Pillow behind it), `general`
is `PillowCodec` alone. Every argument goes to libFuzzer.

The contract under test (shared.ports.ImageCodec): `compress` either returns an image or
raises `ImageFailure`; anything else escaping is a finding, and so is an output that does not
decode to the size the result announces. Python code of the codec and of Pillow's plugins is
instrumented for coverage; the C module reports its own.
"""

from __future__ import annotations

import io
import os
import sys

import atheris

with atheris.instrument_imports(include=["shared", "PIL"]):
    from PIL import Image

    from shared.adapters.codec.pillow_codec import PillowCodec
    from shared.bootstrap import build_codec
    from shared.config import Limits
    from shared.domain.errors import ImageFailure

# A lower pixel cap than production's: a header claiming 50 megapixels would make each such
# input a second's work and teach the fuzzer nothing the pixel-cap tests do not already show.
# Optimal Huffman tables on, so that their second pass (off by default) is fuzzed too.
LIMITS = Limits(max_image_pixels=2_000_000, optimal_huffman_tables=True)
TARGET = os.environ.get("CODEC_FUZZ_TARGET", "shipped")
CODEC = build_codec(LIMITS) if TARGET == "shipped" else PillowCodec(LIMITS)


def test_one_input(data: bytes) -> None:
    try:
        result = CODEC.compress(data)
    except ImageFailure:
        return
    with Image.open(io.BytesIO(result.data)) as output:
        output.load()
        if output.size != (result.width, result.height):
            raise AssertionError(f"{output.size} written, {result.width}x{result.height} said")
        if output.format.lower() != result.output_format:
            raise AssertionError(f"{output.format} written, {result.output_format} said")


def main() -> None:
    import jpeg_requantize

    print(
        f"codec fuzzer: {TARGET} codec {type(CODEC).__name__}, C module at "
        f"{jpeg_requantize.__file__}",
        file=sys.stderr,
        flush=True,
    )
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
