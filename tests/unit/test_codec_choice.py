"""Which codec a process runs is never a silent choice: the DCT path is logged at start-up,
a fallback to Pillow is logged as an error, and /healthz says which one runs."""

from __future__ import annotations

import logging
import sys

import pytest

from local_profile.sample_images import photo_jpeg
from shared.bootstrap import build_codec, codec_name
from shared.config import Limits


def test_the_dct_path_is_chosen_and_said_where_the_module_loads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="shared.bootstrap"):
        codec = build_codec(Limits())
    assert codec_name(codec) == "dct"
    (line,) = [r for r in caplog.records if r.getMessage().startswith("image codec:")]
    assert line.levelno == logging.INFO and "DCT re-quantization" in line.getMessage()


def test_a_fallback_to_pillow_is_an_error_and_still_compresses(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in a function whose staged wheel is missing: the module cannot be imported.
    monkeypatch.setitem(sys.modules, "jpeg_requantize", None)
    monkeypatch.delitem(sys.modules, "shared.adapters.codec.jpeg_requantizer", raising=False)
    with caplog.at_level(logging.INFO, logger="shared.bootstrap"):
        codec = build_codec(Limits())
    (line,) = [r for r in caplog.records if r.getMessage().startswith("image codec:")]
    assert line.levelno == logging.ERROR
    assert "Pillow only" in line.getMessage()
    assert codec_name(codec) == "pillow"
    result = codec.compress(photo_jpeg(64, 48, 80))
    assert (result.source_quality, result.output_quality) == (80, 40)
