"""Codec benchmark: every candidate path against Pillow-naive, measured in the same run.

Corpus: photo-like JPEGs of 12 to 24 megapixels (`sample_images.photo_jpeg`: gradients, soft
shapes, hard edges and sensor noise), 4:2:0 as cameras and Pillow write them. Every path
re-encodes each photo at the quality the service would choose (half the source's).

- Throughput: megapixels per second on one core (vips and libjpeg-turbo are told to use one
  thread), the median of several rounds in which the paths take turns, so that a burst of
  other load on the machine spreads over all of them.
- Bytes: each output's size against Pillow-naive's output of the same photo.
- Quality: SSIM (scikit-image, on RGB) of the decoded output against the decoded source,
  minus Pillow-naive's.
- Peak memory: one 24-megapixel photo compressed in a fresh process per path: `ru_maxrss`
  after minus before, against the decoded RGB picture (72 MB).

Huffman tables (`huffman_benchmark`): bytes only, on real photographs (scikit-image's
`skimage.data`, as shipped and 3x upscaled, saved by Pillow at q75, q85 and q92), each path's
output against Pillow-naive's, and whether the pixels and the quantization tables stay exactly
those of the same path with standard tables.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from local_profile import sample_images
from shared.adapters.codec.jpeg_requantizer import with_optimal_huffman_tables
from shared.adapters.codec.pillow_codec import PillowCodec
from shared.bootstrap import build_codec
from shared.config import Limits
from shared.domain.quality import (
    STANDARD_CHROMINANCE,
    STANDARD_LUMINANCE,
    estimate_jpeg_quality,
    ijg_table,
    output_quality,
)

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "docs" / "bench-codec.png"
BASELINE = "Pillow-naive"
SHIPPED = "Service codec (DCT re-quantization)"
PILLOW_PATH = "Service codec, Pillow path (fallback)"
OPTIMAL = "Service codec with OPTIMAL_HUFFMAN_TABLES=1"
OPTIMAL_PILLOW_PATH = "Service codec, Pillow path, with OPTIMAL_HUFFMAN_TABLES=1"
PROGRESSIVE = "DCT re-quantization, optimal tables, progressive (not shipped)"

# (width, height, source quality): 12, 16, 20 and 24 megapixels.
CORPUS = [(4000, 3000, 90), (4896, 3264, 85), (5472, 3648, 92), (6000, 4000, 75)]
ROUNDS = 7
MEMORY_PHOTO = (6000, 4000, 90)

TARGET_SPEEDUP = 1.7
TARGET_BYTES = 0.05
TARGET_SSIM = 0.01
TARGET_MEMORY = 1.5


def pillow_naive(data: bytes, quality: int) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(data)).save(out, "JPEG", quality=quality)
    return out.getvalue()


def service_codec() -> Callable[[bytes, int], bytes]:
    codec = build_codec(Limits())
    return lambda data, _quality: codec.compress(data).data


def service_codec_optimal() -> Callable[[bytes, int], bytes]:
    codec = build_codec(Limits(optimal_huffman_tables=True))
    return lambda data, _quality: codec.compress(data).data


def pillow_codec() -> Callable[[bytes, int], bytes]:
    codec = PillowCodec(Limits())
    return lambda data, _quality: codec.compress(data).data


def pillow_codec_optimal() -> Callable[[bytes, int], bytes]:
    """The Pillow path as the codec runs it with OPTIMAL_HUFFMAN_TABLES=1 for what the DCT path
    leaves: Pillow's JPEG, then its Huffman tables made optimal in a lossless second pass."""
    codec = PillowCodec(Limits())
    return lambda data, _quality: with_optimal_huffman_tables(codec.compress(data)).data


def dct_path(*, optimize: bool, progressive: bool = False) -> Callable[[bytes, int], bytes]:
    from jpeg_requantize import requantize

    def run(data: bytes, quality: int) -> bytes:
        luminance = ijg_table(STANDARD_LUMINANCE, quality)
        chrominance = ijg_table(STANDARD_CHROMINANCE, quality)
        return requantize(
            data, luminance, chrominance, optimize_huffman=optimize, progressive=progressive
        )

    return run


