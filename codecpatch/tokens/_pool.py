"""The two compressors every user tries first, on whole frames encoded with context: average pooling of the
patch grid (2x2 as LLaVA-OneVision and Video-LLaVA do, or 2x1) and random pruning with merge-into-nearest.
Both merge by the *size-weighted* mean, so a chain of merges stays the mean of the original patches it
carries. Pure torch.
"""

from __future__ import annotations

import time

import torch

from ._merge import assign_to_nearest
from ._types import StageCount, TokenSet


def weighted_merge(values: torch.Tensor, weights: torch.Tensor, assignment: torch.Tensor, count: int) -> torch.Tensor:
    """(count, D) size-weighted mean of the (n, D) ``values`` assigned to each of ``count`` slots.

    ``weights`` (n,) are the sizes (patches carried) of the values; ``assignment`` (n,) int64 in [0, count)."""
    weights = weights.to(torch.float32)
    sums = torch.zeros(count, values.shape[1], dtype=torch.float32).index_add_(0, assignment, values.to(torch.float32) * weights[:, None])
    totals = torch.zeros(count, dtype=torch.float32).index_add_(0, assignment, weights).clamp_min(1e-12)
    return (sums / totals[:, None]).to(values.dtype)


def _merge(tokens: TokenSet, kept: torch.Tensor, assignment: torch.Tensor, name: str, started: float) -> TokenSet:
    """Keep ``kept`` (ascending), every token merged into slot ``assignment`` of it, size-weighted."""
    values = weighted_merge(tokens.tokens, tokens.sizes, assignment, len(kept))
    stage = StageCount(name, tokens.n_tokens, len(kept), time.perf_counter() - started)
    return tokens.select(kept, values, assignment, stage)


def pool_frames(tokens: TokenSet, window: tuple[int, int] = (2, 2)) -> TokenSet:
    """Average-pool each frame's tokens over ``window`` = (rows, cols) cells of the patch grid.

    Cells are (t, h // rows, w // cols) of each token's position; a cell at a frame's edge, or with patches
    missing, pools what it has. The pooled token keeps the position of its first member in token order (the
    top-left one for a frame in raster order) and carries the sum of its members' sizes. Output order is the
    input order of those first members. Vectorised: no loop over frames or tokens.
    """
    started = time.perf_counter()
    rows, cols = window
    if rows < 1 or cols < 1:
        raise ValueError(f"pooling window must be at least 1x1, got {window}")
    t, h, w = tokens.positions.unbind(1)
    keys = torch.stack([tokens.group, t, h // rows, w // cols], dim=1)
    _, cell = torch.unique(keys, dim=0, return_inverse=True)  # (K,) cell id of each token
    n_cells = int(cell.max()) + 1 if tokens.n_tokens else 0
    first = torch.full((n_cells,), tokens.n_tokens, dtype=torch.int64).scatter_reduce_(
        0, cell, torch.arange(tokens.n_tokens), reduce="amin")
    kept = torch.sort(first).values
    slot_of_cell = torch.empty(n_cells, dtype=torch.int64)
    slot_of_cell[torch.argsort(first)] = torch.arange(n_cells)
    return _merge(tokens, kept, slot_of_cell[cell], f"pool:{rows}x{cols}", started)


def random_merge(tokens: TokenSet, keep_ratio: float | None = None, *, counts: torch.Tensor | None = None, seed: int = 0) -> TokenSet:
    """Keep seeded random tokens of each frame and merge every other token into its most cosine-similar kept
    token of the same frame (size-weighted mean).

    Args:
        keep_ratio: fraction of each frame's tokens kept (at least one per frame), or
        counts: (G,) int64 tokens to keep in each of the G frames, in ascending ``group`` order (e.g. a codec
            allocation); clipped to [1, frame's tokens].
        seed: seed of the choice (one generator for the whole clip).
    """
    started = time.perf_counter()
    groups = torch.unique(tokens.group)
    if (keep_ratio is None) == (counts is None):
        raise ValueError("give exactly one of keep_ratio and counts")
    if counts is not None and len(counts) != len(groups):
        raise ValueError(f"counts has {len(counts)} entries for {len(groups)} frames")
    if keep_ratio is not None and not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    generator = torch.Generator().manual_seed(seed)
    kept_parts, target = [], torch.empty(tokens.n_tokens, dtype=torch.int64)
    for i, g in enumerate(groups):  # one iteration per frame
        members = torch.nonzero(tokens.group == g).flatten()
        n = len(members)
        want = round(keep_ratio * n) if keep_ratio is not None else int(counts[i])
        chosen = torch.sort(torch.randperm(n, generator=generator)[: max(1, min(n, want))]).values
        local = assign_to_nearest(tokens.tokens[members].to(torch.float32), chosen)
        kept_parts.append(members[chosen])
        target[members] = members[chosen][local]  # the original index of the absorbing token
    kept = torch.sort(torch.cat(kept_parts)).values
    slot_of = torch.empty(tokens.n_tokens, dtype=torch.int64)
    slot_of[kept] = torch.arange(len(kept))
    name = f"random_merge:{keep_ratio:g}" if keep_ratio is not None else "random_merge:counts"
    return _merge(tokens, kept, slot_of[target], name, started)
