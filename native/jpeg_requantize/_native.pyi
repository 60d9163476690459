from collections.abc import Sequence

LIBJPEG_VERSION: int

class Unsuitable(ValueError): ...

def requantize(
    data: bytes,
    luminance: Sequence[int],
    chrominance: Sequence[int],
    icc_profile: bytes | None = None,
    *,
    optimize_huffman: bool = False,
) -> bytes: ...