def pillow_naive_optimized(data: bytes, quality: int) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(data)).save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()


def pyvips_path() -> Callable[[bytes, int], bytes]:
    # One worker thread: the figures are per core. Read when libvips loads.
    os.environ.setdefault("VIPS_CONCURRENCY", "1")
    import pyvips

    pyvips.cache_set_max(0)

    def run(data: bytes, quality: int) -> bytes:
        image = pyvips.Image.new_from_buffer(data, "", access="sequential")
        return bytes(image.jpegsave_buffer(Q=quality, keep="none"))

    return run


def simplejpeg_path() -> Callable[[bytes, int], bytes]:
    import simplejpeg

    def run(data: bytes, quality: int) -> bytes:
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB")
        return bytes(simplejpeg.encode_jpeg(pixels, quality=quality, colorsubsampling="420"))

    return run


# Name -> how to build the path (in this process or in a child for the memory figure).
PATHS: dict[str, Callable[[], Callable[[bytes, int], bytes]]] = {
    BASELINE: lambda: pillow_naive,
    SHIPPED: service_codec,
    PILLOW_PATH: pillow_codec,
    OPTIMAL: service_codec_optimal,
    PROGRESSIVE: lambda: dct_path(optimize=True, progressive=True),
    "pyvips (pyvips-binary)": pyvips_path,
    "simplejpeg": simplejpeg_path,
}


@dataclass
class PathFigures:
    name: str
    seconds: list[float] = field(default_factory=list)  # per photo, median of the rounds
    megapixels: list[float] = field(default_factory=list)
    bytes_ratio: list[float] = field(default_factory=list)  # against Pillow-naive
    ssim: list[float] = field(default_factory=list)
    peak_bytes: int = 0

    @property
    def throughput(self) -> float:
        return sum(self.megapixels) / sum(self.seconds)


@dataclass
class CodecReport:
    figures: dict[str, PathFigures]
    decoded_rgb_bytes: int
    corpus: list[tuple[int, int, int, int]]  # width, height, source quality, bytes

    @property
    def baseline(self) -> PathFigures:
        return self.figures[BASELINE]


def _decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _ssim(reference: np.ndarray, data: bytes) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(reference, _decoded(data), channel_axis=2, data_range=255))


def measure_speed_size_quality(rounds: int = ROUNDS) -> tuple[dict[str, PathFigures], list]:
    runners = {name: build() for name, build in PATHS.items()}
    figures = {name: PathFigures(name) for name in PATHS}
    corpus = []
    for seed, (width, height, source_quality) in enumerate(CORPUS):
        data = sample_images.photo_jpeg(width, height, source_quality, seed=seed)
        quality = output_quality(estimate_jpeg_quality(Image.open(io.BytesIO(data)).quantization))
        corpus.append((width, height, source_quality, len(data)))
        timings: dict[str, list[float]] = {name: [] for name in PATHS}
        outputs: dict[str, bytes] = {}
        for name, run in runners.items():  # warm-up, and the output kept for size and SSIM
            outputs[name] = run(data, quality)
        for _ in range(rounds):
            for name, run in runners.items():
                started = time.perf_counter()
                run(data, quality)
                timings[name].append(time.perf_counter() - started)
        source_pixels = _decoded(data)
        baseline_ssim = _ssim(source_pixels, outputs[BASELINE])
        for name in PATHS:
            entry = figures[name]
            entry.seconds.append(statistics.median(timings[name]))
            entry.megapixels.append(width * height / 1e6)
            entry.bytes_ratio.append(len(outputs[name]) / len(outputs[BASELINE]))
            score = baseline_ssim if name == BASELINE else _ssim(source_pixels, outputs[name])
            entry.ssim.append(score)
        print(
            f"  {width}x{height} q{source_quality}: "
            + ", ".join(f"{n}: {statistics.median(timings[n]) * 1000:.0f} ms" for n in PATHS),
            flush=True,
        )
    return figures, corpus


