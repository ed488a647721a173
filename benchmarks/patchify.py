"""Codec patchification: fidelity against baselines at equal picture area, throughput and memory against
plain decode, all measured in one run (the public peers are in benchmarks/peers.py).

    python benchmarks/patchify.py [--clips ...] [--out benchmarks/results/patchify.json] [--set FIELD=VALUE ...] [--no-speed]

``--set`` changes PatchifyConfig fields for every selection (JSON values), e.g. the analysis of version 0.1:
``--set block_size=8 --set residual_stride=1 --set flow_max_side=0`` (it reproduces 0.1's rows exactly).

Per clip (../shared/videos and sample_videos): 64 frames sampled, 224 letterboxed canvas, patch 16.
  * PSNR (dB) of the rebuilt sampled frames (kept patches copied from the decoded frames, the rest held
    from the previous rebuilt frame) at budgets 3.1%, 6.25%, 12.5%, 25% of the *picture* (letterbox
    padding never counts), for the adaptive selection (default), the global top-K of accumulated energy
    ("topk"), the OneVision-faithful rule ("onevision"), uniform whole frames at the same picture area
    and random patches at the same token count; each with its kept area fraction.
  * Throughput in source frames/s and peak RSS of a fresh process doing (a) plain PyAV decode and (b) the
    default patchify (decode + motion + residual + RGB of the sampled frames + selection).
A PNG plot of PSNR versus budget is written beside the JSON when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _process import in_fresh_process, patchify_collect, plain_decode  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "videos"
BUDGETS = (0.03125, 0.0625, 0.125, 0.25)
SELECTIONS = ("adaptive", "topk", "onevision")


def default_clips() -> list[Path]:
    shared = sorted(p for p in SHARED.glob("*") if p.suffix != ".md") if SHARED.is_dir() else []
    samples = sorted((REPO / "sample_videos").glob("*.mp4"))
    return shared + samples


# -- fidelity ------------------------------------------------------------------------------------------

def fidelity_rows(path: Path, settings: dict | None = None) -> dict:
    from codecpatch.metrics import compare_selections, selection_fidelity
    from codecpatch.patchify import Budget, PatchifyConfig, iter_clip_samples, patchify_samples

    settings = settings or {}
    rows = {}
    samples = next(iter_clip_samples(path, PatchifyConfig(**settings)))
    frames = samples.canvas_frames()
    for budget in BUDGETS:
        row = {}
        for selection in SELECTIONS:
            patches = patchify_samples(samples, PatchifyConfig(**settings, budget=Budget(budget), selection=selection))
            if selection == "adaptive":  # baselines at the default selection's picture area
                whole = [t for t, reason in patches.whole_frames if reason != "static fallback"]
                scores = compare_selections(samples, patches.kept, whole)
                for name in ("uniform", "random"):
                    row[name], row[f"area_{name}"] = scores[name].psnr_or_none(), round(scores[name].area_fraction, 5)
                fidelity = scores["codec"]
            else:
                fidelity = selection_fidelity(samples, patches.kept, "hold", frames)
            row[selection], row[f"area_{selection}"] = fidelity.psnr_or_none(), round(fidelity.area_fraction, 5)
            row[f"kept_{selection}"] = patches.n_kept
            row["static_fallback"] = patches.static_fallback
            row["whole_frames_adaptive" if selection == "adaptive" else "_"] = len(patches.whole_frames)
        row.pop("_", None)
        row["n_dense"], row["n_picture"] = patches.n_dense, patches.n_picture
        rows[str(budget)] = row
    # The selection step alone (scoring + selection + cutting patches), given the collected samples.
    config = PatchifyConfig(**settings)
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        patchify_samples(samples, config)
        timings.append(time.perf_counter() - started)
    return {"n_frames": samples.n_frames, "motion_sources": sorted(set(samples.motion_sources)), "budgets": rows,
            "selection_ms": 1000 * float(np.median(timings))}


# -- output --------------------------------------------------------------------------------------------

def plot(results: dict, out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    clips = [name for name, r in results["clips"].items() if not name.startswith("static")]
    columns = 4
    rows = -(-len(clips) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    percent = [100 * b for b in BUDGETS]
    for axis, name in zip(axes.ravel(), clips):
        budgets = results["clips"][name]["fidelity"]["budgets"]
        for key, style in (("adaptive", "o-"), ("topk", "x--"), ("onevision", "d:"), ("uniform", "s-"), ("random", "^-")):
            values = [budgets[str(b)][key] for b in BUDGETS]
            axis.plot(percent, [v if v is not None else np.nan for v in values], style, label=key)
        axis.set_title(name, fontsize=8)
        axis.set_xscale("log", base=2)
        axis.set_xticks(percent, [f"{p:g}" for p in percent])
        axis.set_xlabel("picture area kept (%)", fontsize=7)
        axis.set_ylabel("PSNR (dB)", fontsize=7)
        axis.tick_params(labelsize=7)
    for axis in axes.ravel()[len(clips):]:
        axis.axis("off")
    axes[0, 0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out, dpi=90)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="*", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "patchify.json")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="a PatchifyConfig field (JSON value)")
    parser.add_argument("--no-speed", action="store_true", help="fidelity only (no fresh-process throughput runs)")
    args = parser.parse_args()
    settings = {name: json.loads(value) for name, _, value in (item.partition("=") for item in args.set)}
    clips = args.clips or default_clips()
    results = {"machine": platform.platform(), "python": platform.python_version(), "budgets": BUDGETS, "settings": settings,
               "clips": {}}
    print(f"{'clip':32} {'budget':>7} {'area':>6} {'adapt':>7} {'topk':>7} {'1vision':>7} {'uniform':>7} {'random':>7}   (PSNR dB, hold)")
    for clip in clips:
        fidelity = fidelity_rows(clip, settings)
        for budget in BUDGETS:
            row = fidelity["budgets"][str(budget)]
            cells = [row[key] for key in (*SELECTIONS, "uniform", "random")]
            text = " ".join(f"{c:7.2f}" if c is not None else "  exact" for c in cells)
            print(f"{clip.name:32} {100 * budget:6.2f}% {100 * row['area_adaptive']:5.2f}% {text}"
                  + ("  (static fallback)" if row["static_fallback"] else ""), flush=True)
        if args.no_speed:
            results["clips"][clip.name] = {"fidelity": fidelity}
            continue
        plain_frames, plain_seconds, plain_rss = in_fresh_process(plain_decode, clip)
        frames, seconds, rss = in_fresh_process(partial(patchify_collect, settings=settings), clip)
        speed = {"plain_decode_fps": plain_frames / plain_seconds, "plain_decode_peak_rss_mib": plain_rss,
                 "plain_decode_ms": 1000 * plain_seconds, "selection_ms": fidelity["selection_ms"],
                 "patchify_fps": frames / seconds, "patchify_peak_rss_mib": rss,
                 "ratio_to_plain_decode": (frames / seconds) / (plain_frames / plain_seconds)}
        print(f"{clip.name:32} throughput: patchify {speed['patchify_fps']:.0f} frames/s vs plain decode "
              f"{speed['plain_decode_fps']:.0f} ({speed['ratio_to_plain_decode']:.2f}x); peak RSS {rss:.0f} vs {plain_rss:.0f} MiB; "
              f"selection step {speed['selection_ms']:.0f} ms vs plain decode {speed['plain_decode_ms']:.0f} ms", flush=True)
        results["clips"][clip.name] = {"fidelity": fidelity, "speed": speed}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    picture = plot(results, args.out.with_suffix(".png"))
    print(f"saved {args.out}" + (f" and {picture}" if picture else ""))


if __name__ == "__main__":
    main()
