"""Work units on Ray: 2 workers against 1 in steady state, and the per-video overhead of one task per video
(``unit_inputs = 1``) against units of 16, on many short clips.

    python benchmarks/units.py [--videos 128] [--repeats 3] [--out benchmarks/results/units.json]

Inputs: copies of sample_videos/static_h264_p.mp4 and sprites_h264_p.mp4 (2 s, 50 frames, 320x240 each),
pixel tokens of width 32 (recipe defaults otherwise), so that per-task costs are visible beside the
per-video work. One local Ray with 2 CPUs serves every Ray run; its two worker processes are warmed first
(libraries imported, the recipe's pipeline built in each). "1 worker" is the same Ray with one task in
flight (the other core stays free for the driver and Ray, as with a 1-CPU Ray on this machine). Every run
writes a new output.

Steady state: each configuration runs ``--videos`` and a third of that; its steady rate is the difference in
videos over the difference in wall time, which cancels what every run pays once (planning, the ledger, the
first and last units' ramp). The configurations are interleaved, ``--repeats`` times, and the ratios are
taken per repeat (this machine is noisy); the table gives medians. The load average is recorded around
every run.

The machine's own ceiling for this work, measured in each repeat beside the Ray runs: the same inputs run
in-process (no Ray; torch/OpenCV/FFmpeg held to one thread) by one process alone, then by two processes at
once (each all the inputs, into its own output); ceiling = 2 x videos over the slower of the two walls,
against the one process's rate (each process times its run only, after importing and a warm-up video).
Takes about 8 minutes on a quiet 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLIPS = ("static_h264_p.mp4", "sprites_h264_p.mp4")
#: (name, tasks in flight, unit_inputs) of the Ray configurations, run in this order in every repeat.
CONFIGURATIONS = (("1 worker, unit_inputs 4", 1, 4), ("2 workers, unit_inputs 4", 2, 4),
                  ("2 workers, unit_inputs 1", 2, 1), ("2 workers, unit_inputs 16", 2, 16))


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


def _in_process_child(listing: Path, output: Path) -> None:
    """(``--child``) One in-process run over the paths in ``listing``; prints its wall seconds as JSON."""
    from codecpatch.pipeline import limit_threads, list_inputs

    limit_threads(1)
    inputs = list_inputs(listing)
    _timed_run(_recipe(0, 16, workers=0), inputs[:1], output.with_name(output.name + "-warm"))
    print(json.dumps(_timed_run(_recipe(0, 16, workers=0), inputs, output)))


def _in_process_processes(count: int, listing: Path, folder: Path, tag: str) -> list[dict]:
    """``count`` in-process runs at once, each in its own process over every input of ``listing``."""
    children = [subprocess.Popen([sys.executable, __file__, "--child", str(listing), str(folder / f"{tag}-{k}")],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                 env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}) for k in range(count)]
    outputs = [child.communicate()[0] for child in children]
    for child in children:
        if child.returncode:
            raise RuntimeError(f"in-process child failed with status {child.returncode}")
    return [json.loads(out.strip().splitlines()[-1]) for out in outputs]


def _recipe(in_flight: int, unit_inputs: int, workers: int = 2):
    from codecpatch.pipeline import load_recipe

    return load_recipe(None, {"encoder.dim": 32, "execution.workers": workers, "execution.max_in_flight": max(in_flight, 1),
                              "execution.unit_inputs": unit_inputs})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=128)
    parser.add_argument("--clips", nargs="*", type=Path, default=[REPO / "sample_videos" / c for c in CLIPS],
                        help="the clips copied round-robin into the inputs")
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "units.json")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    if args.child:
        _in_process_child(*args.child)
        return
    from codecpatch.pipeline import list_inputs
    from codecpatch.pipeline._local_ray import start_ray, stop_ray

    results: dict = {"command": " ".join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]), "cpus": os.cpu_count(),
                     "load_at_start": [round(x, 2) for x in os.getloadavg()], "runs": {}, "repeats": []}
    small = max(1, args.videos // 3)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        videos = folder / "videos"
        videos.mkdir()
        for i in range(args.videos):
            clip = args.clips[i % len(args.clips)]
            shutil.copy(clip, videos / f"{i:04d}{clip.suffix}")
        inputs = list_inputs(videos)
        listing = folder / "inputs.txt"
        listing.write_text("".join(f"{i.path}\n" for i in inputs))
        results["clips"] = [os.path.relpath(c, REPO) for c in args.clips]
        print(f"{len(inputs)} videos ({', '.join(c.name for c in args.clips)}; steady state from runs of {len(inputs)} and {small}); "
              f"load average at start {results['load_at_start']}")
        start_ray(None, 2)
        try:
            _timed_run(_recipe(2, 1), inputs[:8], folder / "warm")  # both workers: libraries loaded, pipeline built
            for repeat in range(args.repeats):
                row: dict = {}
                for name, in_flight, unit_inputs in CONFIGURATIONS:
                    recipe = _recipe(in_flight, unit_inputs)
                    runs = {"all": _timed_run(recipe, inputs, folder / f"r{repeat}-{name}-all")}
                    if unit_inputs == 4:
                        runs["small"] = _timed_run(recipe, inputs[:small], folder / f"r{repeat}-{name}-small")
                        extra_seconds = runs["all"]["wall_seconds"] - runs["small"]["wall_seconds"]
                        runs["steady_videos_per_s"] = round((len(inputs) - small) / extra_seconds, 3) if extra_seconds > 0 else None
                    row[name] = runs
                    print(f"  repeat {repeat}: {name:26} {runs['all']['wall_seconds']:7.2f} s  steady "
                          f"{runs.get('steady_videos_per_s', '-')} v/s  load {runs['all']['load_before']:.2f}/{runs['all']['load_after']:.2f}")
                alone = _in_process_processes(1, listing, folder, f"r{repeat}-alone")[0]
                pair = _in_process_processes(2, listing, folder, f"r{repeat}-pair")
                row["in-process, 1 process"], row["in-process, 2 processes"] = alone, pair
                row["ceiling_2_vs_1"] = round(2 * alone["wall_seconds"] / max(p["wall_seconds"] for p in pair), 3)
                print(f"  repeat {repeat}: in-process 1 process {alone['wall_seconds']:.2f} s, 2 processes "
                      f"{max(p['wall_seconds'] for p in pair):.2f} s: ceiling {row['ceiling_2_vs_1']:.2f}x")
                one, two = row["1 worker, unit_inputs 4"], row["2 workers, unit_inputs 4"]
                rates = (two["steady_videos_per_s"], one["steady_videos_per_s"])  # None: the larger run was not slower
                row["steady_speedup_2_vs_1"] = round(rates[0] / rates[1], 3) if None not in rates else None
                row["whole_run_speedup_2_vs_1"] = round(one["all"]["wall_seconds"] / two["all"]["wall_seconds"], 3)
                row["task_per_video_overhead_ms"] = round(1000 * (row["2 workers, unit_inputs 1"]["all"]["wall_seconds"]
                                                                  - row["2 workers, unit_inputs 16"]["all"]["wall_seconds"]) / len(inputs), 1)
                results["repeats"].append(row)
        finally:
            stop_ray()
    repeats = results["repeats"]

    def median(key: str, rows=repeats):
        values = [r[key] for r in rows if r.get(key) is not None]
        return round(statistics.median(values), 3) if values else None

    results["runs"]["in-process, 1 process"] = {
        "wall_seconds": round(statistics.median(r["in-process, 1 process"]["wall_seconds"] for r in repeats), 3), "videos": len(inputs)}
    for name, _, _ in CONFIGURATIONS:
        walls = [r[name]["all"]["wall_seconds"] for r in repeats]
        results["runs"][name] = {"wall_seconds": round(statistics.median(walls), 3), "videos": len(inputs),
                                 "steady_videos_per_s": median("steady_videos_per_s", [r[name] for r in repeats])}
    results["steady_speedup_2_vs_1_workers"] = median("steady_speedup_2_vs_1")
    results["speedup_2_vs_1_workers"] = median("whole_run_speedup_2_vs_1")
    results["machine_ceiling_2_vs_1"] = median("ceiling_2_vs_1")
    results["overhead_ms_per_video_task_per_video_vs_units_of_16"] = median("task_per_video_overhead_ms")
    print(f"\n{'run (medians)':28} {'wall s':>7} {'videos/s':>9} {'ms/video':>9} {'steady v/s':>11}")
    for name, row in results["runs"].items():
        wall = row["wall_seconds"]
        print(f"{name:28} {wall:7.2f} {len(inputs) / wall:9.2f} {1000 * wall / len(inputs):9.1f} {row.get('steady_videos_per_s') or '-':>11}")
    print(f"2 workers vs 1 (units of 4): steady state {results['steady_speedup_2_vs_1_workers']:.2f}x "
          f"(per repeat {[r['steady_speedup_2_vs_1'] for r in repeats]}), whole run {results['speedup_2_vs_1_workers']:.2f}x; "
          f"two in-process processes vs one (the machine's ceiling for this work): {results['machine_ceiling_2_vs_1']:.2f}x "
          f"(per repeat {[r['ceiling_2_vs_1'] for r in repeats]}); "
          f"one task per video costs {results['overhead_ms_per_video_task_per_video_vs_units_of_16']:+.1f} ms/video "
          f"against units of 16 (2 workers)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
