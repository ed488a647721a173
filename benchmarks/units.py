"""Work units on Ray: 2 workers against 1 in steady state, and the per-video overhead of one task per video
(``unit_inputs = 1``) against units of 16, on many short clips.

    python benchmarks/units.py [--videos 192] [--out benchmarks/results/units.json]

Inputs: copies of sample_videos/static_h264_p.mp4 and sprites_h264_p.mp4 (2 s, 50 frames, 320x240 each),
pixel tokens of width 32 (recipe defaults otherwise), so that per-task costs are visible beside the
per-video work. Each configuration gets its own local Ray, whose workers are warmed by a short run of
their own (libraries imported, the recipe's pipeline built in every worker process) before any clock
starts; every timed run writes a new output.

Steady state: each Ray configuration runs ``--videos`` and a third of that; the steady-state rate is the
difference in videos over the difference in wall time, which cancels what every run pays once (planning,
the ledger, the first and last units' ramp). The whole-run figures are printed beside it. The load average
is recorded before and after each run (a shared machine makes figures taken under load invalid). Takes
about 3 minutes on a quiet 2-core machine.
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


def _timed_run(recipe, inputs, output: Path) -> dict:
    from codecpatch.pipeline import run

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    stats = run(recipe, inputs, output, progress=False)
    wall = time.perf_counter() - started
    assert stats.processed == len(inputs) and not stats.failed, stats.to_dict()
    return {"videos": len(inputs), "wall_seconds": round(wall, 3), "videos_per_s": round(len(inputs) / wall, 3),
            "ms_per_video": round(1000 * wall / len(inputs), 1), "units": stats.units, "driver_bytes": stats.driver_bytes,
            "stage_seconds": {k: round(v, 3) for k, v in stats.to_dict()["stage_seconds"].items()},
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}


def _configuration(overrides: dict, inputs: list, small: int, folder: Path, name: str, workers: int) -> dict:
    """Timed runs of one configuration (``workers`` 0: in-process) over all inputs and, on Ray, over the first
    ``small`` too; Ray is started and its workers warmed first."""
    from codecpatch.pipeline import load_recipe
    from codecpatch.pipeline._local_ray import start_ray, stop_ray

    recipe = load_recipe(None, {**overrides, "execution.workers": workers})
    if workers:
        start_ray(None, workers)
    try:
        if workers:  # warm: a unit per worker, so that every worker process imports the libraries and builds the pipeline
            _timed_run(recipe, inputs[:recipe.execution.unit_inputs * workers], folder / f"{name}-warm")
        runs = {"all": _timed_run(recipe, inputs, folder / f"{name}-all")}
        if workers:
            runs["small"] = _timed_run(recipe, inputs[:small], folder / f"{name}-small")
    finally:
        if workers:
            stop_ray()
    row = {"workers": workers, "unit_inputs": recipe.execution.unit_inputs, **runs["all"], "runs": runs}
    if "small" in runs:
        extra_videos = runs["all"]["videos"] - runs["small"]["videos"]
        extra_seconds = runs["all"]["wall_seconds"] - runs["small"]["wall_seconds"]
        row["steady_videos_per_s"] = round(extra_videos / extra_seconds, 3) if extra_seconds > 0 else None
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=192)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "units.json")
    args = parser.parse_args()
    from codecpatch.pipeline import list_inputs

    overrides = {"encoder.dim": 32}
    results: dict = {"command": " ".join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]), "cpus": os.cpu_count(),
                     "load_at_start": [round(x, 2) for x in os.getloadavg()], "runs": {}}
    small = max(1, args.videos // 3)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        videos = folder / "videos"
        videos.mkdir()
        for i in range(args.videos):
            shutil.copy(REPO / "sample_videos" / CLIPS[i % len(CLIPS)], videos / f"{i:04d}.mp4")
        inputs = list_inputs(videos)
        plan = (("in-process", 0, 16), ("2 workers, unit_inputs 1", 2, 1), ("2 workers, unit_inputs 16", 2, 16),
                ("1 worker, unit_inputs 4", 1, 4), ("2 workers, unit_inputs 4", 2, 4))
        print(f"{len(inputs)} videos (2 s, 320x240 each; steady state from runs of {len(inputs)} and {small}); "
              f"load average at start {results['load_at_start']}")
        print(f"{'run':28} {'wall s':>7} {'videos/s':>9} {'ms/video':>9} {'steady v/s':>11} {'units':>6} {'load before/after':>18}")
        for index, (name, workers, unit_inputs) in enumerate(plan):
            row = _configuration({**overrides, "execution.unit_inputs": unit_inputs}, inputs, small, folder, f"run{index}", workers)
            results["runs"][name] = row
            steady = row.get("steady_videos_per_s")
            print(f"{name:28} {row['wall_seconds']:7.2f} {row['videos_per_s']:9.2f} {row['ms_per_video']:9.1f} "
                  f"{steady if steady is not None else '-':>11} {row['units']:6d} {row['load_before']:8.2f} / {row['load_after']:<8.2f}")
    runs = results["runs"]
    one_task, units16 = runs["2 workers, unit_inputs 1"], runs["2 workers, unit_inputs 16"]
    one, two = runs["1 worker, unit_inputs 4"], runs["2 workers, unit_inputs 4"]
    results["overhead_ms_per_video_task_per_video_vs_units_of_16"] = round(one_task["ms_per_video"] - units16["ms_per_video"], 1)
    results["speedup_2_vs_1_workers"] = round(one["wall_seconds"] / two["wall_seconds"], 3)
    results["steady_speedup_2_vs_1_workers"] = round(two["steady_videos_per_s"] / one["steady_videos_per_s"], 3)
    results["ray_2_workers_vs_in_process"] = round(runs["in-process"]["wall_seconds"] / units16["wall_seconds"], 3)
    print(f"2 workers vs 1 (units of 4): steady state {results['steady_speedup_2_vs_1_workers']:.2f}x, whole run "
          f"{results['speedup_2_vs_1_workers']:.2f}x; one task per video costs "
          f"{results['overhead_ms_per_video_task_per_video_vs_units_of_16']:+.1f} ms/video against units of 16 (2 workers); "
          f"2 workers vs in-process: {results['ray_2_workers_vs_in_process']:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
