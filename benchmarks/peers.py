"""codecpatch against the two public codec front ends, area-matched, with one independent rebuild metric.

    python benchmarks/peers.py [--clips ...] [--core 0] [--out benchmarks/results/peers.json]

Peers (PyPI), each in its own virtualenv under benchmarks/.peers/ (created on first use, CPU torch first):
  codec-video-prep 0.2.5 and lmms-video-utils 0.1.0. Each is run (``_peer_run.py``, pinned to one core)
  on every clip of ../shared/videos at 1/2/4/8 whole-frame canvases per 32 sampled frames of its 64, i.e.
  3.125 / 6.25 / 12.5 / 25% of the picture area (neither pads inside its picture box).

Area-matched: our selection runs on the peer's own sampled frames, on its own patch grid (its picture
size, its patch side), with exactly as many patches as the peer kept; so does the uniform baseline
(evenly spaced whole frames, then nothing). Every selection is scored by the same rebuild: each of the 64
frames is rebuilt from the kept rectangles copied from the decoded frame (resized to the peer's picture
size), the rest held from the previous rebuilt frame; PSNR over the 64 frames.

The mapping of a peer's positions onto frame pixels is verified on every run: the pixels the peer put
on its canvases are compared with our decoded frames at the positions it reports (``mapping_psnr_db``;
a mis-mapping by one patch gives ~15 dB, a right one 30+ dB: the two resizers differ slightly).
Speed and peak RSS: the peer's processing time and its process's VmHWM; ours in a fresh process on the
same core (default config), beside plain PyAV decode of the clip, all in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _process import in_fresh_process, patchify_collect, plain_decode  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "videos"
PEERS = {"codec-video-prep": "codec-video-prep==0.2.5", "lmms-video-utils": "lmms-video-utils==0.1.0"}
VENVS = REPO / "benchmarks" / ".peers"
IMAGES_PER_32 = {0.03125: 1, 0.0625: 2, 0.125: 4, 0.25: 8}


def ensure_venv(peer: str) -> Path:
    """The peer's python, creating its venv (torch==2.13.0 first: the CPU build) when missing."""
    python = VENVS / peer / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENVS / peer)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", PEERS[peer]], check=True)
    return python


