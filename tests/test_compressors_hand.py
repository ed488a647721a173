"""Compressor rules checked against answers worked out by hand on tiny token sets (no randomness left open)."""

from __future__ import annotations

import pytest
import torch

from codecpatch.tokens import TokenSet, apet, duet_v2v, evit_keep, pool_frames, random_merge, reorganise


def one_frame(values: torch.Tensor, cls: torch.Tensor | None = None) -> TokenSet:
    n = values.shape[0]
    positions = torch.stack([torch.zeros(n, dtype=torch.int64), torch.zeros(n, dtype=torch.int64), torch.arange(n)], dim=1)
    return TokenSet(values, positions, torch.zeros(n, dtype=torch.int64), torch.arange(n), cls)


# t0..t4; with seed 1 the farthest-point start is t0 (3,0,0), the farthest from it is t3 (0,0,5): the basis spans
# the x and z axes. Relative errors: t1 (0,4,0) 4/4 = 1.0, t2 (3,4,0) 4/5 = 0.8, t4 (3,0,1) 0 (in the span).
APET_TOKENS = torch.tensor([[3.0, 0, 0], [0, 4, 0], [3, 4, 0], [0, 0, 5], [3, 0, 1]])


def test_apet_threshold_keeps_the_basis_and_the_badly_explained_tokens():
    out = apet(one_frame(APET_TOKENS), keep_ratio=0.4, n_basis=2, threshold=0.9, seed=1)
    assert out.positions[:, 2].tolist() == [0, 1, 3]  # basis t0, t3 and t1 (error 1.0 >= 0.9); t2 (0.8) dropped
    # t2 merges into its most cosine-similar kept token t1 (cos 0.8 vs 0.6 to t0); t4 into t0 (cos 0.95)
    expected = torch.tensor([[3.0, 0, 0.5], [1.5, 4, 0], [0, 0, 5]])
    torch.testing.assert_close(out.tokens, expected, atol=1e-5, rtol=0)
    assert out.absorbed_into.tolist() == [0, 1, 1, 2, 0]
    lower = apet(one_frame(APET_TOKENS), keep_ratio=0.4, n_basis=2, threshold=0.5, seed=1)
    assert lower.positions[:, 2].tolist() == [0, 1, 2, 3]  # now t2 (0.8) is kept too; t4 (0) never


def test_xray_keep_rule_by_threshold_and_by_rate():
    scores = torch.tensor([0.2, 0.4, 0.1, 0.3])  # n = 4: scores * n = 0.8, 1.6, 0.4, 1.2
    kept, rest = evit_keep(scores, keep=0.7, threshold=1.0)
    assert kept.tolist() == [1, 3] and rest.tolist() == [0, 2]
    kept, rest = evit_keep(scores, keep=0.7, threshold=0.5)
    assert kept.tolist() == [0, 1, 3] and rest.tolist() == [2]
    kept, rest = evit_keep(scores, keep=0.7)  # ceil(0.7 * 4) = 3 most attended
    assert kept.tolist() == [0, 1, 3]
    kept, _ = evit_keep(scores, keep=0.5, threshold=5.0)  # nothing reaches it: the single most attended survives
    assert kept.tolist() == [1]


def test_xray_reorganise_fuses_the_rest_weighted_by_attention():
    tokens = torch.tensor([[1.0, 0], [0, 1], [2, 2], [4, 0]])
    cls = torch.tensor([[9.0, 9]])
    x = torch.cat([cls, tokens])[None]  # (1, 1 + 4, 2): [CLS] then the patches
    valid = torch.ones(1, 5, dtype=torch.bool)
    row = torch.tensor([[0.0, 0.2, 0.4, 0.1, 0.3]])  # the [CLS] column is ignored (offset 1)
    source = torch.arange(4)[None]
    out, out_valid, new_source = reorganise(x, valid, source, row, offset=1, keep=0.5, threshold=1.0)
    # kept t1, t3 (in order); fused = (0.2 * (1, 0) + 0.1 * (2, 2)) / 0.3 = (4/3, 2/3)
    expected = torch.tensor([[9.0, 9], [0, 1], [4, 0], [4 / 3, 2 / 3]])
    torch.testing.assert_close(out[0], expected)
    assert out_valid.all() and new_source[0].tolist() == [2, 0, 2, 1]


