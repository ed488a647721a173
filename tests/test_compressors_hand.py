"""Compressor rules checked against answers worked out by hand on tiny token sets (no randomness left open)."""

from __future__ import annotations

import torch

from codecpatch.tokens import TokenSet, apet, duet_v2v, evit_keep, reorganise


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
