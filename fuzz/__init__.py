"""`make fuzz`: coverage-guided fuzzing of the codec under AddressSanitizer and UBSan.

- `requantize_fuzzer.c`: libFuzzer on the C core of `jpeg_requantize` (DCT path), alone;
- `codec_fuzzer.py`: atheris on the codec entry points, the shipped one (the DCT path with
  Pillow behind it, its C module rebuilt with the sanitizers) and the general one (Pillow);
- `seeds.py`: the seed corpus, every kind of image the tests make, truncated and bit-flipped;
- `run.py`: builds the targets and runs them for a given time (`make fuzz`, and the short run
  in `make test`).
"""
