"""Shared helpers of the compressors: pruning with merge-into-nearest, applied per group or per clip."""

from __future__ import annotations

import time
from typing import Callable, Literal

import torch

from ._types import StageCount, TokenSet

Scope = Literal["frame", "clip"]
#: A group rule: (tokens (n, D), keep count) -> (kept indices (k,) ascending, values (k, D),
#: assignment (n,) of every token to the position in ``kept`` of the token that absorbed it).
GroupRule = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def keep_count(n: int, keep_ratio: float) -> int:
    """Tokens a group of ``n`` keeps at ``keep_ratio`` (at least one)."""
    return max(1, min(n, int(round(keep_ratio * n))))


def assign_to_nearest(tokens: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """(n,) for every token, the position in ``kept`` of its most cosine-similar kept token (kept tokens map
    to themselves)."""
    normalised = torch.nn.functional.normalize(tokens, dim=1)
    assignment = (normalised @ normalised[kept].T).argmax(dim=1)
    assignment[kept] = torch.arange(len(kept))
    return assignment


def average_into(tokens: torch.Tensor, assignment: torch.Tensor, count: int) -> torch.Tensor:
    """(count, D) mean of the tokens assigned to each slot."""
    sums = torch.zeros(count, tokens.shape[1], dtype=tokens.dtype).index_add_(0, assignment, tokens)
    sizes = torch.bincount(assignment, minlength=count).clamp_min(1).to(tokens.dtype)
    return sums / sizes[:, None]


def apply_by_group(tokens: TokenSet, rule: GroupRule, keep_ratio: float, scope: Scope, name: str) -> TokenSet:
    """Run ``rule`` on every sampled frame's tokens (scope "frame") or on all of them ("clip"), and stitch
    the results back in original order."""
    started = time.perf_counter()
    if scope == "clip":
        groups = [torch.arange(tokens.n_tokens)]
    else:
        groups = [torch.nonzero(tokens.group == g).flatten() for g in torch.unique(tokens.group)]
    kept_parts, value_parts, assignment = [], [], torch.empty(tokens.n_tokens, dtype=torch.int64)
    for members in groups:  # one iteration per sampled frame, never per token
        kept, values, local = rule(tokens.tokens[members].to(torch.float32), keep_count(len(members), keep_ratio))
        kept_parts.append(members[kept])
        value_parts.append(values)
        assignment[members] = members[kept][local]
    kept_all = torch.cat(kept_parts)
    order = torch.argsort(kept_all)
    kept_sorted = kept_all[order]
    values = torch.cat(value_parts)[order].to(tokens.tokens.dtype)
    slot_of = torch.empty(tokens.n_tokens, dtype=torch.int64)
    slot_of[kept_sorted] = torch.arange(len(kept_sorted))
    stage = StageCount(name, tokens.n_tokens, len(kept_sorted), time.perf_counter() - started)
    return tokens.select(kept_sorted, values, slot_of[assignment], stage)


def relative_rebuild_error(original: torch.Tensor, compressed: TokenSet) -> float:
    """Mean over original patches of ||x_i - y_a(i)|| / ||x_i||, y_a(i) the output token that absorbed patch i.

    ``original`` is (N, D), one row per original patch (``compressed.absorbed_into`` has N entries)."""
    rebuilt = compressed.tokens[compressed.absorbed_into].to(torch.float32)
    original = original.to(torch.float32)
    error = torch.linalg.vector_norm(original - rebuilt, dim=1) / torch.linalg.vector_norm(original, dim=1).clamp_min(1e-8)
    return float(error.mean())