def run_peer(python: Path, peer: str, clip: Path, images: int, core: int) -> dict:
    """The peer's choice on ``clip`` (see _peer_run.py for the fields)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "peer.npz"
        done = subprocess.run(["taskset", "-c", str(core), str(python), str(REPO / "benchmarks" / "_peer_run.py"), peer,
                               str(clip), str(images), str(out)], capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError((done.stderr.strip().splitlines() or ["no output"])[-1])
        with np.load(out) as data:
            return {key: data[key] for key in data.files}


def score_on_peer_grid(clip: Path, peer: dict) -> dict:
    """Peer, ours and uniform on the peer's frames and grid, at the peer's patch count; hold-rebuild PSNR."""
    from codecpatch.metrics import selection_fidelity
    from codecpatch.patchify import Budget, PatchifyConfig, iter_clip_samples
    from codecpatch.patchify._patchify import codec_selection
    from codecpatch.patchify._select import uniform_frames

    height, width = (int(v) for v in peer["frame_hw"])
    patch = int(peer["patch"])
    frame_ids = [int(f) for f in peer["frame_ids"]]
    config = PatchifyConfig(exact_size=(width, height), patch=patch)
    samples = next(iter_clip_samples(clip, config, frame_indices=frame_ids))
    # A peer may name frames past the last one PyAV decodes (codec-video-prep's 455 of 455 on the handheld
    # clip): those are not scored, and counted in ``frames_not_decoded`` / ``positions_outside``.
    missing = sorted(set(frame_ids) - set(samples.frame_indices.tolist()))
    rows, cols = samples.geometry.grid
    content = samples.geometry.patch_content_fraction() > 0
    index_of = {f: t for t, f in enumerate(samples.frame_indices.tolist())}
    peer_kept = np.zeros((samples.n_samples, rows, cols), bool)
    positions = peer["positions"]
    inside = np.array([int(f) in index_of and r < rows and c < cols for f, r, c in positions], bool)
    for f, r, c in positions[inside]:
        peer_kept[index_of[int(f)], r, c] = True
    peer_kept &= content[None]
    # Verify the mapping: the peer's canvas pixels against our decoded frame at the position it reports.
    frames = samples.canvas_frames()
    ours_at = np.stack([frames[index_of[int(f)], r * patch : (r + 1) * patch, c * patch : (c + 1) * patch].transpose(2, 0, 1)
                        for f, r, c in positions[inside]]).astype(np.float32)
    mse = float(np.mean((ours_at - peer["patches"][inside].astype(np.float32)) ** 2))
    count = int(peer_kept.sum())
    ours, *_ = codec_selection(samples, PatchifyConfig(exact_size=(width, height), patch=patch, budget=Budget(count, "tokens")))
    onevision, *_ = codec_selection(samples, PatchifyConfig(exact_size=(width, height), patch=patch, budget=Budget(count, "tokens"),
                                                            selection="onevision"))
    uniform, _ = uniform_frames(samples.n_samples, content, count)
    scored = {name: selection_fidelity(samples, kept, "hold", frames)
              for name, kept in (("peer", peer_kept), ("ours", ours), ("onevision", onevision), ("uniform", uniform))}
    return {
        "grid": [samples.n_samples, rows, cols], "patch": patch, "frame_hw": [height, width], "tokens": count,
        "area": {name: round(f.area_fraction, 5) for name, f in scored.items()},
        "psnr": {name: f.psnr_or_none() for name, f in scored.items()},
        "mapping_psnr_db": round(10 * np.log10(255.0**2 / mse), 2) if mse > 0 else None,
        "positions_outside": int((~inside).sum()), "frames_not_decoded": missing,
        "peer_seconds": round(float(peer["seconds"]), 3), "peer_peak_rss_mib": round(float(peer["peak_rss_mib"]), 1),
    }


def summary(results: dict) -> list[str]:
    lines = []
    for peer in PEERS:
        for budget in IMAGES_PER_32:
            rows = [c["peers"][peer][str(budget)] for c in results["clips"].values()
                    if "error" not in c["peers"].get(peer, {"error": 1}) and "psnr" in c["peers"][peer].get(str(budget), {})]
            if not rows:
                continue
            mean = {k: float(np.mean([r["psnr"][k] for r in rows])) for k in ("ours", "peer", "uniform", "onevision")}
            wins = sum(r["psnr"]["ours"] > r["psnr"]["peer"] for r in rows)
            not_worse = sum(r["psnr"]["ours"] >= r["psnr"]["uniform"] - 0.05 for r in rows)
            lines.append(f"{peer:17} {100 * budget:5.2f}%  mean PSNR ours {mean['ours']:5.2f}  peer {mean['peer']:5.2f}  "
                         f"uniform {mean['uniform']:5.2f}  onevision {mean['onevision']:5.2f} dB; ours beats the peer on "
                         f"{wins}/{len(rows)} clips, >= uniform on {not_worse}/{len(rows)}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="*", type=Path, default=None)
    parser.add_argument("--core", type=int, default=0, help="CPU core every measured process is pinned to.")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "peers.json")
    args = parser.parse_args()
    clips = args.clips or sorted(p for p in SHARED.glob("*") if p.suffix != ".md")
    pythons = {peer: ensure_venv(peer) for peer in PEERS}
    results = {"machine": platform.platform(), "peers": PEERS, "budgets": list(IMAGES_PER_32), "clips": {}}
    print(f"{'clip':30} {'peer':17} {'area':>6} {'ours':>6} {'peer':>6} {'unif':>6} {'1vis':>6}  PSNR dB; map dB; peer s / MiB")
    for clip in clips:
        plain_frames, plain_seconds, plain_rss = in_fresh_process(plain_decode, clip)
        frames, seconds, rss = in_fresh_process(patchify_collect, clip)
        entry = {"ours_speed": {"frames": frames, "seconds": round(seconds, 3), "peak_rss_mib": round(rss, 1),
                                "plain_decode_seconds": round(plain_seconds, 3), "plain_decode_peak_rss_mib": round(plain_rss, 1)},
                 "peers": {}}
        print(f"{clip.name:30} ours: {seconds:.2f} s, {rss:.0f} MiB (plain decode {plain_seconds:.2f} s, {plain_rss:.0f} MiB)")
        for peer, python in pythons.items():
            entry["peers"][peer] = {}
            for budget, images in IMAGES_PER_32.items():
                try:
                    row = score_on_peer_grid(clip, run_peer(python, peer, clip, images, args.core))
                except (RuntimeError, subprocess.SubprocessError, ValueError, OSError) as error:
                    entry["peers"][peer][str(budget)] = {"error": str(error)}
                    print(f"{clip.name:30} {peer:17} {100 * budget:5.2f}% failed: {error}")
                    continue
                entry["peers"][peer][str(budget)] = row
                p = row["psnr"]
                print(f"{clip.name:30} {peer:17} {100 * row['area']['peer']:5.2f}% {p['ours']:6.2f} {p['peer']:6.2f} {p['uniform']:6.2f} "
                      f"{p['onevision']:6.2f}  map {row['mapping_psnr_db']}  {row['peer_seconds']:.2f} s / {row['peer_peak_rss_mib']:.0f} MiB",
                      flush=True)
        results["clips"][clip.name] = entry
    results["summary"] = summary(results)
    print("\n".join(results["summary"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