# Run in a child started by a shell: Linux carries ru_maxrss across exec from the parent,
# which after building the corpus is far above what one image needs (see
# tests/unit/test_codec_memory.py).
_CLEAN_CHILD = ["/bin/sh", "-c", '"$@"; exit $?', "sh"]  # `; exit`: the shell forks, not execs
_MEMORY_CHILD = """
import io, json, resource, sys
from PIL import Image
from bench.codec import PATHS
name, path, quality = sys.argv[1], sys.argv[2], int(sys.argv[3])
run = PATHS[name]()
for mode, kind in (("RGB", "JPEG"), ("RGBA", "PNG")):
    warm_up = io.BytesIO()
    Image.new(mode, (64, 64)).save(warm_up, kind)
    try:
        run(warm_up.getvalue(), quality)
    except Exception:
        pass  # a JPEG-only path; the libraries are loaded all the same
data = open(path, "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
run(data, quality)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_bytes": (after - before) * 1024}))
"""


def measure_peak_memory(work_dir: Path) -> tuple[dict[str, int], int]:
    width, height, source_quality = MEMORY_PHOTO
    data = sample_images.photo_jpeg(width, height, source_quality, seed=99)
    quality = output_quality(source_quality)
    photo = work_dir / "memory.jpg"
    photo.write_bytes(data)
    peaks = {}
    arguments = [str(photo), str(quality)]
    for name in PATHS:
        samples = []
        for _ in range(3):
            finished = subprocess.run(
                [*_CLEAN_CHILD, sys.executable, "-c", _MEMORY_CHILD, name, *arguments],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=300,
                check=True,
            )
            samples.append(json.loads(finished.stdout)["peak_bytes"])
        peaks[name] = int(statistics.median(samples))
    return peaks, width * height * 3


def codec_benchmark(work_dir: Path) -> CodecReport:
    print("codec benchmark: speed, size and quality", flush=True)
    figures, corpus = measure_speed_size_quality()
    print("codec benchmark: peak memory", flush=True)
    peaks, decoded = measure_peak_memory(work_dir)
    for name, peak in peaks.items():
        figures[name].peak_bytes = peak
    report = CodecReport(figures, decoded, corpus)
    draw_chart(report, CHART)
    return report


