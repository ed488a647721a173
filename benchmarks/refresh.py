"""Refresh patches: PSNR of the top-K selection (`selection="topk"`) with 0/10/20/35% of its budget on seeded random patches.

    python benchmarks/refresh.py [--clips ...] [--out benchmarks/results/refresh.json]

Same setting as benchmarks/patchify.py (64 frames, 224 canvas, patch 16, first frame whole, motion-
compensated rebuild); budgets 6.25%, 12.5%, 25%.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from codecpatch.metrics import selection_fidelity
from codecpatch.patchify import Budget, PatchifyConfig, iter_clip_samples
from codecpatch.patchify._patchify import codec_selection

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "videos"
CLIPS = ("bbb_720p_h264_ip.mp4", "box_handheld_480p_h264_ipb.mp4", "city_pan_405p_mpeg2.mpg", "bear_180p_hevc.h265",
         "parking_static_432p_h264.mp4", "nasa_jwst_180p_h264_ipb.mp4", "traffic_reschange_vp9.ivf")
BUDGETS = (0.0625, 0.125, 0.25)
REFRESH = (0.0, 0.1, 0.2, 0.35)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="*", type=Path, default=[SHARED / c for c in CLIPS])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "refresh.json")
    args = parser.parse_args()
    results = {}
    print(f"{'clip':32} {'budget':>7}  " + "  ".join(f"refresh {r:4.2f}" for r in REFRESH) + "   (PSNR dB)")
    for clip in args.clips:
        samples = next(iter_clip_samples(clip, PatchifyConfig()))
        for budget in BUDGETS:
            row = []
            for refresh in REFRESH:
                kept, *_ = codec_selection(samples, PatchifyConfig(budget=Budget(budget), selection="topk", refresh=refresh))
                row.append(round(selection_fidelity(samples, kept, "mc").psnr_db, 3))
            results.setdefault(clip.name, {})[str(budget)] = dict(zip(map(str, REFRESH), row))
            print(f"{clip.name:32} {100 * budget:6.2f}%  " + "  ".join(f"{v:12.2f}" for v in row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
