"""Run one public peer on one clip inside the peer's own virtualenv and save what it chose, in one format.

    <peer venv>/bin/python benchmarks/_peer_run.py {codec-video-prep|lmms-video-utils} VIDEO IMAGES_PER_32 OUT.npz

Only the standard library, numpy and the peer itself are imported (this runs in the peer's venv). Saved:
  positions (K, 3) int64: (decoded frame index, patch row, patch column) on the peer's frame grid, one row
      per kept patch (empty canvas slots dropped);
  patches (K, 3, P, P) uint8: the pixels the peer put on its canvases for those rows (to verify the mapping);
  frame_ids (T,) int64: the peer's sampled frames; frame_hw (2,): the size every frame was resized to
      (the peer's picture box, at the top-left of its canvas); patch: P;
  seconds: the peer's processing (its imports excluded); peak_rss_mib: this process's VmHWM.

How each peer's positions map onto frame pixels:
  codec-video-prep 0.2.5: every sampled frame is resized (aspect not kept) to meta["resize_hw"], placed at
      the top-left of a canvas padded to whole 32-px blocks; src_patch_position.npy holds
      (frame id in PyAV output order, row, col) of each canvas patch, canvases (PNG, lossless here) in
      raster patch order.
  lmms-video-utils 0.1.0: frames at round(linspace(0, N-1, 64)) of the decoded frames, each resized whole
      (no padding) to the canvas; patch_positions (canvas patch grid, raster order, -1 = empty slot).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GROUP = 32  # frames per group: IMAGES_PER_32 whole-frame canvases per 32 sampled frames = the budget
FRAMES = 64


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) / 1024.0
    return float("nan")


def canvas_patches(canvases: np.ndarray, patch: int) -> np.ndarray:
    """(N, H, W, 3) canvases -> (N * H/P * W/P, 3, P, P) patches in raster order per canvas."""
    n, h, w, c = canvases.shape
    rows, cols = h // patch, w // patch
    cut = canvases[:, : rows * patch, : cols * patch]
    return cut.reshape(n, rows, patch, cols, patch, c).transpose(0, 1, 3, 5, 2, 4).reshape(-1, c, patch, patch)


def run_codec_video_prep(video: str, images: int) -> dict:
    import cv2
    from codec_video_prep.cli import main

    with tempfile.TemporaryDirectory() as out_dir:
        argv = ["codec-video-prep", "--video", video, "--out_dir", out_dir, "--num_sampled_frames", str(FRAMES),
                "--patch", "16", "--grouping_mode", "fixed", "--group_size", str(GROUP), "--images_per_group", str(images),
                "--thread_count", "1", "--canvas_format", "png"]
        sys.argv = argv
        started = time.perf_counter()
        main()
        seconds = time.perf_counter() - started
        out = Path(out_dir)
        meta = json.loads((out / "meta.json").read_text())
        positions = np.load(out / "src_patch_position.npy").astype(np.int64)
        canvases = np.stack([cv2.imread(str(out / name), cv2.IMREAD_COLOR)[..., ::-1] for name in meta["canvas_files"]])
    patches = canvas_patches(canvases, 16)
    if len(patches) != len(positions):
        raise RuntimeError(f"{len(patches)} canvas patches but {len(positions)} positions")
    return {"positions": positions, "patches": patches, "frame_ids": np.asarray(sum((g["frame_ids"] for g in meta["groups"]), [])),
            "frame_hw": np.asarray(meta["resize_hw"]), "patch": 16, "seconds": seconds}


def run_lmms_video_utils(video: str, images: int) -> dict:
    from lmms_video_utils import fetch_codec_video
    from lmms_video_utils.backends.pyav import PyAVBackend

    sampled: list[int] = []
    decode_uniform = PyAVBackend.decode_uniform

    def recording(self, *args, **kwargs):
        result = decode_uniform(self, *args, **kwargs)
        sampled.extend(result[1])
        return result

    PyAVBackend.decode_uniform = recording
    started = time.perf_counter()
    out = fetch_codec_video(video, target_canvas=images * FRAMES // GROUP, group_size=GROUP, images_per_group=images,
                            backend="pyav", device="cpu")
    seconds = time.perf_counter() - started
    canvases = out.canvases.permute(0, 2, 3, 1).numpy()
    patch = 14
    positions = out.patch_positions.numpy().astype(np.int64)
    patches = canvas_patches(canvases, patch)
    keep = positions[:, 0] >= 0
    return {"positions": positions[keep], "patches": patches[keep], "frame_ids": np.asarray(sampled),
            "frame_hw": np.asarray(canvases.shape[1:3]), "patch": patch, "seconds": seconds}


def main() -> None:
    peer, video, images, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    runners = {"codec-video-prep": run_codec_video_prep, "lmms-video-utils": run_lmms_video_utils}
    result = runners[peer](video, images)
    np.savez(out, **result, peak_rss_mib=peak_rss_mib())


if __name__ == "__main__":
    main()