def test_duet_contextual_token_is_anchor_plus_mean_of_its_pool_members():
    # [CLS] (10, 0): attention order follows the first coordinate: t0, t1 dominant (budget round(4/6 * 6) = 4,
    # half dominant); pool = t2..t5 (pool_factor 4 * 2 >= 4), anchors pool[[0, 3]] = t2, t5; by cosine t3 -> t2,
    # t4 -> t5. Contextual tokens: t2 + mean(t2, t3) and t5 + mean(t4, t5).
    values = torch.tensor([[5.0, 0], [4, 0.5], [1, 1], [0.9, 1.1], [0, -1], [-0.1, -1.2]])
    out = duet_v2v(one_frame(values, cls=torch.tensor([10.0, 0])), keep_ratio=4 / 6)
    assert out.positions[:, 2].tolist() == [0, 1, 2, 5]
    expected = torch.tensor([[5.0, 0], [4, 0.5], [1 + 0.95, 1 + 1.05], [-0.1 - 0.05, -1.2 - 1.1]])
    torch.testing.assert_close(out.tokens, expected)
    assert out.absorbed_into.tolist() == [0, 1, 2, 2, 3, 3]
    mean_rule = duet_v2v(one_frame(values, cls=torch.tensor([10.0, 0])), keep_ratio=4 / 6, contextual="mean")
    torch.testing.assert_close(mean_rule.tokens[2:], torch.tensor([[0.95, 1.05], [-0.05, -1.1]]))


def grid_frames(values: torch.Tensor, frames: int, rows: int, cols: int) -> TokenSet:
    """Frames of a rows x cols patch grid in raster order; ``values`` (frames * rows * cols, D)."""
    t, h, w = torch.meshgrid(torch.arange(frames), torch.arange(rows), torch.arange(cols), indexing="ij")
    positions = torch.stack([t.flatten(), h.flatten(), w.flatten()], dim=1)
    return TokenSet(values, positions, positions[:, 0].clone(), torch.arange(len(values)))


def test_pool_2x2_on_an_odd_grid_pools_edge_cells_with_what_they_have():
    values = torch.arange(9, dtype=torch.float32)[:, None]  # one 3x3 frame, token value = raster index
    out = pool_frames(grid_frames(values, 1, 3, 3), (2, 2))
    assert out.positions[:, 1:].tolist() == [[0, 0], [0, 2], [2, 0], [2, 2]]
    torch.testing.assert_close(out.tokens.flatten(), torch.tensor([(0 + 1 + 3 + 4) / 4, (2 + 5) / 2, (6 + 7) / 2, 8.0]))
    assert out.sizes.tolist() == [4, 2, 2, 1]
    assert out.absorbed_into.tolist() == [0, 0, 1, 0, 0, 1, 2, 2, 3]
    wide = pool_frames(grid_frames(values, 1, 3, 3), (1, 2))  # 2x1: pairs along a row
    assert wide.n_tokens == 6 and wide.sizes.tolist() == [2, 1, 2, 1, 2, 1]


def test_pool_keeps_frames_apart():
    values = torch.arange(8, dtype=torch.float32)[:, None]  # two 2x2 frames
    out = pool_frames(grid_frames(values, 2, 2, 2), (2, 2))
    torch.testing.assert_close(out.tokens.flatten(), torch.tensor([1.5, 5.5]))
    assert out.group.tolist() == [0, 1] and out.sizes.tolist() == [4, 4]


def test_merges_are_size_weighted_so_a_chain_keeps_the_patch_mean_exactly():
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(2 * 5 * 7, 16, generator=generator)
    base = grid_frames(values, 2, 5, 7)
    pooled = pool_frames(base, (2, 2))
    chained = random_merge(pooled, 0.4, seed=3)
    assert chained.sizes.sum() == 70
    for frame in (0, 1):
        rows = chained.group == frame
        size_weighted = (chained.tokens[rows] * chained.sizes[rows, None]).sum(0) / chained.sizes[rows].sum()
        torch.testing.assert_close(size_weighted, values[base.group == frame].mean(0), atol=1e-5, rtol=1e-5)
        plain = chained.tokens[rows].mean(0)  # what a plain mean of merged tokens would wrongly report
        assert not torch.allclose(plain, values[base.group == frame].mean(0), atol=1e-3)


def test_random_merge_counts_per_frame_and_merges_into_the_nearest_kept_token():
    generator = torch.Generator().manual_seed(1)
    values = torch.randn(3 * 4 * 4, 8, generator=generator)
    base = grid_frames(values, 3, 4, 4)
    out = random_merge(base, counts=torch.tensor([1, 5, 16]), seed=0)
    assert torch.bincount(out.group).tolist() == [1, 5, 16]
    torch.testing.assert_close(out.tokens[0], values[:16].mean(0))  # one token: the frame's mean
    torch.testing.assert_close(out.tokens[6:], values[32:])  # every token kept: unchanged
    normalised = torch.nn.functional.normalize(values, dim=1)
    kept_index = 16 + out.positions[1:6, 1] * 4 + out.positions[1:6, 2]  # frame 1's kept tokens, original rows
    for i in range(16, 32):
        expected = int(torch.argmax(normalised[kept_index] @ normalised[i]))
        assert int(out.absorbed_into[i]) == 1 + expected
    with pytest.raises(ValueError, match="exactly one"):
        random_merge(base)


