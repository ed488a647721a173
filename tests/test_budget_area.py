"""Budgets count picture, not letterbox padding; the adaptive selection's rule on known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from codecpatch.cli import main
from codecpatch.metrics import compare_selections
from codecpatch.patchify import Budget, PatchifyConfig, iter_clip_samples, patchify_samples
from codecpatch.patchify._adaptive import PatchChange, adaptive_selection, refresh_gains
from codecpatch.patchify._select import kept_area_fraction

from .conftest import SAMPLES

# sprites_h264_p.mp4 is 320x240. Letterboxed into 224x224 it is 224x168 at y = 28: patch rows 1..12 of 14
# hold picture (rows 1 and 12 only their last / first 4 px), rows 0 and 13 are padding.
PICTURE_PER_FRAME = 12 * 14
PICTURE_AREA_PER_FRAME = 224 * 168 / 256  # = 147 patches' worth


def clip(**config):
    cfg = PatchifyConfig(frames=24, **config)
    samples = next(iter_clip_samples(SAMPLES / "sprites_h264_p.mp4", cfg))
    return samples, patchify_samples(samples, cfg)


def test_a_letterboxed_clip_counts_its_picture_patches_by_hand():
    samples, patches = clip()
    coverage = patches.geometry.patch_content_fraction()
    assert int((coverage > 0).sum()) == PICTURE_PER_FRAME and coverage.sum() == pytest.approx(PICTURE_AREA_PER_FRAME)
    assert coverage[1, 0] == pytest.approx(0.25) and coverage[12, 0] == pytest.approx(0.25) and coverage[5, 5] == 1.0
    assert patches.n_dense == 24 * 196 and patches.n_picture == 24 * PICTURE_PER_FRAME


@pytest.mark.parametrize("budget", ["0.125", "12.5%", "3f"])
def test_fraction_and_frames_budgets_are_of_the_picture(budget):
    _, patches = clip(budget=Budget.parse(budget))
    assert patches.n_budget == 3 * PICTURE_PER_FRAME  # 12.5% of 24 frames = 3 frames' worth = 504 tokens at most
    # Kept area: full patches count 1, the edge rows 1/4; three whole frames are exactly 3/24 of the picture,
    # and the selection stops there (within one patch), spending fewer tokens since it prefers full patches.
    by_hand = (patches.kept * patches.geometry.patch_content_fraction()).sum() / (24 * PICTURE_AREA_PER_FRAME)
    assert patches.area_fraction == pytest.approx(by_hand)
    assert 3 / 24 - 1 / (24 * PICTURE_AREA_PER_FRAME) <= patches.area_fraction <= 3 / 24 + 1e-9
    assert 3 * PICTURE_AREA_PER_FRAME - 1 <= patches.n_kept <= patches.n_budget


def test_baselines_are_at_equal_picture_area():
    samples, patches = clip(budget=Budget(0.125))
    scores = compare_selections(samples, patches.kept, [0])
    assert scores["uniform"].area_fraction == pytest.approx(3 / 24)  # three whole frames of 24
    assert scores["uniform"].n_kept == 3 * PICTURE_PER_FRAME >= scores["codec"].n_kept == scores["random"].n_kept
    assert scores["uniform"].area_fraction - 1 / (24 * PICTURE_AREA_PER_FRAME) <= scores["codec"].area_fraction <= 3 / 24 + 1e-9


def test_kept_area_fraction_known_answer():
    coverage = np.array([[1.0, 0.5], [0.0, 0.5]])
    kept = np.zeros((2, 2, 2), bool)
    kept[0, 0, 0] = kept[1, 0, 1] = kept[1, 1, 0] = True  # 1 + 0.5 + 0 (padding) of 2 x 2 picture
    assert kept_area_fraction(kept, coverage) == pytest.approx(1.5 / 4.0)


def test_refresh_gains_known_answer():
    # one patch, 4 samples; drift from s to u = u - s (so squared drift sums are easy by hand)
    drift = np.array([[max(u - s, 0) for u in range(4)] for s in range(4)], float)
    error_sums = np.cumsum(drift**2, axis=1)
    kept = np.array([True, False, False, False])
    gains = refresh_gains(error_sums, kept)
    # keeping at t saves sum_{u>=t} (u^2 - (u-t)^2): t=1: (1-0)+(4-1)+(9-4) = 9; t=2: 4+(9-1) = 12; t=3: 9
    assert gains[1:].tolist() == [9.0, 12.0, 9.0] and gains[0] == -np.inf
    kept[2] = True  # now t=1 only helps until sample 2: 1 - 0 = 1; t=3: 1 - 0 = 1
    assert refresh_gains(error_sums, kept)[[1, 3]].tolist() == [1.0, 1.0]


def synthetic_change(n_samples=8, rows=3, cols=3, cut=5):
    """A static picture with one patch that keeps moving, and a scene cut at sample ``cut``."""
    shape = (n_samples, rows, cols)
    moved, unexplained = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    moved[1:, 1, 1] = 10.0
    mean = np.full(shape, 100.0, np.float32)
    mean[cut:] = 160.0  # everything changes brightness at the cut and stays
    return PatchChange(moved, unexplained, mean, np.full(shape, 20.0, np.float32))


def test_adaptive_keeps_the_scene_cut_whole_and_the_moving_patch_often():
    change = synthetic_change()
    content = np.ones((3, 3), bool)
    kept, whole = adaptive_selection(change, content.astype(float), budget=9 + 9 + 3)
    assert whole == [0, 5]  # the first frame and the cut, whole
    assert kept.sum() == 21 and kept[:, 1, 1].sum() >= 4  # the rest goes to the moving patch
    # less than one frame: the first frame's patches, never more than the budget
    kept_small, whole_small = adaptive_selection(change, content.astype(float), budget=4)
    assert kept_small.sum() == 4 and kept_small[0].sum() == 4 and whole_small == []


def test_adaptive_beats_uniform_and_onevision_is_reproducible():
    samples, patches = clip(budget=Budget(0.125))
    scores = compare_selections(samples, patches.kept, [0])
    assert scores["codec"].psnr_db > scores["uniform"].psnr_db + 3
    cfg = PatchifyConfig(frames=24, budget=Budget(0.125), selection="onevision")
    first, second = patchify_samples(samples, cfg), patchify_samples(samples, cfg)
    faithful = PatchifyConfig(frames=24, budget=Budget(0.125), selection="topk", energy="instant", normalise="frame",
                              keep_i_frames=True)
    assert np.array_equal(first.kept, second.kept) and np.array_equal(first.kept, patchify_samples(samples, faithful).kept)


def test_cli_reports_area_beside_tokens():
    result = CliRunner().invoke(main, ["patchify", str(SAMPLES / "sprites_h264_p.mp4"), "--frames", "24", "--budget", "3f",
                                       "--json", "--no-fidelity"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["n_picture"] == 24 * PICTURE_PER_FRAME and record["n_budget"] == 3 * PICTURE_PER_FRAME
    assert record["area_fraction"] == pytest.approx(3 / 24, abs=1 / (24 * PICTURE_AREA_PER_FRAME))
    text = CliRunner().invoke(main, ["patchify", str(SAMPLES / "sprites_h264_p.mp4"), "--frames", "24", "--no-fidelity"])
    assert "of the picture's area" in text.output and f"{24 * PICTURE_PER_FRAME} hold picture" in text.output


def test_encode_summary_and_viz_caption_report_area():
    from codecpatch.viz import caption

    result = CliRunner().invoke(main, ["encode", str(SAMPLES / "sprites_h264_p.mp4"), "--frames", "24", "--budget", "3f",
                                       "--encoder", "pixel:64", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["n_picture"] == 24 * PICTURE_PER_FRAME
    assert record["area_fraction"] == pytest.approx(3 / 24, abs=1 / (24 * PICTURE_AREA_PER_FRAME))
    _, patches = clip(budget=Budget.parse("3f"))
    assert f"{patches.n_kept} tokens, 12.5% of picture area" in caption(patches, None)
