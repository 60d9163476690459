"""`make bench`: run every benchmark and write BENCHMARKS.md."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench.codec import (
    OPTIMAL,
    PILLOW_PATH,
    PROGRESSIVE,
    SHIPPED,
    TARGET_SPEEDUP,
    CodecReport,
    HuffmanReport,
    _percent,
    codec_benchmark,
    huffman_benchmark,
    render_codec_section,
    render_huffman_section,
    targets,
)
from bench.cold_start import (
    ColdStartReport,
    cold_start_benchmark,
    cold_start_markdown,
    render_cold_start_section,
)
from bench.cost import COST_HEADING, cost_benchmark, cost_markdown, render_cost_section
from bench.faults import HEADING as FAULTS_HEADING
from bench.faults import faults_markdown
from bench.finalise import (
    FINALISE_HEADING,
    finalise_benchmark,
    finalise_markdown,
    render_finalise_section,
)
from bench.pipeline import Figure, end_to_end_benchmark, upload_benchmark
from bench.same_image import (
    SAME_IMAGE_HEADING,
    SameImageReport,
    same_image_benchmark,
    same_image_markdown,
)
from bench.scale import (
    SCALE_HEADING,
    render_scale_section,
    scale_benchmark,
    scale_markdown,
)

ROOT = Path(__file__).resolve().parents[1]


def render(figures: list[Figure]) -> str:
    lines = [
        "| Benchmark | Measured | Baseline (same run) | Ratio | Notes |",
        "| --- | --- | --- | --- | --- |",
    ]
    for f in figures:
        baseline = f"{f.baseline:.3f} {f.unit} ({f.baseline_name})" if f.baseline else ""
        ratio = f"{f.ratio:.2f}x" if f.ratio else ""
        lines.append(f"| {f.name} | {f.value:.3f} {f.unit} | {baseline} | {ratio} | {f.note} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--only",
        choices=[
            "codec",
            "cold",
            "pipeline",
            "upload",
            "e2e",
            "same-image",
            "finalise",
            "cost",
            "scale",
            "faults",
        ],
        default=None,
        help="one part; `pipeline` is upload and e2e, the two rows of their section",
    )
    args = parser.parse_args()
    figures: list[Figure] = []
    codec: CodecReport | None = None
    cold: ColdStartReport | None = None
    huffman: HuffmanReport | None = None
    same_image: SameImageReport | None = None
    capacity: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="imgsvc-bench-") as tmp:
        # First, while nothing else of ours runs: the codec figures are per core.
        if args.only in (None, "codec"):
            codec = codec_benchmark(Path(tmp))
            print(render_codec_section(codec))
            huffman = huffman_benchmark()
            print(render_huffman_section(huffman))
        # Also before any stack starts: interpreters starting up are what is measured.
        if args.only in (None, "cold"):
            cold = cold_start_benchmark(Path(tmp))
            print(render_cold_start_section(cold))
        if args.only in (None, "upload", "pipeline"):
            figures += upload_benchmark(Path(tmp))
            print(render(figures))
        if args.only in (None, "e2e", "pipeline"):
            figures += end_to_end_benchmark(Path(tmp))
        if args.only in (None, "same-image"):
            same_image = same_image_benchmark(Path(tmp))
        capacity = capacity_sections(args.only, Path(tmp))
        # The fault drill (issue 8): the fault tests' scenarios with default settings.
        faults = faults_markdown(Path(tmp) / "faults") if args.only in (None, "faults") else None
    table = render(figures)
    print(table)
    machine = f"{platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} cores"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = {}
    if codec is not None and huffman is not None:
        sections[CODEC_HEADING] = codec_markdown(codec, huffman)
    if cold is not None:
        sections[COLD_HEADING] = cold_start_markdown(cold).removeprefix(COLD_HEADING)
    if figures:
        sections[PIPELINE_HEADING] = (
            f"{table}\n\n"
            "The end-to-end ratio counts everything the local profile runs on the same cores: "
            "the Firestore emulator (a JVM), the Storage emulator (Python), Redis, the gateway "
            "and the worker. The ideal counts only decoding and re-encoding with plain Pillow.\n"
        )
    if same_image is not None:
        sections[SAME_IMAGE_HEADING] = same_image_markdown(same_image)
    sections |= capacity
    if faults is not None:
        sections[FAULTS_HEADING] = faults
    path = ROOT / "BENCHMARKS.md"
    path.write_text(
        "# Benchmarks\n\n"
        f"Written by `make bench` on {stamp} ({machine}). Every figure is compared with a "
        "baseline measured in the same run, on the same machine.\n\n"
        + merge_sections(path.read_text() if path.exists() else "", sections)
    )


def capacity_sections(only: str | None, work: Path) -> dict[str, str]:
    """What a request costs and how it scales (issue 12): the finaliser at 100,000 images, the
    cost of one image on the emulated cloud profile, per-image work at 1,000 to 100,000
    images on the local profile (last: the largest request takes a quarter of an hour)."""
    sections = {}
    if only in (None, "finalise"):
        finalise = finalise_benchmark(work)
        print(render_finalise_section(finalise))
        sections[FINALISE_HEADING] = finalise_markdown(finalise)
    if only in (None, "cost"):
        cost = cost_benchmark(work)
        print(render_cost_section(cost))
        sections[COST_HEADING] = cost_markdown(cost)
    if only in (None, "scale"):
        scale = scale_benchmark(work)
        print(render_scale_section(scale))
        sections[SCALE_HEADING] = scale_markdown(scale)
    return sections


CODEC_HEADING = "## Codec: JPEG to JPEG at half the quality"
COLD_HEADING = "## Cold start of the staged functions"
PIPELINE_HEADING = "## Pipeline (local profile)"


def merge_sections(old: str, new: dict[str, str]) -> str:
    """BENCHMARKS.md's sections: this run's, and the others as the last run wrote them (a
    `--only` run rewrites its own section and no one else's), in the usual order."""
    kept: dict[str, str] = {}
    heading = None
    for line in old.splitlines(keepends=True):
        if line.startswith("## "):
            heading = line.rstrip("\n")
            kept[heading] = ""
        elif heading is not None:
            kept[heading] += line
    order = [CODEC_HEADING, COLD_HEADING, PIPELINE_HEADING, SAME_IMAGE_HEADING, FINALISE_HEADING]
    order += [COST_HEADING, SCALE_HEADING, FAULTS_HEADING]
    order += [h for h in kept if h not in new]
    parts = []
    for heading in dict.fromkeys(order):
        if heading in new:
            parts.append(f"{heading}\n\n{new[heading].strip()}\n")
        elif heading in kept:
            body = kept[heading].strip()
            parts.append(f"{heading}\n\n{body}\n")
    earlier = [h[3:] for h in dict.fromkeys(order) if h not in new and h in kept]
    if earlier:
        parts.insert(
            0, f"(Kept from an earlier run, not measured in this one: {', '.join(earlier)}.)\n"
        )
    return "\n".join(parts)


def codec_markdown(report: CodecReport, huffman: HuffmanReport) -> str:
    shipped, general = report.figures[SHIPPED], report.figures[PILLOW_PATH]
    versus_pillow_path = shipped.throughput / general.throughput
    checks = "\n".join(
        f"| {target} | {measured} | {'met' if met else 'missed'} |"
        for target, measured, met in targets(report)
    )
    return (
        "![Throughput and peak memory per path, beside Pillow-naive](docs/bench-codec.png)\n\n"
        f"{render_codec_section(report)}\n\n"
        "Targets for the path the service ships (issues 4 and 10), against Pillow-naive "
        '(`Image.open(...).save(..., "JPEG", quality=q)`) in the same run:\n\n'
        "| Target | Measured | |\n| --- | --- | --- |\n"
        f"{checks}\n\n"
        + CODEC_NOTES.format(versus_pillow_path=versus_pillow_path)
        + "\n\n### Huffman tables (issue 10)\n\n"
        + f"{render_huffman_section(huffman)}\n\n"
        + huffman_decision(report, huffman)
        + "\n"
    )


def huffman_decision(report: CodecReport, huffman: HuffmanReport) -> str:
    base = report.baseline.throughput
    shipped = report.figures[SHIPPED].throughput / base
    optimal_speed = report.figures[OPTIMAL].throughput / base
    progressive_speed = report.figures[PROGRESSIVE].throughput / base
    optimal = statistics.median(huffman.figures[OPTIMAL].bytes_ratio.values())
    standard_bytes = statistics.median(huffman.figures[SHIPPED].bytes_ratio.values())
    progressive = statistics.median(huffman.figures[PROGRESSIVE].bytes_ratio.values())
    baseline_bytes = huffman.figures[OPTIMAL].bytes_ratio
    progressive_bytes = huffman.figures[PROGRESSIVE].bytes_ratio
    smaller = sum(progressive_bytes[k] < baseline_bytes[k] for k in baseline_bytes)
    holds = optimal_speed >= TARGET_SPEEDUP
    return (
        "The decision. Optimal Huffman tables change no coefficient (the same quantization "
        "tables and the same pixels in every case above, so the same SSIM and the same "
        "`identify -format %Q`), and take the shipped path's output to "
        f"{_percent(optimal)} against Pillow-naive's (median), where standard tables give "
        f"{_percent(standard_bytes)}. Throughput with them: {optimal_speed:.2f}x "
        f"Pillow-naive, against {shipped:.2f}x with standard tables, in the same run; the "
        f"condition for making them the default (at least {TARGET_SPEEDUP}x) "
        + (
            "holds in this run. "
            if holds
            else "does not hold, so they stay off by default and `OPTIMAL_HUFFMAN_TABLES=1` "
            "turns them on where bytes matter more than CPU. "
        )
        + "The DCT path computes them in libjpeg's second pass over the coefficients it holds "
        "(no more memory, but a second pass over them, which is what costs); what the Pillow "
        "path writes is transcoded once more, losslessly, after its decoded picture is gone "
        "(its memory bound holds; 4:4:4 outputs keep standard tables).\n\n"
        f"Progressive output (libjpeg's default progression, optimal tables) measured "
        f"{_percent_of(progressive, optimal)} (median) against baseline with optimal tables on "
        f"the same photographs, smaller on {smaller} of {len(baseline_bytes)}, at "
        f"{progressive_speed:.2f}x Pillow-naive's throughput: "
        + progressive_verdict(progressive < optimal, progressive_speed)
    )


def progressive_verdict(smaller: bool, speed: float) -> str:
    if not smaller:
        return "not smaller, so it is not shipped."
    if speed < TARGET_SPEEDUP:
        return (
            f"smaller, but it would take the shipped path below {TARGET_SPEEDUP}x Pillow-naive's "
            "throughput (each scan is one more pass over the coefficients, and one more for "
            "the client when decoding), so it is not shipped."
        )
    return "smaller and fast enough: worth shipping, which this run does not do yet."


def _percent_of(ratio: float, reference: float) -> str:
    return f"{(ratio / reference - 1) * 100:+.1f}%"


CODEC_NOTES = """\
How to read it. Every path writes the same quality (half the source's, the IJG tables of that
quality) and standard Huffman tables, but for the two paths named for OPTIMAL_HUFFMAN_TABLES
and the progressive one (below). Throughput is per core: pyvips runs with one worker thread,
and nothing here runs two images at once. Peak memory is what compressing one 24 MP JPEG added
to a fresh process's high-water mark, the median of three processes. The paths take turns on
each photo, so each one meets memory the others left behind and pays for fresh pages, as in a
worker that handles images of every kind; one path run alone, back to back, is faster (the DCT
path gets its 72 MB back from the allocator without a page fault and does the 24 MP photo in
about 50 ms instead of 70).

Why the service ships the DCT re-quantization. It does not decode pixels: entropy decoding,
one multiply per coefficient (while each row is still in the cache) and entropy encoding. It is
the fastest path measured, it holds about the decoded picture's size (its coefficients; 4:4:4
JPEGs, whose coefficients would take twice that, go to Pillow instead), and its output is
closer to the source than Pillow's (SSIM above), because nothing is resampled or rounded to
pixels on the way. Everything it does not take (CMYK, EXIF rotation, 4:4:4, arithmetic coding,
12-bit, MPO, other formats, damaged files) goes through the service's Pillow path.

Bytes, with standard Huffman tables. Re-quantizing rounds each
coefficient of the source to the nearest step of the coarser table. Where a source step times a
small coefficient lands just above half a target step (the q85 photo: 2 x q85 step is about
0.52 of the q43 step for many entries), every such coefficient rounds up and stays non-zero.
Pillow's round trip through pixels adds a little rounding noise and resamples the chroma, which
sends about half of them to zero and blurs the colour a little: fewer bytes, lower SSIM. So the
DCT path spends a few per cent more bytes on some sources for a picture closer to the source.
Biasing the rounding towards zero to buy the bytes back was tried: the size moved by 14-33% for
a 0.06 change of the rounding offset, so no fixed bias matches Pillow on every source, and any
bias costs SSIM.

Pillow-naive is slower than the service's own Pillow path because `save()` on a JPEG opened
lazily copies the decoded picture before encoding it (hence its memory figure too); the
service's Pillow path loads first. Against that path the DCT re-quantization is
{versus_pillow_path:.2f}x as fast.

pyvips (libvips streams the picture through in strips: the least memory) and simplejpeg
(libjpeg-turbo through TurboJPEG, decoding to RGB and back) were measured as candidates; both
are slower than the DCT path and would still need the same fallback for everything that is not
a plain JPEG. Nothing is timed in the tests; the memory bound is tested
(tests/unit/test_codec_memory.py)."""


if __name__ == "__main__":
    main()
