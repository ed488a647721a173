"""The optical-flow fallback (codecs without motion vectors: HEVC, VP9, AV1): what each cheaper motion estimate
costs and what it keeps, all measured in one run.

    python benchmarks/flow_fallback.py --clips CLIP ... [--core 1] [--repeats 3] [--variants ...]
        [--no-speed] [--no-fidelity] [--out benchmarks/results/flow_fallback.json]

Variants (DecodeOptions of the flow path; see ``VARIANTS``): the DIS preset and the size of the luma the
flow runs on (``flow_max_side``: "@160"), and "diff", no motion at all (the residual is then the plain frame
difference). "default" is what `codecpatch patchify` decodes with now (``decode_options(PatchifyConfig())``:
16-px blocks and the flow on <= 80 px since 0.2); every variant keeps its block grid and residual.

  * Speed: the whole command `codecpatch patchify --no-fidelity CLIP` (codec mode, default settings, start-up
    included) as a ratio to FFmpeg's plain decode of the same clip, `ffmpeg -threads 1 -an -i CLIP -f null -`,
    one core (`taskset`), runs interleaved per repeat, medians. A variant other than "default" runs the same
    command with the collector's decode options replaced (``--variant`` below, in a fresh process).
    Start-up: the same command on the clip's first 2 frames, against FFmpeg on them.
  * Per-frame cost of the flow alone (ms/frame, in process, median of the repeats) on the clip's lumas.
  * Fidelity: area-matched PSNR as benchmarks/patchify.py scores it (64 frames sampled, 224 canvas, patch 16;
    the adaptive selection's rebuilt frames, and uniform whole frames at the same picture area), at budgets
    3.1 / 6.25 / 12.5 / 25% of the picture, per variant.
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
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUDGETS = (0.03125, 0.0625, 0.125, 0.25)
#: name -> DecodeOptions fields replacing the collector's (None: the defaults).
VARIANTS: dict[str, dict | None] = {
    "default": None,
    "fast": {"flow_preset": "fast", "flow_max_side": None},
    "ultrafast": {"flow_preset": "ultrafast", "flow_max_side": None},
    "fast@160": {"flow_preset": "fast", "flow_max_side": 160},
    "fast@80": {"flow_preset": "fast", "flow_max_side": 80},
    "ultrafast@160": {"flow_preset": "ultrafast", "flow_max_side": 160},
    "medium@160": {"flow_preset": "medium", "flow_max_side": 160},
    "diff": {"motion": "none"},
    "every2": {"flow_every": 2},
    "every3": {"flow_every": 3},
    "every4": {"flow_every": 4},
}


def use_variant(name: str) -> None:
    """Make the patchify collector decode with variant ``name`` (in this process)."""
    fields = VARIANTS[name]
    if fields is None:
        return
    from codecpatch.patchify import _collect

    original = _collect.decode_options
    _collect.decode_options = lambda config, **settings: replace(original(config, **settings), **fields)


def timed(command: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds user + system) of ``command`` and its children."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, command)
    return wall, usage.ru_utime + usage.ru_stime


def command(clip: Path, core: int, variant: str) -> list[str]:
    if variant == "default":  # exactly the user's command
        code = "import sys; from codecpatch.cli import console_main; sys.exit(console_main())"
    else:
        code = (f"import sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); import flow_fallback; "
                f"flow_fallback.use_variant({variant!r}); from codecpatch.cli import console_main; sys.exit(console_main())")
    return ["taskset", "-c", str(core), sys.executable, "-c", code, "patchify", "--no-fidelity", str(clip)]


def ffmpeg(clip: Path, core: int) -> list[str]:
    return ["taskset", "-c", str(core), "ffmpeg", "-nostdin", "-loglevel", "error", "-threads", "1", "-an", "-i", str(clip),
            "-f", "null", "-"]


def speed(clip: Path, frames: int, variants: list[str], core: int, repeats: int) -> dict:
    """Whole-command wall and CPU seconds per variant and of FFmpeg's plain decode, interleaved; medians and
    ratios (FFmpeg's time over ours: 0.5 means half FFmpeg's speed)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # One untimed run that may write bytecode (PYTHONDONTWRITEBYTECODE=1 would recompile on every start).
    timed(command(clip, core, variants[0]), {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"})
    names = ["ffmpeg", *variants]
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            seconds, cpu_seconds = timed(ffmpeg(clip, core) if name == "ffmpeg" else command(clip, core, name), env)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
    median_wall = {name: statistics.median(values) for name, values in wall.items()}
    median_cpu = {name: statistics.median(values) for name, values in cpu.items()}
    return {"wall_s": wall, "cpu_s": cpu, "median_wall_s": median_wall, "median_cpu_s": median_cpu,
            "frames_per_s": {k: frames / v for k, v in median_wall.items()},
            "ratio_to_plain_decode": {v: median_wall["ffmpeg"] / median_wall[v] for v in variants},
            "cpu_ratio_to_plain_decode": {v: median_cpu["ffmpeg"] / median_cpu[v] for v in variants}}


def startup(clip: Path, core: int, repeats: int) -> dict:
    """Wall and CPU seconds of the default command and of FFmpeg on the clip's first 2 frames (stream-copied),
    medians: what each costs before its per-frame work."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as folder:
        short = Path(folder) / f"first2{clip.suffix}"
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(clip), "-an", "-c", "copy", "-frames:v", "2",
                        str(short)], check=True)
        runs: dict[str, list[tuple[float, float]]] = {"ffmpeg": [], "ours": []}
        for _ in range(repeats):
            runs["ffmpeg"].append(timed(ffmpeg(short, core)))
            runs["ours"].append(timed(command(short, core, "default"), env))
    return {f"{name}_{kind}": statistics.median(run[i] for run in values) for name, values in runs.items()
            for i, kind in enumerate(("wall_s", "cpu_s"))}


def patchify_options():
    """The DecodeOptions `codecpatch patchify` decodes with under the default PatchifyConfig."""
    from codecpatch.patchify import PatchifyConfig
    from codecpatch.patchify._collect import decode_options

    return decode_options(PatchifyConfig())


def flow_cost(clip: Path, variants: list[str], repeats: int) -> dict:
    """ms/frame of the flow estimate alone (luma halving, DIS, pooling), on the reader's analysis lumas (averaged
    over every frame: with ``flow_every`` n, only every n-th frame estimates)."""
    import av
    import numpy as np

    from codecpatch.decode._reader import _luma
    from codecpatch.motion import OpticalFlowEstimator, grid_shape_for

    options = patchify_options()
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        lumas, grids, factors = [], [], []
        for frame in container.decode(stream):
            factor = 1
            while max(frame.width, frame.height) / factor > options.analysis_max_side and factor * 2 <= options.block_size // 2:
                factor *= 2
            lumas.append(_luma(frame, factor))
            grids.append(grid_shape_for(frame.height, frame.width, options.block_size))
            factors.append(float(factor))
    pairs = [(i, i - 1) for i in range(1, len(lumas)) if lumas[i].shape == lumas[i - 1].shape]
    costs = {}
    for variant in variants:
        fields = {**options.__dict__, **(VARIANTS[variant] or {})}
        if fields.get("motion") == "none":
            continue
        estimator = OpticalFlowEstimator(fields["flow_preset"], fields["flow_max_side"])
        # As the reader: every n-th frame, and the first of each run of same-size frames; the others reuse one.
        estimated = [(i, j) for i, j in pairs if i % fields["flow_every"] == 0 or (i - 1, i - 2) not in pairs]
        runs = []
        for _ in range(repeats):
            started = time.perf_counter()
            for i, j in estimated:
                estimator.block_field(lumas[i], lumas[j], grids[i], factors[i])
            runs.append((time.perf_counter() - started) / max(len(pairs), 1))
        costs[variant] = 1000 * float(np.median(runs))
    return costs


def fidelity(clip: Path, variant: str) -> dict:
    """Area-matched PSNR (dB) per budget: the adaptive selection and uniform whole frames at its area."""
    from codecpatch.metrics import compare_selections
    from codecpatch.patchify import Budget, PatchifyConfig, _collect, patchify_samples

    original = _collect.decode_options
    try:
        use_variant(variant)
        samples = next(iter(_collect.iter_clip_samples(clip, PatchifyConfig())))
    finally:
        _collect.decode_options = original
    rows = {}
    for budget in BUDGETS:
        patches = patchify_samples(samples, PatchifyConfig(budget=Budget(budget)))
        whole = [t for t, reason in patches.whole_frames if reason != "static fallback"]
        scores = compare_selections(samples, patches.kept, whole)
        rows[str(budget)] = {"adaptive": scores["codec"].psnr_or_none(), "area": round(scores["codec"].area_fraction, 5),
                             "uniform": scores["uniform"].psnr_or_none(), "area_uniform": round(scores["uniform"].area_fraction, 5)}
    return {"motion_sources": sorted(set(samples.motion_sources)), "budgets": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="+", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--core", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--no-fidelity", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "flow_fallback.json")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    import cv2

    from codecpatch.decode import plan_packets

    cv2.setNumThreads(1)
    defaults = patchify_options()
    results = []
    for clip in args.clips:
        clip = clip.resolve()
        plan = plan_packets(clip)
        row: dict = {"clip": clip.name, "frames": plan.packets}
        print(f"{clip.name} ({plan.packets} frames)", flush=True)
        if not args.no_speed:
            row["speed"] = speed(clip, plan.packets, args.variants, args.core, args.repeats)
            row["startup_s"] = startup(clip, args.core, args.repeats)
            ratios, cpu_ratios = row["speed"]["ratio_to_plain_decode"], row["speed"]["cpu_ratio_to_plain_decode"]
            print("  x plain decode, wall (cpu): " + ", ".join(f"{v} {ratios[v]:.2f} ({cpu_ratios[v]:.2f})" for v in args.variants)
                  + f"\n  start-up wall (cpu): ours {row['startup_s']['ours_wall_s']:.2f} ({row['startup_s']['ours_cpu_s']:.2f}) s,"
                  f" ffmpeg {row['startup_s']['ffmpeg_wall_s']:.2f} ({row['startup_s']['ffmpeg_cpu_s']:.2f}) s", flush=True)
        row["flow_ms_per_frame"] = flow_cost(clip, args.variants, args.repeats)
        print("  flow ms/frame: " + ", ".join(f"{v} {ms:.2f}" for v, ms in row["flow_ms_per_frame"].items()), flush=True)
        if not args.no_fidelity:
            row["fidelity"] = {}
            for variant in args.variants:
                try:
                    row["fidelity"][variant] = fidelity(clip, variant)
                except Exception as error:  # noqa: BLE001 - a variant that fails on a clip is reported, not fatal
                    row["fidelity"][variant] = {"error": f"{type(error).__name__}: {error}"}
            for variant, scores in row["fidelity"].items():
                if "error" in scores:
                    print(f"  PSNR adaptive/uniform {variant:>14}: failed: {scores['error']}", flush=True)
                    continue
                cells = [f"{b['adaptive']:.2f}/{b['uniform']:.2f}" for b in scores["budgets"].values()]
                print(f"  PSNR adaptive/uniform {variant:>14}: " + "  ".join(cells), flush=True)
        results.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.platform(), "cpu_count": os.cpu_count(), "core": args.core,
                                    "repeats": args.repeats, "load_average": os.getloadavg(),
                                    "defaults": {"flow_preset": defaults.flow_preset, "flow_max_side": defaults.flow_max_side,
                                                 "analysis_max_side": defaults.analysis_max_side, "block_size": defaults.block_size,
                                                 "residual_stride": defaults.residual_stride},
                                    "results": results}, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
