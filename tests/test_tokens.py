"""Pixel encoder and token compressors (ApET, DUET V2V/T2V) on hand-made and real tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codecpatch.patchify import PatchifyConfig, patchify_video
from codecpatch.tokens import (
    TokenSet,
    apet,
    compress,
    duet_t2v,
    duet_v2v,
    encode_pixels,
    orthonormal_projection,
    parse_chain,
    prune_hidden_states,
    random_prune,
    relative_rebuild_error,
    stride_prune,
)
from codecpatch.tokens._merge import keep_count

from .conftest import SAMPLES


def token_set(values: torch.Tensor, groups: int = 1) -> TokenSet:
    n = values.shape[0]
    group = torch.arange(n) * groups // n
    positions = torch.stack([group, torch.arange(n) // 8, torch.arange(n) % 8], dim=1)
    return TokenSet(values, positions, group, torch.arange(n))


def structured(n: int = 256, dim: int = 32, seed: int = 0) -> torch.Tensor:
    """Tokens from a few tight clusters plus rare outliers: what redundant visual tokens look like."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(6, dim, generator=generator) * 4
    labels = torch.randint(6, (n,), generator=generator)
    values = centres[labels] + 0.1 * torch.randn(n, dim, generator=generator)
    outliers = torch.randperm(n, generator=generator)[:6]
    values[outliers] = torch.randn(6, dim, generator=generator) * 8
    return values


@pytest.fixture(scope="module")
def real_tokens() -> TokenSet:
    [patches] = list(patchify_video(SAMPLES / "sprites_h264_b.mp4", PatchifyConfig(frames=16, budget="4f")))
    return encode_pixels(patches.pixels, patches.positions, patches.sample_index, dim=128)


def test_pixel_encoder_normalises_and_projects_deterministically():
    pixels = np.full((5, 3, 16, 16), 255, np.uint8)
    tokens = encode_pixels(pixels, np.zeros((5, 3)), np.zeros(5))
    assert tokens.tokens.shape == (5, 768) and tokens.dim == 768
    np.testing.assert_allclose(tokens.tokens[0, 0].item(), (1 - 0.485) / 0.229, rtol=1e-5)
    projection = orthonormal_projection(768, 64, seed=3)
    np.testing.assert_allclose((projection.T @ projection).numpy(), np.eye(64), atol=1e-5)
    assert torch.equal(projection, orthonormal_projection(768, 64, seed=3))
    projected = encode_pixels(pixels, np.zeros((5, 3)), np.zeros(5), dim=64, seed=3)
    assert projected.tokens.shape == (5, 64) and torch.equal(projected.absorbed_into, torch.arange(5))
    assert projected.stages[0].name == "pixel:64"


@pytest.mark.parametrize("compressor", [apet, duet_v2v, random_prune, stride_prune])
@pytest.mark.parametrize("keep_ratio", [0.5, 0.25, 0.125])
def test_compressors_keep_their_budget_order_and_provenance(compressor, keep_ratio, real_tokens):
    out = compressor(real_tokens, keep_ratio)
    for g in torch.unique(real_tokens.group):
        n_in = int((real_tokens.group == g).sum())
        assert int((out.group == g).sum()) == keep_count(n_in, keep_ratio)
    assert out.n_tokens == out.stages[-1].n_out and out.stages[-1].n_in == real_tokens.n_tokens
    # survivors keep their positions, in the original order
    original = {tuple(p) for p in real_tokens.positions.tolist()}
    assert {tuple(p) for p in out.positions.tolist()} <= original
    keys = out.positions[:, 0] * 10_000 + out.positions[:, 1] * 100 + out.positions[:, 2]
    assert (torch.diff(keys) > 0).all()
    # every original patch is carried by a token of its own frame
    assert out.absorbed_into.shape == (real_tokens.n_tokens,)
    assert torch.equal(out.group[out.absorbed_into], real_tokens.group)
    again = compressor(real_tokens, keep_ratio)
    assert torch.equal(out.tokens, again.tokens) and torch.equal(out.positions, again.positions)


