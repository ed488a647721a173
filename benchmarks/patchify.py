"""Codec patchification: fidelity against baselines, throughput and memory against plain decode, and the
closest public peer (codec-video-prep), all measured in one run.

    python benchmarks/patchify.py [--clips ...] [--no-peer] [--out benchmarks/results/patchify.json]

Per clip (../shared/videos and sample_videos): 64 frames sampled, 224 letterboxed canvas, patch 16.
  * PSNR (dB) of the rebuilt sampled frames for the codec selection, uniform whole frames (held) and random
    patches, at budgets 3.1%, 6.25%, 12.5%, 25%, for the accumulated (default) and instant energies.
  * Throughput in source frames/s and peak RSS of a fresh process doing (a) plain PyAV decode and (b) the
    patchify collection (decode + motion + residual + RGB of the sampled frames + selection).
  * Peer: codec-video-prep (PyPI; the LLaVA-OneVision-2 codec front end; lmms-video-utils is not on PyPI)
    in its own virtualenv, fixed groups of 32 frames with 1/2/4/8 images each (= the four budgets), on its
    native 512-px grid. Its selection and ours are rebuilt on the same frames (its choice) with the same
    metric; its wall time is that of its own command.
A PNG plot of PSNR versus budget is written beside the JSON when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _process import in_fresh_process, patchify_collect, plain_decode  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "videos"
BUDGETS = (0.03125, 0.0625, 0.125, 0.25)
PEER_IMAGES = {0.03125: 1, 0.0625: 2, 0.125: 4, 0.25: 8}  # images per group of 32 frames
PEER_VENV = REPO / "benchmarks" / ".peer-venv"
PEER_CODECS = {"h264", "hevc"}


def default_clips() -> list[Path]:
    shared = sorted(p for p in SHARED.glob("*") if p.suffix != ".md") if SHARED.is_dir() else []
    samples = sorted((REPO / "sample_videos").glob("*.mp4"))
    return shared + samples


# -- fidelity ------------------------------------------------------------------------------------------

def fidelity_rows(path: Path) -> dict:
    from codecpatch.metrics import compare_selections
    from codecpatch.patchify import Budget, PatchifyConfig, iter_clip_samples, patchify_samples

    rows = {}
    samples = next(iter_clip_samples(path, PatchifyConfig()))
    for budget in BUDGETS:
        row = {}
        for energy in ("accumulated", "instant"):
            config = PatchifyConfig(budget=Budget(budget), energy=energy)
            patches = patchify_samples(samples, config)
            whole = [t for t, reason in patches.whole_frames if reason != "static fallback"]
            scores = compare_selections(samples, patches.kept, whole)
            row[f"codec_{energy}"] = scores["codec"].psnr_or_none()
            row["uniform"], row["random"] = scores["uniform"].psnr_or_none(), scores["random"].psnr_or_none()
            row[f"kept_{energy}"] = patches.n_kept
            row["static_fallback"] = patches.static_fallback
        row["n_dense"] = patches.n_dense
        rows[str(budget)] = row
    # The selection step alone (scoring + global top-K + cutting patches), given the collected samples.
    config = PatchifyConfig()
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        patchify_samples(samples, config)
        timings.append(time.perf_counter() - started)
    return {"n_frames": samples.n_frames, "motion_sources": sorted(set(samples.motion_sources)), "budgets": rows,
            "selection_ms": 1000 * float(np.median(timings))}


# -- peer ------------------------------------------------------------------------------------------------

def ensure_peer() -> Path | None:
    executable = PEER_VENV / "bin" / "codec-video-prep"
    if executable.exists():
        return executable
    try:
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(PEER_VENV / "bin" / "pip"), "install", "-q", "codec-video-prep"], check=True)
    except subprocess.CalledProcessError as error:
        print(f"peer unavailable: {error}", file=sys.stderr)
        return None
    return executable


def peer_rows(executable: Path, path: Path) -> dict:
    from codecpatch.metrics import selection_fidelity
    from codecpatch.patchify import Budget, PatchifyConfig, iter_clip_samples
    from codecpatch.patchify._patchify import codec_selection

    rows = {}
    for budget, images in PEER_IMAGES.items():
        with tempfile.TemporaryDirectory() as out_dir:
            started = time.perf_counter()
            subprocess.run(
                [str(executable), "--video", str(path), "--out_dir", out_dir, "--num_sampled_frames", "64", "--patch", "16",
                 "--grouping_mode", "fixed", "--group_size", "32", "--images_per_group", str(images), "--thread_count", "1"],
                check=True, capture_output=True, timeout=600,
            )
            seconds = time.perf_counter() - started
            meta = json.loads((Path(out_dir) / "meta.json").read_text())
            positions = np.load(Path(out_dir) / "src_patch_position.npy")
            frame_ids = np.load(Path(out_dir) / "frame_ids.npy")
        resize_h, resize_w = meta["resize_hw"]
        config = PatchifyConfig(exact_size=(resize_w, resize_h), patch=16)
        samples = next(iter_clip_samples(path, config, frame_indices=frame_ids.tolist()))
        rows_, cols_ = samples.geometry.grid
        geometry = samples.geometry
        if (geometry.content_height, geometry.content_width) != (resize_h, resize_w):
            rows[str(budget)] = {"error": f"size mismatch: peer {resize_h}x{resize_w}, ours {geometry.content_height}x{geometry.content_width}"}
            continue
        # The peer pads its canvas to multiples of 32 px; patches beyond our grid are pure padding.
        positions = positions[(positions[:, 1] < rows_) & (positions[:, 2] < cols_)]
        index_of = {int(f): t for t, f in enumerate(samples.frame_indices)}
        peer_kept = np.zeros((samples.n_samples, rows_, cols_), bool)
        for frame_id, row, col in positions:
            if int(frame_id) in index_of:
                peer_kept[index_of[int(frame_id)], row, col] = True
        ours, *_ = codec_selection(samples, PatchifyConfig(exact_size=config.exact_size, patch=16, budget=Budget(int(peer_kept.sum()), "tokens")))
        rows[str(budget)] = {
            "peer_tokens": int(peer_kept.sum()), "n_dense": int(peer_kept.size),
            "peer_psnr": selection_fidelity(samples, peer_kept, "mc").psnr_or_none(),
            "peer_psnr_hold": selection_fidelity(samples, peer_kept, "hold").psnr_or_none(),
            "ours_psnr": selection_fidelity(samples, ours, "mc").psnr_or_none(),
            "peer_seconds": seconds, "peer_fps": meta["total_frames"] / seconds,
        }
    return rows


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
        for key, style in (("codec_accumulated", "o-"), ("codec_instant", "x--"), ("uniform", "s-"), ("random", "^-")):
            values = [budgets[str(b)][key] for b in BUDGETS]
            axis.plot(percent, [v if v is not None else np.nan for v in values], style, label=key.replace("codec_", "codec "))
        axis.set_title(name, fontsize=8)
        axis.set_xscale("log", base=2)
        axis.set_xticks(percent, [f"{p:g}" for p in percent])
        axis.set_xlabel("tokens kept (%)", fontsize=7)
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
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "patchify.json")
    args = parser.parse_args()
    clips = args.clips or default_clips()
    peer = None if args.no_peer else ensure_peer()
    from codecpatch.decode import probe

    results = {"machine": platform.platform(), "python": platform.python_version(), "budgets": BUDGETS, "clips": {}}
    print(f"{'clip':32} {'budget':>7} {'codec':>7} {'instant':>7} {'uniform':>7} {'random':>7}   (PSNR dB)")
    for clip in clips:
        fidelity = fidelity_rows(clip)
        for budget in BUDGETS:
            row = fidelity["budgets"][str(budget)]
            cells = [row["codec_accumulated"], row["codec_instant"], row["uniform"], row["random"]]
            text = " ".join(f"{c:7.2f}" if c is not None else "  exact" for c in cells)
            print(f"{clip.name:32} {100 * budget:6.2f}% {text}" + ("  (static fallback)" if row["static_fallback"] else ""))
        plain_frames, plain_seconds, plain_rss = in_fresh_process(plain_decode, clip)
        frames, seconds, rss = in_fresh_process(patchify_collect, clip)
        speed = {"plain_decode_fps": plain_frames / plain_seconds, "plain_decode_peak_rss_mib": plain_rss,
                 "plain_decode_ms": 1000 * plain_seconds, "selection_ms": fidelity["selection_ms"],
                 "patchify_fps": frames / seconds, "patchify_peak_rss_mib": rss,
                 "ratio_to_plain_decode": (frames / seconds) / (plain_frames / plain_seconds)}
        print(f"{clip.name:32} throughput: patchify {speed['patchify_fps']:.0f} frames/s vs plain decode "
              f"{speed['plain_decode_fps']:.0f} ({speed['ratio_to_plain_decode']:.2f}x); peak RSS {rss:.0f} vs {plain_rss:.0f} MiB; "
              f"selection step {speed['selection_ms']:.0f} ms vs plain decode {speed['plain_decode_ms']:.0f} ms")
        entry = {"fidelity": fidelity, "speed": speed}
        if peer is not None and probe(clip).codec in PEER_CODECS:
            try:
                entry["peer"] = peer_rows(peer, clip)
                for budget, row in entry["peer"].items():
                    if "error" in row:
                        print(f"{clip.name:32} peer {budget}: {row['error']}")
                        continue
                    print(f"{clip.name:32} peer {100 * float(budget):5.2f}%: codec-video-prep {row['peer_psnr']} dB "
                          f"(held {row['peer_psnr_hold']}), ours {row['ours_psnr']} dB at {row['peer_tokens']} tokens; "
                          f"peer {row['peer_fps']:.0f} frames/s")
            except subprocess.CalledProcessError as error:
                reason = (error.stderr or b"").decode(errors="replace").strip().splitlines()[-1:] or [str(error)]
                entry["peer"] = {"error": reason[0]}
                print(f"{clip.name:32} peer failed: {reason[0]}")
            except (subprocess.SubprocessError, OSError, KeyError, ValueError) as error:
                entry["peer"] = {"error": str(error)}
                print(f"{clip.name:32} peer failed: {error}")
        results["clips"][clip.name] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    picture = plot(results, args.out.with_suffix(".png"))
    print(f"saved {args.out}" + (f" and {picture}" if picture else ""))


if __name__ == "__main__":
    main()
