"""Baselines the compressors are measured against, at the same budget and with the same merge rule
(dropped tokens averaged into their most similar kept token)."""

from __future__ import annotations

import torch

from ._merge import Scope, apply_by_group, assign_to_nearest, average_into
from ._types import TokenSet


def random_prune(tokens: TokenSet, keep_ratio: float, *, scope: Scope = "frame", seed: int = 0) -> TokenSet:
    """Keep a seeded random ``keep_ratio`` of each group."""
    generator = torch.Generator().manual_seed(seed)

    def rule(x: torch.Tensor, budget: int):
        kept = torch.sort(torch.randperm(x.shape[0], generator=generator)[:budget]).values
        assignment = assign_to_nearest(x, kept)
        return kept, average_into(x, assignment, len(kept)), assignment

    return apply_by_group(tokens, rule, keep_ratio, scope, f"random:{keep_ratio:g}")


def stride_prune(tokens: TokenSet, keep_ratio: float, *, scope: Scope = "frame") -> TokenSet:
    """Keep evenly strided tokens (in original order) of each group."""

    def rule(x: torch.Tensor, budget: int):
        kept = torch.unique(torch.linspace(0, x.shape[0] - 1, budget).round().long())
        assignment = assign_to_nearest(x, kept)
        return kept, average_into(x, assignment, len(kept)), assignment

    return apply_by_group(tokens, rule, keep_ratio, scope, f"stride:{keep_ratio:g}")