# -- merging inside the ViT: proportional attention --------------------------------------------------------


def test_proportional_attention_by_hand_a_size_two_key_is_two_identical_keys():
    """d = 1, one query q = 1, keys 0 and 1, values 1 and 0, sizes 1 and 2: weights are proportional to
    1 * e^0 and 2 * e^1, so the output is 1 / (1 + 2e); the same as three size-1 keys (0, 1, 1)."""
    from codecpatch.tokens import proportional_attention

    q = torch.ones(1, 1, 1, 1)
    k, v = torch.tensor([0.0, 1.0]).view(1, 1, 2, 1), torch.tensor([1.0, 0.0]).view(1, 1, 2, 1)
    out = proportional_attention(q, k, v, torch.tensor([[1.0, 2.0]]))
    assert out.item() == pytest.approx(1 / (1 + 2 * torch.e), abs=1e-6)
    three = proportional_attention(q, torch.tensor([0.0, 1, 1]).view(1, 1, 3, 1), torch.tensor([1.0, 0, 0]).view(1, 1, 3, 1),
                                   torch.ones(1, 3))
    assert three.item() == pytest.approx(out.item(), abs=1e-6)
    # sizes all 1 is plain attention (1 / (1 + e)); a padded key (mask False) counts for nothing
    assert proportional_attention(q, k, v, torch.ones(1, 2)).item() == pytest.approx(1 / (1 + torch.e), abs=1e-6)
    padded = proportional_attention(q, k, v, torch.tensor([[1.0, 2.0]]), torch.tensor([[True, False]]))
    assert padded.item() == pytest.approx(1.0, abs=1e-6)


def tiny_vit():
    from codecpatch.tokens import SparseViT, ViTConfig

    torch.manual_seed(0)
    model = SparseViT(ViTConfig(dim=16, depth=3, heads=2, mlp_dim=32, patch=4, pos_grid=4, final_norm="all")).eval()
    with torch.no_grad():
        model.pos_embed.normal_()
        model.cls_token.normal_()
    pixels = torch.randn(2, 6, 3, 4, 4)  # two frames of a 2 x 3 patch grid
    positions = torch.stack([torch.arange(2).repeat_interleave(6), torch.arange(2).repeat_interleave(3).repeat(2),
                             torch.arange(3).repeat(4)], 1).view(2, 6, 3)
    return model, pixels, positions, torch.ones(2, 6, dtype=torch.bool)


def test_merging_nothing_inside_the_vit_is_the_plain_forward():
    model, pixels, positions, valid = tiny_vit()
    with torch.no_grad():
        plain, _, cls, _ = model(pixels, positions, valid, (2, 3))
        merged, merged_valid, merged_cls, source = model.forward_merging(pixels, positions, valid, (2, 3), 1, lambda frame, i: frame)
    torch.testing.assert_close(merged, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(merged_cls, cls, atol=1e-5, rtol=1e-5)
    assert merged_valid.all() and source.tolist() == [list(range(6))] * 2


def test_a_merged_token_of_size_two_attends_as_its_two_identical_copies_did():
    """Two patches with identical pixels at the same position have identical hidden states after block 1;
    merging them after block 1 (size 2, proportional attention after) leaves every other token exactly as
    it was, and the merged token equals each copy."""
    model, pixels, positions, valid = tiny_vit()
    pixels[:, 5], positions[:, 5] = pixels[:, 4], positions[:, 4]  # patch 5 is a copy of patch 4

    def merge_copies(frame: TokenSet, i: int) -> TokenSet:
        kept = torch.arange(5)
        assignment = torch.tensor([0, 1, 2, 3, 4, 4])
        return TokenSet(frame.tokens[kept], frame.positions[kept], frame.group[kept], assignment[frame.absorbed_into], frame.cls)

    with torch.no_grad():
        plain, _, cls, _ = model(pixels, positions, valid, (2, 3))
        merged, merged_valid, merged_cls, source = model.forward_merging(pixels, positions, valid, (2, 3), 1, merge_copies)
    assert merged.shape == (2, 5, 16) and source.tolist() == [[0, 1, 2, 3, 4, 4]] * 2
    torch.testing.assert_close(merged, plain[:, :5], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(merged_cls, cls, atol=1e-5, rtol=1e-5)
    assert torch.bincount(source[0]).tolist() == [1, 1, 1, 1, 2]
    with pytest.raises(ValueError, match="merge after block 3"):
        model.forward_merging(pixels, positions, valid, (2, 3), 3, merge_copies)
