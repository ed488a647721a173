"""Work units on Ray: the per-video overhead of one task per video (``unit_inputs = 1``) against units of
16, and 2 workers against 1 in steady state (workers started and warm), on many short clips.

    python benchmarks/units.py [--videos 64] [--out benchmarks/results/units.json]

Inputs: ``--videos`` copies of sample_videos/static_h264_p.mp4 and sprites_h264_p.mp4 (2 s, 50 frames,
320x240 each), pixel tokens of width 32 (recipe defaults otherwise), so that per-task costs are visible
beside the per-video work. Runs, each into a new output: in-process (no Ray: the work itself), then on a
local Ray with warm workers: 2 workers x unit_inputs 1 and x 16 (the per-video overhead of a task per
video), then 1 and 2 workers x 4 (enough units that neither worker idles at the end). The load average
is recorded before and after each run (the machine may be shared: figures taken under load are not
valid throughput figures). Takes about 1-3 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLIPS = ("static_h264_p.mp4", "sprites_h264_p.mp4")


def _import_worker_modules() -> None:
    import codecpatch.pipeline._runner  # noqa: F401  (torch, OpenCV, PyAV, pyarrow)


def _run(recipe_overrides: dict, inputs, output: Path, workers: int) -> dict:
    """One run (``workers`` 0: in-process); Ray is started and its workers warmed before the clock starts."""
    from codecpatch.pipeline import load_recipe, run
    from codecpatch.pipeline._local_ray import start_ray, stop_ray

    recipe = load_recipe(None, {**recipe_overrides, "execution.workers": workers})
    if workers:
        import ray

        start_ray(None, workers)
        warm = ray.remote(num_cpus=1)(_import_worker_modules)
        ray.get([warm.remote() for _ in range(workers)])
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    try:
        stats = run(recipe, inputs, output, progress=False)
    finally:
        wall = time.perf_counter() - started
        if workers:
            stop_ray()
    assert stats.processed == len(inputs) and not stats.failed, stats.to_dict()
    return {"workers": workers, "unit_inputs": recipe.execution.unit_inputs, "videos": len(inputs), "wall_seconds": round(wall, 3),
            "videos_per_s": round(len(inputs) / wall, 3), "ms_per_video": round(1000 * wall / len(inputs), 1),
            "stage_seconds": {k: round(v, 3) for k, v in stats.to_dict()["stage_seconds"].items()},
            "units": stats.units, "driver_bytes": stats.driver_bytes, "execution": stats.execution,
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=64)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "units.json")
    args = parser.parse_args()
    from codecpatch.pipeline import list_inputs

    overrides = {"encoder.dim": 32}
    results: dict = {"command": " ".join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]), "cpus": os.cpu_count(),
                     "load_at_start": [round(x, 2) for x in os.getloadavg()], "runs": {}}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        videos = folder / "videos"
        videos.mkdir()
        for i in range(args.videos):
            shutil.copy(REPO / "sample_videos" / CLIPS[i % len(CLIPS)], videos / f"{i:04d}.mp4")
        inputs = list_inputs(videos)
        plan = (("in-process", 0, 16), ("2 workers, unit_inputs 1", 2, 1), ("2 workers, unit_inputs 16", 2, 16),
                ("1 worker, unit_inputs 4", 1, 4), ("2 workers, unit_inputs 4", 2, 4))
        print(f"{len(inputs)} videos (2 s, 320x240 each); load average at start {results['load_at_start']}")
        print(f"{'run':28} {'wall s':>7} {'videos/s':>9} {'ms/video':>9} {'units':>6} {'load before/after':>18}")
        for index, (name, workers, unit_inputs) in enumerate(plan):
            row = _run({**overrides, "execution.unit_inputs": unit_inputs}, inputs, folder / f"out{index}", workers)
            results["runs"][name] = row
            print(f"{name:28} {row['wall_seconds']:7.2f} {row['videos_per_s']:9.2f} {row['ms_per_video']:9.1f} "
                  f"{row['units']:6d} {row['load_before']:8.2f} / {row['load_after']:<8.2f}")
    runs = results["runs"]
    one_task, units16 = runs["2 workers, unit_inputs 1"], runs["2 workers, unit_inputs 16"]
    results["overhead_ms_per_video_task_per_video_vs_units_of_16"] = round(one_task["ms_per_video"] - units16["ms_per_video"], 1)
    # 2 vs 1 with units of 4: enough units (16 at 64 videos) that neither worker idles at the end
    results["speedup_2_vs_1_workers"] = round(runs["1 worker, unit_inputs 4"]["wall_seconds"] / runs["2 workers, unit_inputs 4"]["wall_seconds"], 3)
    results["ray_2_workers_vs_in_process"] = round(runs["in-process"]["wall_seconds"] / units16["wall_seconds"], 3)
    print(f"one task per video costs {results['overhead_ms_per_video_task_per_video_vs_units_of_16']:+.1f} ms/video against "
          f"units of 16 (2 workers); 2 workers vs 1: {results['speedup_2_vs_1_workers']:.2f}x; 2 workers vs in-process: "
          f"{results['ray_2_workers_vs_in_process']:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
