"""The whole `codecpatch patchify` command (codec mode, default settings, --no-fidelity) against FFmpeg's own
decode with vector export, start-up included, on one core; optionally a second code tree in the same run.

    python benchmarks/patchify_command.py [--clips ...] [--core 1] [--repeats 3] [--before /path/to/old/tree]
        [--out benchmarks/results/patchify_command.json]

Per clip and repeat, the runs are interleaved (ffmpeg, ours, the --before tree's) so that a shared, noisy
machine slows them alike; the table quotes medians and the ratio to FFmpeg's wall time
(`ffmpeg -threads 1 -flags2 +export_mvs -an -i CLIP -f null -`), which is what stays comparable. "floor" is
``benchmarks/_floor.py``: a Python process that imports numpy, PyAV and OpenCV and only decodes with vector
export, the least any Python tool on PyAV pays. ``--codec-video-prep BIN`` adds the peer's own command (its
venv: ``benchmarks/.peers/codec-video-prep/bin/codec-video-prep``, made by ``benchmarks/peers.py``) at its
defaults (JPEG canvases), 64 sampled frames, patch 16, one decoder thread.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "videos"
DEFAULT_CLIPS = [SHARED / "bbb_720p_h264_ip.mp4", SHARED / "box_handheld_480p_h264_ipb.mp4", SHARED / "bbb_720p_mpeg4part2.mp4",
                 REPO / "sample_videos" / "pan_h264_p.mp4"]


def timed(command: list[str], env: dict | None = None, cwd: Path | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one run of ``command`` (the RSS of that process alone: ``wait4``)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command)
    return seconds, usage.ru_maxrss / 1024.0


def console_script(tree: Path) -> str:
    """What the tree's installed ``codecpatch`` console script calls, as ``module:function`` (its pyproject's
    ``[project.scripts]``): the same entry point the user's command runs (0.2.1 and older: ``codecpatch.cli:main``)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11: the backport the package itself depends on there
        import tomli as tomllib

    try:
        with open(tree / "pyproject.toml", "rb") as file:
            return tomllib.load(file)["project"]["scripts"]["codecpatch"]
    except FileNotFoundError:  # a bare copy of the package: the entry point every release before 0.2.2 had
        return "codecpatch.cli:main"


def ours(clip: Path, core: int, tree: Path) -> list[str]:
    """The command as the console script runs it, with PYTHONPATH and the working folder set to the code tree
    (``python -c`` puts the working folder first on sys.path: run elsewhere, it would import whatever codecpatch
    lies there)."""
    module, function = console_script(tree).split(":")
    return ["taskset", "-c", str(core), sys.executable, "-c", f"import sys; from {module} import {function}; sys.exit({function}())",
            "patchify", "--no-fidelity", str(clip)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="*", type=Path, default=[c for c in DEFAULT_CLIPS if c.exists()])
    parser.add_argument("--core", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", type=Path, help="another code tree (e.g. a `git archive` of the base commit) run the same way")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "patchify_command.json")
    parser.add_argument("--codec-video-prep", type=Path, help="the peer's command, timed the same way (see above)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from codecpatch.decode import plan_packets

    trees = {"ours": REPO} | ({"before": args.before.resolve()} if args.before else {})
    # Start-up as an installed package has it: bytecode cached. Some environments set PYTHONDONTWRITEBYTECODE,
    # which would make every run compile the tree's modules again (~50 ms); one untimed run per tree writes them.
    envs = {name: {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}, "PYTHONPATH": str(tree),
                   "OMP_NUM_THREADS": "1"} for name, tree in trees.items()}
    for name, tree in trees.items():
        subprocess.run([sys.executable, "-c", "import codecpatch.cli, codecpatch.pipeline._clip, codecpatch.patchify._collect"],
                       check=True, env=envs[name], cwd=tree)
    peer = lambda clip, out_dir: ["taskset", "-c", str(args.core), str(args.codec_video_prep), "--video", str(clip),  # noqa: E731
                                  "--out_dir", out_dir, "--num_sampled_frames", "64", "--patch", "16", "--thread_count", "1"]
    floor = lambda clip: ["taskset", "-c", str(args.core), sys.executable, str(REPO / "benchmarks" / "_floor.py"), str(clip)]  # noqa: E731
    ffmpeg = lambda clip: ["taskset", "-c", str(args.core), "ffmpeg", "-nostdin", "-loglevel", "error", "-threads", "1",  # noqa: E731
                           "-flags2", "+export_mvs", "-an", "-i", str(clip), "-f", "null", "-"]
    results = []
    for clip in args.clips:
        clip = clip.resolve()
        frames = plan_packets(clip).packets
        times: dict[str, list[float]] = {"ffmpeg": [], "floor": [], **{name: [] for name in trees}}
        if args.codec_video_prep:
            times["codec-video-prep"] = []
        peaks: dict[str, list[float]] = {name: [] for name in times}
        failed: set[str] = set()  # the peer fails on some codecs (MPEG-4 part 2): reported, not timed
        for _ in range(args.repeats):
            for name in times:
                if name in failed:
                    continue
                if name == "codec-video-prep":
                    with tempfile.TemporaryDirectory() as out_dir:
                        try:
                            seconds, peak = timed(peer(clip, out_dir))
                        except subprocess.CalledProcessError:
                            failed.add(name)
                            continue
                else:
                    seconds, peak = (timed(ffmpeg(clip)) if name == "ffmpeg" else timed(floor(clip)) if name == "floor" else
                                     timed(ours(clip.resolve(), args.core, trees[name]), envs[name], cwd=trees[name]))
                times[name].append(seconds)
                peaks[name].append(peak)
        timed_names = [name for name in times if name not in failed]
        medians = {name: statistics.median(times[name]) for name in timed_names}
        row = {"clip": clip.name, "frames": frames, "seconds": times, "median_s": medians, "failed": sorted(failed),
               "frames_per_s": {name: frames / value for name, value in medians.items()},
               "ratio_to_ffmpeg": {name: medians["ffmpeg"] / medians[name] for name in timed_names if name != "ffmpeg"},
               "peak_rss_mib": {name: max(peaks[name]) for name in timed_names}}
        results.append(row)
        print(f"{clip.name} ({frames} frames): " + ", ".join(
            f"{name} {medians[name]:.2f} s {row['frames_per_s'][name]:.0f} f/s" + (f" ({row['ratio_to_ffmpeg'][name]:.2f}x)" if name != "ffmpeg" else "")
            + f" {row['peak_rss_mib'][name]:.0f} MiB" for name in timed_names) + "".join(f", {name} failed" for name in sorted(failed)), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.platform(), "cpu_count": os.cpu_count(), "core": args.core,
                                    "repeats": args.repeats, "results": results}, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
