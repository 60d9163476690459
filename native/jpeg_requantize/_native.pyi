from collections.abc import Sequence

LIBJPEG_VERSION: int

class Unsuitable(ValueError): ...
class TooManyScans(Unsuitable): ...

def requantize(
    data: bytes,
    luminance: Sequence[int],
    chrominance: Sequence[int],
    icc_profile: bytes | None = None,
    *,
    optimize_huffman: bool = False,
    progressive: bool = False,
    max_scans: int = 0,
    max_pixels: int = 0,
) -> bytes: ...
