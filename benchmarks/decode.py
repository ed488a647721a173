"""Decode throughput of the codecpatch decode layer against FFmpeg's own decode, measured in one run.

    python benchmarks/decode.py [--clips CLIP ...] [--repeats 3] [--out benchmarks/results/decode.json]

Rows per clip (all single-threaded, frames per second, best of ``--repeats``):
  ffmpeg      the issue's reference, ``ffmpeg -threads 1 -flags2 +export_mvs -i CLIP -f null -``: wall time of
              the whole command (FFmpeg start-up and any audio decode included)
  ffmpeg strict  the same with ``-an``, minus the wall time of ``-frames:v 1`` (start-up removed): FFmpeg's
              video decode alone; the stricter reference
  pyav export PyAV decode with ``+export_mvs`` and the vectors read as arrays, nothing else: the same FFmpeg
              libraries codecpatch runs on (PyAV's wheel bundles a newer FFmpeg than the CLI here)
  (a) plain   PyAV decode, no vector export
  (b) vectors decode + exported motion vectors as a structured array (VideoReader, block_motion=False)
  (c) field   (b) + block motion field (8x8) + motion-compensated residual map (the default VideoReader:
              residual on luma downscaled to a longer side <= 320 px, i.e. 4x for 720p)
  (c')        (c) with the residual on luma at <= 640 px (2x for 720p)
  (c16)       patchify's analysis since 0.2: 16x16 block field + the residual on every 2nd analysis pixel
              (``block_size=16, residual_stride=2``; what ``codecpatch patchify`` decodes with)
  (d) rgb     (c) + RGB conversion of every frame at native size
Ratios are against the ffmpeg rows of the same clip in the same run, since these machines are noisy; the
modes are interleaved across repeats for the same reason.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import av
from av.sidedata.sidedata import SideDataContainer

from codecpatch.decode import VideoReader

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CLIPS = [REPO.parent / "shared" / "videos" / name for name in ("bbb_720p_h264_ip.mp4", "bbb_720p_mpeg4part2.mp4", "box_handheld_480p_h264_ipb.mp4")]


def ffmpeg_decode(path: Path, *extra: str) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "fatal", "-threads", "1", "-flags2", "+export_mvs", "-i", str(path), *extra, "-f", "null", "-"],
        check=True,
    )


def pyav_export(path: Path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.options = {"flags2": "+export_mvs"}
        stream.codec_context.thread_count = 1
        frames = 0
        for frame in container.decode(stream):
            # Not frame.side_data: its cached container forms a reference cycle that leaks every frame.
            side_data = SideDataContainer(frame).get("MOTION_VECTORS")
            if side_data is not None:
                side_data.to_ndarray()
            frames += 1
        return frames


def plain_decode(path: Path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        return sum(1 for _ in container.decode(stream))


def reader_decode(path: Path, **options) -> int:
    with VideoReader(path, threads=1, thread_type="none", **options) as reader:
        return sum(1 for _ in reader)


MODES = {
    "ffmpeg": ffmpeg_decode,
    "ffmpeg video-only": lambda p: ffmpeg_decode(p, "-an"),
    "ffmpeg start-up": lambda p: ffmpeg_decode(p, "-an", "-frames:v", "1"),
    "pyav export": pyav_export,
    "(a) plain": plain_decode,
    "(b) vectors": lambda p: reader_decode(p, block_motion=False, residual="none", keep_vectors=True),
    "(c) field+residual": lambda p: reader_decode(p),
    "(c') residual at 640": lambda p: reader_decode(p, analysis_max_side=640),
    "(c16) patchify's analysis": lambda p: reader_decode(p, block_size=16, residual_stride=2),
    "(d) +rgb": lambda p: reader_decode(p, rgb=True),
}


def best_seconds(function, path: Path, repeats: int) -> tuple[float, int]:
    best, frames = float("inf"), -1
    for _ in range(repeats):
        started = time.perf_counter()
        frames = function(path)
        best = min(best, time.perf_counter() - started)
    return best, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="*", type=Path, default=DEFAULT_CLIPS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "decode.json")
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        sys.exit("ffmpeg is not installed (apt-get install ffmpeg): it is the reference of this benchmark")

    ffmpeg_version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    results = {"machine": platform.platform(), "python": platform.python_version(), "pyav": av.__version__,
               "pyav_ffmpeg": ".".join(map(str, av.ffmpeg_version_info)) if hasattr(av, "ffmpeg_version_info") else "",
               "ffmpeg_cli": ffmpeg_version, "repeats": args.repeats, "clips": {}}
    print(f"{'clip':32} {'mode':22} {'frames':>6} {'fps':>8} {'x ffmpeg':>9} {'x strict':>9}")
    for clip in args.clips:
        # Warm the page cache so the first mode is not charged for disk reads.
        clip.read_bytes()
        frames = plain_decode(clip)
        seconds = {mode: float("inf") for mode in MODES}
        for _ in range(args.repeats):  # interleaved, so slow phases of a noisy machine hit every mode
            for mode, function in MODES.items():
                seconds[mode] = min(seconds[mode], best_seconds(function, clip, 1)[0])
        strict = seconds.pop("ffmpeg video-only") - seconds.pop("ffmpeg start-up")
        seconds = {"ffmpeg": seconds.pop("ffmpeg"), "ffmpeg strict": strict, **seconds}
        rows = {mode: {"seconds": s, "fps": frames / s} for mode, s in seconds.items()}
        for mode, row in rows.items():
            row["ratio_to_ffmpeg"] = row["fps"] / rows["ffmpeg"]["fps"]
            row["ratio_to_ffmpeg_strict"] = row["fps"] / rows["ffmpeg strict"]["fps"]
            print(f"{clip.name:32} {mode:22} {frames:6d} {row['fps']:8.1f} {row['ratio_to_ffmpeg']:9.2f} {row['ratio_to_ffmpeg_strict']:9.2f}")
        results["clips"][clip.name] = {"frames": frames, "modes": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
