"""The ``codecpatch`` command line. Thin: builds option dataclasses and prints results."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

import click
from tqdm import tqdm

from . import __version__
from .decode import DecodeOptions, VideoReader, transcode_for_vectors
from .errors import VideoError
from .summary import FrameRecord, StreamSummary, summarize

_EXIT_BAD_INPUT = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="codecpatch")
def main() -> None:
    """codecpatch: video -> compact visual tokens, using what the codec already knows."""


@main.command()
@click.argument("video")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document: the summary and one record per frame.")
@click.option("--motion", type=click.Choice(["auto", "codec", "flow", "none"]), default="auto", show_default=True,
              help="Motion source: codec vectors, optical flow, auto (codec when the codec exports vectors), none.")
@click.option("--residual", type=click.Choice(["mc", "diff", "none"]), default="mc", show_default=True,
              help="Residual energy: motion-compensated (mc), plain frame difference, or none.")
@click.option("--block-size", type=click.Choice(["4", "8", "16"]), default="8", show_default=True, help="Motion/residual grid cell, pixels.")
@click.option("--strict", is_flag=True, help="Fail on the first undecodable packet instead of skipping it.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Open/read timeout for network sources, seconds.")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when stderr is a terminal).")
def inspect(video: str, as_json: bool, motion: str, residual: str, block_size: str, strict: bool, timeout: float,
            progress: bool | None) -> None:
    """Decode VIDEO and summarise what the codec knows: types, GOPs, motion, residual."""
    options = DecodeOptions(
        motion=motion, residual=residual, block_size=int(block_size), keep_vectors=False,
        on_error="raise" if strict else "skip", open_timeout=timeout, read_timeout=timeout,
    )
    try:
        with VideoReader(video, options) as reader:
            show = sys.stderr.isatty() if progress is None else progress
            frames = tqdm(reader, desc="decoding", unit="frame", disable=not show, leave=False)
            records = [FrameRecord.from_frame(frame) for frame in frames]
            summary = summarize(reader.info, reader.report, records)
    except VideoError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(_EXIT_BAD_INPUT)
    if as_json:
        click.echo(json.dumps({"summary": summary.to_dict(), "frames": [asdict(r) for r in records]}))
    else:
        click.echo(format_summary(summary))


def format_summary(summary: StreamSummary) -> str:
    """Human-readable multi-line summary."""
    gops = summary.gop_lengths
    gop_text = f"{len(gops)} GOPs, length min/mean/max {min(gops)}/{sum(gops) / len(gops):.1f}/{max(gops)}" if gops else "none"
    sizes = ", ".join(f"{w}x{h}" for w, h in summary.sizes) or f"{summary.width}x{summary.height}"
    types = " ".join(f"{t}={n}" for t, n in sorted(summary.type_counts.items()))
    sources = " ".join(f"{s}={n}" for s, n in sorted(summary.motion_sources.items()))
    fps = f"{summary.fps:.3f}" if summary.fps else "unknown"
    header_fps = f"{summary.header_fps:.3f}" if summary.header_fps else "none"
    duration = f"{summary.duration_s:.2f} s" if summary.duration_s is not None else "unknown"
    residual = f"{summary.mean_residual_energy:.2f}" if summary.mean_residual_energy is not None else "n/a"
    lines = [
        f"source        {summary.source}",
        f"codec         {summary.codec} in {summary.container}",
        f"size          {sizes}",
        f"fps           {fps} measured (header {header_fps}, times from {summary.timestamps})",
        f"frames        {summary.frames} decoded (header {summary.header_frames or 'n/a'})",
        f"duration      {duration}",
        f"picture types {types}",
        f"GOPs          {gop_text}",
        f"motion source {sources}",
        f"motion energy {summary.mean_motion_energy:.3f} px/block (mean)",
        f"residual      {residual} luma levels/block (mean)",
        f"complete      {'yes' if summary.complete else 'NO'}"
        + (f", {summary.packets_skipped} undecodable packets skipped" if summary.packets_skipped else "")
        + (f", {summary.corrupt_frames} frames concealed by the decoder" if summary.corrupt_frames else ""),
    ]
    lines += [f"warning       {w}" for w in summary.warnings]
    lines += [f"error         {e}" for e in summary.errors[:10]]
    return "\n".join(lines)


@main.command()
@click.argument("video")
@click.argument("output")
@click.option("--gop", type=int, default=16, show_default=True, help="Fixed GOP length, frames.")
@click.option("--crf", type=int, default=18, show_default=True, help="x264 constant rate factor (lower = better).")
@click.option("--fps", type=int, default=25, show_default=True, help="Output frame rate (frames are re-timed).")
@click.option("--max-side", type=int, default=None, help="Scale so the longer side is at most this many pixels.")
def transcode(video: str, output: str, gop: int, crf: int, fps: int, max_side: int | None) -> None:
    """Re-encode VIDEO as P-only, one-reference, fixed-GOP H.264 (exact codec vectors for any input)."""
    try:
        result = transcode_for_vectors(video, output, gop=gop, crf=crf, fps=fps, max_side=max_side)
    except VideoError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(_EXIT_BAD_INPUT)
    click.echo(f"wrote {result.path}: {result.frames} frames, {result.width}x{result.height}, GOP {gop}, P-only, ref=1")


if __name__ == "__main__":
    main()