def test_apet_keeps_the_outliers_and_beats_random_and_stride():
    values = structured()
    tokens = token_set(values)
    out = apet(tokens, 0.125)
    norms = torch.linalg.vector_norm(values, dim=1)
    outliers = torch.argsort(norms, descending=True)[:6]  # the 8-sigma tokens no cluster explains
    survivors = {tuple(p) for p in out.positions.tolist()}
    assert all(tuple(tokens.positions[i].tolist()) in survivors for i in outliers.tolist())
    errors = {name: relative_rebuild_error(values, fn(tokens, 0.25)) for name, fn in
              (("apet", apet), ("random", random_prune), ("stride", stride_prune))}
    assert errors["apet"] < errors["random"] and errors["apet"] < errors["stride"], errors


@pytest.mark.parametrize("keep_ratio", [0.5, 0.25])
def test_apet_beats_random_and_stride_on_real_patch_tokens(real_tokens, keep_ratio):
    original = real_tokens.tokens
    apet_error = relative_rebuild_error(original, apet(real_tokens, keep_ratio))
    assert apet_error < relative_rebuild_error(original, random_prune(real_tokens, keep_ratio))
    assert apet_error < relative_rebuild_error(original, stride_prune(real_tokens, keep_ratio))


def test_apet_threshold_mode_reports_the_count_it_keeps():
    values = structured()
    out = apet(token_set(values), threshold=0.05)
    assert out.stages[-1].name == "apet:threshold=0.05"
    assert 10 <= out.n_tokens < 256


def test_duet_v2v_keeps_the_dominant_tokens_and_merges_anchors():
    values = structured(seed=1)
    tokens = token_set(values)
    out = duet_v2v(tokens, 0.125)
    assert "query=mean" in out.stages[-1].name  # no CLS token: the mean token is the query, and it says so
    score = torch.softmax(values @ values.mean(0) / values.shape[1] ** 0.5, dim=0)
    top = torch.argsort(score, descending=True)[:16]  # 32 kept: 16 dominant
    survivors = {tuple(p) for p in out.positions.tolist()}
    assert all(tuple(tokens.positions[i].tolist()) in survivors for i in top.tolist())
    # contextual tokens: anchor + mean of what it absorbed (the paper's rule), or the plain mean on request
    merged = duet_v2v(tokens, 0.125, contextual="mean")
    assert not torch.equal(merged.tokens, out.tokens)
    with_cls = TokenSet(values, tokens.positions, tokens.group, tokens.absorbed_into, cls=values[5])
    assert "query=cls" in duet_v2v(with_cls, 0.25).stages[-1].name


def test_duet_t2v_keeps_what_the_text_asks_about():
    values = torch.randn(256, 32, generator=torch.Generator().manual_seed(2))
    tokens = token_set(values)
    text = values[[17, 99]] * 3  # queries that look like two particular tokens
    out = duet_t2v(tokens, text, keep_ratio=0.1)
    assert out.n_tokens == 26
    survivors = {tuple(p) for p in out.positions.tolist()}
    assert tuple(tokens.positions[17].tolist()) in survivors and tuple(tokens.positions[99].tolist()) in survivors
    with pytest.raises(ValueError, match="text must be"):
        duet_t2v(tokens, torch.zeros(2, 5))


def test_prune_hidden_states_keeps_text_and_the_attended_vision():
    hidden = torch.randn(2, 12, 16, generator=torch.Generator().manual_seed(0))
    vision = torch.zeros(2, 12, dtype=torch.bool)
    vision[:, 2:10] = True
    text = ~vision
    keep = prune_hidden_states(hidden, vision, text, 0.5)
    assert keep[~vision].all() and (keep & vision).sum(dim=1).tolist() == [4, 4]
    assert not (prune_hidden_states(hidden, vision, text, 0.0) & vision).any()
    attention = torch.zeros(2, 1, 12, 12)
    attention[:, :, :, 3] = 1.0  # every query attends to position 3
    assert prune_hidden_states(hidden, vision, text, 0.125, attention)[:, 3].all()


def test_chains_compose_and_specs_are_validated(real_tokens):
    out = compress(real_tokens, "duet:0.5,apet:0.5")
    assert [s.name.split(":")[0] for s in out.stages] == ["pixel", "duet_v2v", "apet"]
    assert out.absorbed_into.max() < out.n_tokens
    assert parse_chain("apet:0.25@clip") == [("apet", 0.25, "clip")]
    with pytest.raises(ValueError, match="unknown compressor"):
        parse_chain("tome:0.5")
    with pytest.raises(ValueError, match="keep ratio"):
        parse_chain("apet:half")
