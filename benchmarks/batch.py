"""The batch pipeline: throughput with 1 and 2 Ray workers on the same inputs, stage breakdown, worker
memory for a short and a 10x longer video, and the whole run against plain PyAV decode of the same videos.

    python benchmarks/batch.py [--copies 2] [--unit-inputs 2] [--out benchmarks/results/batch.json]

Inputs: the clips of ../shared/videos, each repeated ``--copies`` times (so both workers stay busy).
Recipe: pipelines/batch.toml (pixel:256 tokens, apet:0.5), as a user would run it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _process import in_fresh_process, peak_rss_kib  # noqa: E402
from _process import plain_decode as _plain_decode  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "videos"


def _worker_memory(path: str, queue) -> None:
    """Peak RSS of processing one video the way a worker does."""
    from codecpatch.pipeline import InputVideo, load_recipe, process_video

    started = time.perf_counter()
    result = process_video(InputVideo(path, Path(path).name), load_recipe(REPO / "pipelines" / "batch.toml"))
    queue.put((result.frames, time.perf_counter() - started, peak_rss_kib()))


def _import_worker_modules() -> None:
    import codecpatch.pipeline._runner  # noqa: F401  (torch, OpenCV, PyAV, pyarrow)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--unit-inputs", type=int, default=2, help="execution.unit_inputs: videos per work unit (Ray task)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "batch.json")
    args = parser.parse_args()
    from codecpatch.pipeline import list_inputs, load_recipe, run

    results: dict = {"runs": {}, "unit_inputs": args.unit_inputs}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        videos = folder / "videos"
        videos.mkdir()
        for clip in sorted(p for p in SHARED.glob("*") if p.suffix != ".md"):
            for copy in range(args.copies):
                shutil.copy(clip, videos / f"{copy}_{clip.name}")
        inputs = list_inputs(videos)
        plain_frames, plain_seconds = 0, 0.0
        for item in inputs:
            frames, seconds, _ = in_fresh_process(_plain_decode, Path(item.path))
            plain_frames, plain_seconds = plain_frames + frames, plain_seconds + seconds
        results["plain_decode"] = {"frames": plain_frames, "seconds": plain_seconds, "fps": plain_frames / plain_seconds}
        print(f"{len(inputs)} videos, {plain_frames} frames; plain PyAV decode (1 process): {plain_frames / plain_seconds:.0f} frames/s")
        from codecpatch.pipeline._local_ray import start_ray, stop_ray

        import ray

        for workers in (1, 2):
            recipe = load_recipe(REPO / "pipelines" / "batch.toml", {"execution.workers": workers,
                                                                      "execution.unit_inputs": args.unit_inputs})
            started = time.perf_counter()
            start_ray(None, workers)  # started here so its ~2 s start-up is reported apart
            ray_start = time.perf_counter() - started
            started = time.perf_counter()
            # Worker processes import torch, OpenCV, PyAV and codecpatch on their first task (~2 s, the same
            # for 1 or 2 workers since they import in parallel): done here, timed apart, so that the run
            # measures steady-state throughput, which is what a dataset of millions of videos sees.
            warm = ray.remote(num_cpus=1)(_import_worker_modules)
            ray.get([warm.remote() for _ in range(workers)])
            worker_start = time.perf_counter() - started
            started = time.perf_counter()
            stats = run(recipe, inputs, folder / f"out{workers}", progress=False)
            wall = time.perf_counter() - started
            stop_ray()  # and its temp folder
            row = stats.to_dict()
            row.update({"ray_start_seconds": ray_start, "worker_start_seconds": worker_start, "wall_seconds": wall,
                        "wall_with_worker_start_seconds": wall + worker_start, "videos_per_s": len(inputs) / wall, "tokens_per_s": stats.n_tokens / wall,
                        "frames_per_s": stats.frames / wall})
            results["runs"][str(workers)] = row
            print(f"{workers} worker(s): Ray start {ray_start:4.1f} s, worker start {worker_start:4.1f} s, run {wall:6.1f} s  {len(inputs) / wall:5.2f} videos/s  {stats.n_tokens / wall:8.0f} tokens/s  "
                  f"{stats.frames / wall:6.0f} frames/s  errors {dict(stats.errors_by_kind)}  stages {row['stage_seconds']}")
        one, two = results["runs"]["1"], results["runs"]["2"]
        results["speedup_2_vs_1"] = one["wall_seconds"] / two["wall_seconds"]
        results["speedup_2_vs_1_with_worker_start"] = one["wall_with_worker_start_seconds"] / two["wall_with_worker_start_seconds"]
        results["stage_seconds_2_vs_1"] = sum(two["stage_seconds"].values()) / sum(one["stage_seconds"].values())
        results["run_vs_plain_decode"] = two["frames_per_s"] / results["plain_decode"]["fps"]
        print(f"2 workers vs 1: {results['speedup_2_vs_1']:.2f}x steady state, {results['speedup_2_vs_1_with_worker_start']:.2f}x "
              f"counting worker start-up; summed stage time with 2 workers {results['stage_seconds_2_vs_1']:.2f}x that with 1; 2-worker run at {results['run_vs_plain_decode']:.2f}x plain decode "
              f"(one process) frames/s")
        if shutil.which("ffmpeg"):
            clip = SHARED / "bbb_720p_h264_ip.mp4"
            looped = folder / "looped.mp4"
            subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-stream_loop", "9", "-i", str(clip), "-an", "-c", "copy", str(looped)], check=True)
            memory = {}
            for name, path in (("short", clip), ("10x longer", looped)):
                frames, seconds, rss = in_fresh_process(_worker_memory, path)
                memory[name] = {"frames": frames, "seconds": seconds, "peak_rss_mib": rss}
                print(f"worker memory, {name:10} video: {frames:5d} frames  peak RSS {rss:.0f} MiB")
            results["worker_memory"] = memory
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    multiprocessing.set_start_method("spawn", force=True)
    main()
