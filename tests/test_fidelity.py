"""The embedding-level fidelity metric (codecpatch/fidelity.py) and ``codecpatch fidelity``, on the bundled
sample videos with a small random-weight DINOv2 (built here: no download)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from codecpatch.fidelity import (  # noqa: E402
    FidelitySettings, encode_dense, encode_per_frame, evaluate_clips, random_mask, recall_at_1, segment_of, uniform_mask,
)
from codecpatch.patchify import PatchifyConfig, iter_clip_samples  # noqa: E402
from codecpatch.patchify._geometry import patches_of  # noqa: E402
from codecpatch.tokens import load_vit  # noqa: E402

from .conftest import SAMPLES  # noqa: E402
from .test_dinov2 import tiny_dinov2  # noqa: E402

CONFIG = PatchifyConfig(frames=8, size=64, patch=8)  # a letterboxed square: padding rows that must never count


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dinov2")
    tiny_dinov2(folder)
    return folder


@pytest.fixture(scope="module")
def clips():
    return [clip for name in ("sprites_h264_b.mp4", "pan_h264_p.mp4") for clip in iter_clip_samples(SAMPLES / name, CONFIG)]


def test_recall_and_segments_known_answers():
    eye = torch.eye(3)
    assert recall_at_1(eye, eye) == 1.0
    assert recall_at_1(eye, eye[[1, 2, 0]]) == 0.0
    assert segment_of(8, 4).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert segment_of(5, 4).tolist() == [0, 0, 1, 2, 3]


def test_selections_keep_equal_picture_counts_and_never_padding(model_folder, clips):
    model = load_vit(model_folder, device="cpu")
    samples = clips[0]
    dense = encode_dense(model, samples, "a")
    t, h, w = dense.grid_tokens.shape[:3]
    assert not dense.picture.all() and dense.picture.any()  # letterbox padding rows
    n = 37
    chosen = random_mask((t, h, w), dense.picture, n, seed=1)
    assert chosen.sum() == n and not chosen[:, ~dense.picture].any()
    frames = uniform_mask((t, h, w), dense.picture, 2 * int(dense.picture.sum()))
    assert frames.any(axis=(1, 2)).sum() == 2 and not frames[:, ~dense.picture].any()
    # sparse per-frame encoding with every patch kept is the dense forward
    patches = patches_of(samples.canvas_frames(), samples.geometry.patch)
    again = encode_per_frame(model, patches, np.broadcast_to(dense.picture, (t, h, w)), batch=3)
    torch.testing.assert_close(again.tokens, dense.grid_tokens[:, torch.from_numpy(dense.picture)].reshape(-1, again.tokens.shape[1]))
    assert not dense.grid_tokens[:, torch.from_numpy(~dense.picture)].any()
    # ... and a lone patch without its frame is not (out of context for the frozen encoder)
    lone = np.zeros((t, h, w), bool)
    row, col = np.argwhere(dense.picture)[0]
    lone[0, row, col] = True
    alone = encode_per_frame(model, patches, lone)
    assert alone.tokens.shape[0] == 1 and not torch.allclose(alone.tokens[0], dense.grid_tokens[0, row, col], atol=1e-3)
    assert torch.isnan(alone.cls[1:]).all() and not torch.isnan(alone.cls[0]).any()


def test_keeping_everything_scores_one_and_less_scores_less(model_folder, clips):
    model = load_vit(model_folder, device="cpu")
    result = evaluate_clips(model, clips, CONFIG, FidelitySettings(budgets=(0.0625, 1.0), compress_budget=1.0, keeps=(1.0, 0.25)))
    methods = result["methods"]
    assert len(result["clips"]) == len(clips) >= 2
    for selection in ("codec", "uniform", "random"):
        for variant in ("sparse", "pooled"):
            full = methods[f"{selection}@1/{variant}"]
            assert full["cosine"] == pytest.approx(1.0, abs=1e-5) and full["cls_cosine"] == pytest.approx(1.0, abs=1e-5)
            assert full["recall_at_1"] == full["segment_recall_at_1"] == 1.0
        low = methods[f"{selection}@0.0625/sparse"]
        assert low["cosine"] < 1.0 - 1e-6 and low["tokens"] < full["tokens"]
    # every selection at one budget has the same picture count (uniform: whole frames, the nearest count)
    counts = {s: methods[f"{s}@0.0625/sparse"]["picture_patches"] for s in ("codec", "uniform", "random")}
    assert counts["codec"] == counts["random"]
    # pruning/merging keeping everything changes nothing (DUET rewrites its contextual tokens even then);
    # keeping a quarter keeps a quarter of each frame's tokens
    # ... also when they merge after block 1 and the rest runs with proportional attention (sizes all 1)
    for name in ("apet", "random", "stride", "xray", "apet@1", "random@1", "stride@1"):
        assert methods[f"{name}:1"]["cosine"] == pytest.approx(1.0, abs=1e-5), name
    for name in ("apet", "duet", "random", "stride", "apet@1", "duet@1", "duet_mean@1"):
        assert methods[f"{name}:0.25"]["tokens"] < 0.3 * methods[f"{name}:1"]["tokens"]
    assert all(0.0 <= m["frame_localisation"] <= 1.0 and m["seconds"] > 0 for m in methods.values())


@pytest.mark.slow
def test_fidelity_command_json_and_a_bad_file(model_folder, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_text("not a video\n")
    command = [sys.executable, "-m", "codecpatch.cli", "fidelity", str(SAMPLES / "sprites_h264_b.mp4"), str(SAMPLES / "pan_h264_p.mp4"),
               "--encoder", f"vit:{model_folder}", "--frames", "8", "--max-side", "64", "--budgets", "0.125,1", "--keeps", "0.5",
               "--compress-budget", "1"]
    done = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert len(result["clips"]) == 2 and result["settings"]["patch"] == 8 and result["errors"] == []
    assert result["methods"]["codec@1/sparse"]["recall_at_1"] == 1.0
    assert set(result["methods"]) >= {"codec@0.125/sparse", "uniform@0.125/pooled", "random@0.125/sparse", "apet:0.5", "xray:0.5"}
    table = subprocess.run([*command, str(bad)], capture_output=True, text=True, timeout=300)
    assert table.returncode == 2 and "broken.mp4" in table.stderr  # named, recorded, and the good clips still scored
    assert "codec@0.125/sparse" in table.stdout and "2 clips" in table.stdout
    usage = subprocess.run([*command[:6], "--encoder", "pixel"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "vit:PATH" in usage.stderr
