"""The frozen-encoder plan: even frames, per-frame counts, codec rules, whole-frame encoding with sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codecpatch.frozen import (
    FrozenSettings,
    activity,
    activity_counts,
    activity_frames,
    compress_frames,
    encode_frames,
    even_counts,
    frame_merge,
    per_frame,
    even_frames,
    plan_frozen,
)
from codecpatch.tokens import SparseViT, StageCount, TokenSet, ViTConfig


def test_plan_encodes_factor_times_the_baseline_frames_and_splits_the_budget():
    # 64 frames of 144 picture patches at 6.25%: 576 output tokens = 4 whole frames; 4x -> 16 frames of 36
    plan = plan_frozen(64, 144, FrozenSettings(budget=0.0625, factor=4))
    assert plan.budget_tokens == 576 and len(plan.frames) == 16
    assert plan.frames.tolist() == np.linspace(0, 63, 16).round().astype(int).tolist()
    assert plan.counts.tolist() == [36] * 16
    whole = plan_frozen(64, 144, FrozenSettings(budget=0.0625, compressor="none"))
    assert len(whole.frames) == 4 and whole.counts.tolist() == [144] * 4
    capped = plan_frozen(8, 10, FrozenSettings(budget=0.5, factor=4))  # 40 tokens: 4 frames x4 -> capped at 8
    assert len(capped.frames) == 8 and capped.counts.sum() == 40
    with pytest.raises(ValueError, match="budget"):
        FrozenSettings(budget=0.0)


def test_even_helpers():
    assert even_frames(10, 3).tolist() == [0, 4, 9] and even_frames(3, 10).tolist() == [0, 1, 2]
    assert even_counts(10, 4, 100).tolist() == [3, 3, 2, 2]


def test_codec_rules_follow_activity_and_keep_their_totals():
    score = np.array([0, 0, 0, 0, 10, 10, 0, 0, 0, 0], float)
    frames = activity_frames(score, 4, mix=0.0)  # all weight in frames 4 and 5
    assert len(frames) == 4 and {4, 5} <= set(frames.tolist())
    # even weight: frame midpoints 0.05, 0.15, .., 0.95; the first reaching each target 0.125, 0.375, 0.625, 0.875
    assert activity_frames(score, 4, mix=1.0).tolist() == [1, 4, 6, 9]
    counts = activity_counts(np.array([1.0, 1, 6]), 16, per_frame_max=10, mix=0.5)
    assert counts.sum() == 16 and counts[2] > counts[0]
    motion = np.ones((3, 2, 2)) * np.array([1, 2, 3])[:, None, None]
    np.testing.assert_allclose(activity(motion, np.zeros((3, 2, 2))), [0.5, 1.0, 1.5])


def test_whole_frames_compressed_to_the_plan_carry_their_sizes():
    torch.manual_seed(0)
    model = SparseViT(ViTConfig(dim=32, depth=2, heads=2, mlp_dim=64, patch=14, pos_grid=4)).eval()
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.1)
    patches = np.random.default_rng(0).integers(0, 255, (8, 4, 4, 3, 14, 14), dtype=np.uint8)
    picture = np.ones((4, 4), bool)
    settings = FrozenSettings(budget=0.25, factor=4)
    plan = plan_frozen(8, 16, settings)  # 32 tokens: 2 whole frames -> 8 frames of 4
    tokens = encode_frames(model, patches, picture, plan.frames)
    assert tokens.n_tokens == 8 * 16 and tokens.group.unique().tolist() == list(range(8))
    out = compress_frames(tokens, plan, settings)
    assert out.n_tokens == 32 and out.sizes.sum() == 128 and torch.bincount(out.group).tolist() == [4] * 8
    pooled = compress_frames(tokens, plan, FrozenSettings(budget=0.25, factor=4, compressor="pool"))
    assert pooled.n_tokens == 32 and pooled.sizes.tolist() == [4] * 32
    # a frame encoded with others gives the same tokens as alone (each frame is its own sequence)
    alone = encode_frames(model, patches, picture, np.array([3]))
    torch.testing.assert_close(alone.tokens, tokens.tokens[tokens.group == 3], atol=1e-5, rtol=1e-5)
    xray = SparseViT(ViTConfig(dim=32, depth=2, heads=2, mlp_dim=64, patch=14, pos_grid=4, xray_blocks=(1,), xray_keep=0.5)).eval()
    xray.load_state_dict(model.state_dict())
    inside = encode_frames(xray, patches, picture, np.array([0, 5]))
    assert inside.n_tokens == 2 * (8 + 1) and inside.sizes.sum() == 32 and inside.sizes.max() == 8
    # ApET per frame, after the encoder or inside it after block 1 (proportional attention in block 2)
    apet_settings = FrozenSettings(budget=0.25, factor=4, compressor="apet")
    after = compress_frames(tokens, plan, apet_settings)
    assert after.n_tokens == 32 and after.sizes.sum() == 128 and torch.bincount(after.group).tolist() == [4] * 8
    for name in ("apet", "random_merge", "pool"):
        merged = encode_frames(model, patches, picture, plan.frames, batch=3,
                               merge=(1, frame_merge(FrozenSettings(budget=0.25, factor=4, compressor=name), plan.counts)))
        assert merged.n_tokens == 32 and merged.sizes.sum() == 128 and torch.bincount(merged.group).tolist() == [4] * 8
        assert merged.group.tolist() == merged.positions[:, 0].tolist() and merged.stages[-1].name.endswith("+merge@1")
        # every token's position is the first patch it carries (raster order inside its frame)
        first = torch.full((32,), 999).scatter_reduce(0, merged.absorbed_into, torch.arange(128) % 16, reduce="amin")
        assert (merged.positions[:, 1] * 4 + merged.positions[:, 2]).tolist() == first.tolist()
    # merging nothing inside the ViT is the plain encoding
    same = encode_frames(model, patches, picture, plan.frames[:2], merge=(1, lambda frame, j: frame))
    torch.testing.assert_close(same.tokens, tokens.tokens[:32], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="merge_after"):
        FrozenSettings(compressor="none", merge_after=4)


def test_per_frame_stitches_frames_and_keeps_provenance():
    values = torch.arange(12, dtype=torch.float32).view(6, 2)
    group = torch.tensor([0, 0, 0, 2, 2, 2])
    positions = torch.stack([group, torch.zeros(6, dtype=torch.int64), torch.tensor([0, 1, 2, 0, 1, 2])], 1)
    tokens = TokenSet(values, positions, group, torch.tensor([0, 0, 1, 2, 3, 4, 5]))  # patch 0 and 1 already merged
    seen = []

    def keep_first_two(frame, j):  # the last token merges into the second
        seen.append((j, frame.n_tokens))
        return frame.select(torch.tensor([0, 1]), frame.tokens[:2], torch.tensor([0, 1, 1]), StageCount("two", 3, 2, 0.0))

    out = per_frame(tokens, keep_first_two)
    assert seen == [(0, 3), (1, 3)] and out.n_tokens == 4 and out.group.tolist() == [0, 0, 2, 2]
    assert out.absorbed_into.tolist() == [0, 0, 1, 1, 2, 3, 3] and out.stages[-1].name == "two:per_frame"


def test_fidelity_scores_rank_ties_last_and_detail_is_the_best_match_in_the_segment():
    from codecpatch.fidelity import DenseClip
    from codecpatch.frozen_fidelity import Output, detail, ranks, weighted_segments

    queries = torch.tensor([[1.0, 0], [0, 0], [0, 1]])  # the middle one: a segment without tokens
    references = torch.tensor([[1.0, 0], [0.5, 0.5], [0, 1]])
    assert ranks(queries, references).tolist() == [1, 3, 1]
    # 2 frames, 1 x 2 picture patches; 2 segments (one frame each)
    grid = torch.tensor([[[[1.0, 0], [0, 1]]], [[[1, 1], [1, -1]]]])  # (T=2, H=1, W=2, D=2)
    clip = DenseClip("c", np.ones((1, 2), bool), grid, torch.zeros(2, 2), 0.0)
    output = Output("m", torch.tensor([[1.0, 0], [3, 1]]), torch.tensor([0, 0]), torch.tensor([3.0, 1.0]), 0.0)
    # frame 0's tokens match (1,0) exactly and (0,1) at best cos((0,1),(3,1)) = 1/sqrt(10); frame 1: no token -> 0
    assert detail(clip, output, segments=2, stride=1) == pytest.approx((1 + 1 / np.sqrt(10) + 0 + 0) / 4, abs=1e-6)
    segs = weighted_segments(output, 2, 2)
    torch.testing.assert_close(segs, torch.tensor([[(3 * 1 + 1 * 3) / 4, (0 + 1) / 4], [0.0, 0.0]]))
