"""Token compressors and the sparse ViT: fidelity against random and strided pruning, and encode speed.

    python benchmarks/tokens.py [--clips ...] [--out benchmarks/results/tokens.json]

(1) Fidelity: codec-selected patches (64 frames, 224 canvas, patch 16, 25% budget so the compressors have
    room) of real clips, encoded by the pixel encoder (projected to 256 dims) and by a random ViT-Ti; every
    compressor at keep 50/25/12.5% per frame; the relative error of rebuilding every input token from the
    token that absorbed it, against random and uniform-stride pruning with the same merge rule.
(2) Speed: ViT-Ti (random weights, fp32, CPU) encode time of one 64-frame clip at 224: dense (all 12,544
    patches), codec-selected 12.5%, and 12.5% + Xray (blocks 4, 8, 11, keep 0.7), as ratios in one run;
    plus each compressor's own time per clip.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from codecpatch.patchify import Budget, PatchifyConfig, patchify_video
from codecpatch.tokens import (
    SparseViT, ViTConfig, apet, duet_v2v, encode_pixels, encode_with_vit, random_prune, relative_rebuild_error, stride_prune,
)

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "videos"
DEFAULT_CLIPS = [SHARED / n for n in ("bbb_720p_h264_ip.mp4", "box_handheld_480p_h264_ipb.mp4", "city_pan_405p_mpeg2.mpg")]
RATIOS = (0.5, 0.25, 0.125)
METHODS = {"apet": apet, "duet_v2v": duet_v2v, "duet_v2v(mean)": lambda t, r: duet_v2v(t, r, contextual="mean"),
           "random": random_prune, "stride": stride_prune}


def random_vit(**overrides) -> SparseViT:
    torch.manual_seed(0)
    model = SparseViT(ViTConfig(dim=192, depth=12, heads=3, mlp_dim=768, **overrides))
    with torch.no_grad():
        model.pos_embed.normal_(std=0.02)
        model.cls_token.normal_(std=0.02)
    return model.eval()


def fidelity(clip: Path, model: SparseViT) -> dict:
    [patches] = list(patchify_video(clip, PatchifyConfig(budget=Budget(0.25))))
    encoders = {
        "pixel:256": encode_pixels(patches.pixels, patches.positions, patches.sample_index, dim=256),
        "vit-ti(random)": encode_with_vit(model, patches.pixels, patches.positions, patches.sample_index, patches.geometry.grid),
    }
    rows = {}
    for encoder, tokens in encoders.items():
        for ratio in RATIOS:
            for method, function in METHODS.items():
                started = time.perf_counter()
                out = function(tokens, ratio)
                rows.setdefault(encoder, {}).setdefault(str(ratio), {})[method] = {
                    "relative_error": relative_rebuild_error(tokens.tokens, out), "seconds": time.perf_counter() - started}
    return {"n_patches": patches.n_kept, "rows": rows}


def speed(clip: Path) -> dict:
    plain, xray = random_vit(), random_vit(xray_blocks=(4, 8, 11), xray_keep=0.7)
    results = {}
    for label, config, model in (("dense", PatchifyConfig(mode="chunk", frames=64), plain),
                                 ("codec 12.5%", PatchifyConfig(budget=Budget(0.125)), plain),
                                 ("codec 12.5% + xray", PatchifyConfig(budget=Budget(0.125)), xray)):
        [patches] = list(patchify_video(clip, config))
        started = time.perf_counter()
        tokens = encode_with_vit(model, patches.pixels, patches.positions, patches.sample_index, patches.geometry.grid)
        results[label] = {"tokens_in": patches.n_kept, "tokens_out": tokens.n_tokens, "seconds": time.perf_counter() - started}
    dense = results["dense"]["seconds"]
    for row in results.values():
        row["speedup_vs_dense"] = dense / row["seconds"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="*", type=Path, default=DEFAULT_CLIPS)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "tokens.json")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = random_vit()
    results = {"machine": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(), "fidelity": {}}
    print(f"{'clip':32} {'encoder':16} {'keep':>5}  " + "  ".join(f"{m:>14}" for m in METHODS) + "   (relative rebuild error)")
    for clip in args.clips:
        entry = fidelity(clip, model)
        results["fidelity"][clip.name] = entry
        for encoder, by_ratio in entry["rows"].items():
            for ratio, row in by_ratio.items():
                cells = "  ".join(f"{row[m]['relative_error']:14.4f}" for m in METHODS)
                print(f"{clip.name:32} {encoder:16} {float(ratio):5.3f}  {cells}")
    results["speed"] = speed(args.clips[0])
    for label, row in results["speed"].items():
        print(f"ViT-Ti on {args.clips[0].name}: {label:20} {row['tokens_in']:6d} -> {row['tokens_out']:6d} tokens "
              f"{row['seconds']:7.2f} s  ({row['speedup_vs_dense']:.1f}x dense)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