def draw_chart(report: CodecReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report.figures)
    labels = [name.replace(" (", "\n(").replace(", ", ",\n") for name in names]
    colours = ["#9e9e9e" if name == BASELINE else "#1f77b4" for name in names]
    colours[names.index(SHIPPED)] = "#2ca02c"
    colours[names.index(OPTIMAL)] = "#98df8a"
    figure, (speed, memory) = plt.subplots(1, 2, figsize=(13, 5.2))
    throughput = [report.figures[name].throughput for name in names]
    speed.barh(labels, throughput, color=colours)
    speed.axvline(report.baseline.throughput, color="#555", linestyle=":", linewidth=1)
    speed.axvline(
        report.baseline.throughput * TARGET_SPEEDUP, color="#d62728", linestyle="--", linewidth=1
    )
    for y, value in enumerate(throughput):
        ratio = value / report.baseline.throughput
        speed.text(value, y, f" {value:.0f} MP/s ({ratio:.2f}x)", va="center", fontsize=9)
    speed.set_xlabel("megapixels per second, one core (dashed: 1.7x Pillow-naive)")
    speed.set_title("Throughput, 12-24 MP photo-like JPEGs")
    speed.invert_yaxis()
    speed.set_xlim(0, max(throughput) * 1.45)
    peaks_mb = [report.figures[name].peak_bytes / 1e6 for name in names]
    memory.barh(labels, peaks_mb, color=colours)
    decoded_mb = report.decoded_rgb_bytes / 1e6
    memory.axvline(decoded_mb, color="#555", linestyle=":", linewidth=1)
    memory.axvline(decoded_mb * TARGET_MEMORY, color="#d62728", linestyle="--", linewidth=1)
    for y, value in enumerate(peaks_mb):
        memory.text(
            value, y, f" {value:.0f} MB ({value / decoded_mb:.2f}x)", va="center", fontsize=9
        )
    memory.set_xlabel("peak MB over baseline (dotted: decoded RGB; dashed: 1.5x it)")
    memory.set_title("Peak memory, one 24 MP JPEG")
    memory.invert_yaxis()
    memory.set_yticklabels([])
    memory.set_xlim(0, max(*peaks_mb, decoded_mb * TARGET_MEMORY) * 1.4)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def render_codec_section(report: CodecReport) -> str:
    base = report.baseline
    lines = [
        "| Path | Throughput (one core) | vs Pillow-naive | Bytes vs Pillow-naive "
        "(median, range) | SSIM minus Pillow-naive's (worst) | Peak memory, one 24 MP JPEG |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in report.figures.items():
        ratios = entry.bytes_ratio
        deltas = [a - b for a, b in zip(entry.ssim, base.ssim, strict=True)]
        worst = min(deltas)
        peak_ratio = entry.peak_bytes / report.decoded_rgb_bytes
        lines.append(
            f"| {name} | {entry.throughput:.1f} MP/s | {entry.throughput / base.throughput:.2f}x "
            f"| {_percent(statistics.median(ratios))} ({_percent(min(ratios))} to "
            f"{_percent(max(ratios))}) | {worst:+.4f} | {entry.peak_bytes / 1e6:.0f} MB "
            f"({peak_ratio:.2f}x decoded RGB) |"
        )
    shipped = report.figures[SHIPPED]
    lines += [
        "",
        "Per photo (photo-like, 4:2:0), the shipped path against Pillow-naive:",
        "",
        "| Photo (source) | Time, Pillow-naive / shipped | Bytes vs Pillow-naive "
        "| SSIM, Pillow-naive / shipped |",
        "| --- | --- | --- | --- |",
    ]
    for index, (width, height, quality, size) in enumerate(report.corpus):
        lines.append(
            f"| {width}x{height} ({width * height / 1e6:.0f} MP) q{quality}, "
            f"{size / 1e6:.1f} MB | {base.seconds[index] * 1000:.0f} ms / "
            f"{shipped.seconds[index] * 1000:.0f} ms | {_percent(shipped.bytes_ratio[index])} "
            f"| {base.ssim[index]:.4f} / {shipped.ssim[index]:.4f} |"
        )
    return "\n".join(lines)


def _percent(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.1f}%"


def targets(report: CodecReport) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for the shipped path."""
    shipped, base = report.figures[SHIPPED], report.baseline
    speedup = shipped.throughput / base.throughput
    # Smaller is not a miss: issue 4 held the bytes near Pillow's so that the speed was not
    # bought with size; optimal Huffman tables make every output smaller.
    worst_bytes = max(r - 1 for r in shipped.bytes_ratio)
    worst_ssim = min(a - b for a, b in zip(shipped.ssim, base.ssim, strict=True))
    memory = shipped.peak_bytes / report.decoded_rgb_bytes
    return [
        ("throughput >= 1.7x Pillow-naive", f"{speedup:.2f}x", speedup >= TARGET_SPEEDUP),
        (
            "bytes no more than 5% above Pillow-naive's, every photo",
            f"worst {worst_bytes * 100:+.1f}%",
            worst_bytes <= TARGET_BYTES,
        ),
        (
            "SSIM no more than 0.01 below Pillow-naive's, every photo",
            f"worst {worst_ssim:+.4f}",
            worst_ssim >= -TARGET_SSIM,
        ),
        (
            "peak memory for one 24 MP JPEG <= 1.5x decoded RGB",
            f"{memory:.2f}x",
            memory <= TARGET_MEMORY,
        ),
    ]


# --------------------------------------------------------------------------- Huffman tables

# Colour photographs that scikit-image ships (no download), and its grey one.
PHOTOGRAPHS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "stereo_motorcycle",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",
)
PHOTO_QUALITIES = (75, 85, 92)
UPSCALE = 3

# Name -> (path, the same path with standard tables to compare pixels with, or None).
HUFFMAN_PATHS: dict[str, tuple[Callable[[], Callable[[bytes, int], bytes]], str | None]] = {
    "Pillow-naive with optimize=True": (lambda: pillow_naive_optimized, BASELINE),
    SHIPPED: (service_codec, None),
    OPTIMAL: (service_codec_optimal, SHIPPED),
    PROGRESSIVE: (lambda: dct_path(optimize=True, progressive=True), SHIPPED),
    PILLOW_PATH: (pillow_codec, None),
    OPTIMAL_PILLOW_PATH: (pillow_codec_optimal, PILLOW_PATH),
}


@dataclass
class HuffmanFigures:
    name: str
    bytes_ratio: dict[str, float] = field(default_factory=dict)  # source -> vs Pillow-naive
    same_pixels: int = 0  # sources whose pixels equal those of the standard-table path
    same_tables: int = 0
    compared: int = 0


@dataclass
class HuffmanReport:
    figures: dict[str, HuffmanFigures]
    sources: list[str]  # "<photo> <scale>x q<quality>"


def real_photographs() -> list[tuple[str, bytes]]:
    """(label, JPEG) for every photograph, as shipped and upscaled, at each source quality."""
    from skimage import data as samples

    sources = []
    for name in PHOTOGRAPHS:
        array = getattr(samples, name)()
        if isinstance(array, tuple):  # stereo pairs: the left picture
            array = array[0]
        picture = Image.fromarray(array)
        for scale in (1, UPSCALE):
            scaled = picture
            if scale != 1:
                size = (picture.width * scale, picture.height * scale)
                scaled = picture.resize(size, Image.Resampling.LANCZOS)
            for quality in PHOTO_QUALITIES:
                out = io.BytesIO()
                scaled.save(out, "JPEG", quality=quality)
                sources.append((f"{name} {scale}x q{quality}", out.getvalue()))
    return sources


def huffman_benchmark() -> HuffmanReport:
    print("codec benchmark: Huffman tables on real photographs", flush=True)
    runners = {name: build() for name, (build, _) in HUFFMAN_PATHS.items()}
    figures = {name: HuffmanFigures(name) for name in HUFFMAN_PATHS}
    labels = []
    for label, data in real_photographs():
        labels.append(label)
        quality = output_quality(estimate_jpeg_quality(Image.open(io.BytesIO(data)).quantization))
        outputs = {BASELINE: pillow_naive(data, quality)}
        outputs |= {name: run(data, quality) for name, run in runners.items()}
        for name, (_, reference) in HUFFMAN_PATHS.items():
            entry = figures[name]
            entry.bytes_ratio[label] = len(outputs[name]) / len(outputs[BASELINE])
            if reference is not None:
                mine, theirs = Image.open(io.BytesIO(outputs[name])), outputs[reference]
                other = Image.open(io.BytesIO(theirs))
                entry.compared += 1
                entry.same_tables += mine.quantization == other.quantization
                entry.same_pixels += bool(np.array_equal(np.asarray(mine), np.asarray(other)))
    return HuffmanReport(figures, labels)


def render_huffman_section(report: HuffmanReport) -> str:
    lines = [
        f"Bytes against Pillow-naive on {len(report.sources)} real photographs "
        f"({len(PHOTOGRAPHS)} from `skimage.data`, as shipped and {UPSCALE}x upscaled, sources "
        "at q75/85/92; negative is smaller):",
        "",
        "| Path | Median | Worst (least saved) | Best | Same pixels and tables as with "
        "standard tables |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, entry in report.figures.items():
        ratios = list(entry.bytes_ratio.values())
        same = (
            f"{min(entry.same_pixels, entry.same_tables)} of {entry.compared}"
            if entry.compared
            else "(the reference)"
        )
        lines.append(
            f"| {name} | {_percent(statistics.median(ratios))} | {_percent(max(ratios))} | "
            f"{_percent(min(ratios))} | {same} |"
        )
    shipped = report.figures[OPTIMAL].bytes_ratio
    lines += [
        "",
        "With OPTIMAL_HUFFMAN_TABLES=1, by group (median bytes against Pillow-naive):",
        "",
        "| Sources | " + " | ".join(f"q{q}" for q in PHOTO_QUALITIES) + " |",
        "| --- | " + " | ".join("---" for _ in PHOTO_QUALITIES) + " |",
    ]
    for scale in (1, UPSCALE):
        cells = []
        for quality in PHOTO_QUALITIES:
            group = [r for label, r in shipped.items() if label.endswith(f" {scale}x q{quality}")]
            cells.append(_percent(statistics.median(group)))
        kind = "as shipped" if scale == 1 else f"{UPSCALE}x upscaled"
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
