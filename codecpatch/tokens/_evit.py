"""EViT token reorganisation (the Xray compressor inside the ViT), as pure functions of tensors.

``evit_keep`` decides which tokens of one clip survive a block from the query row of attention; ``reorganise``
applies it to a padded batch of hidden states, fusing the rest into one attention-weighted token.
"""

from __future__ import annotations

import math

import torch


def evit_keep(scores: torch.Tensor, keep: float, threshold: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Which of ``n`` tokens EViT keeps, from their (n,) query-row attention ``scores`` (summing to <= 1).

    With ``threshold`` None, the ceil(keep * n) most attended tokens; otherwise those with
    scores * n >= threshold (attended at least ``threshold`` times uniform attention 1/n), at least one.
    Returns (kept (k,) ascending int64 indices, rest (n - k,) int64 in descending score order).
    """
    n = scores.shape[0]
    if threshold is None:
        count = min(n, math.ceil(keep * n))
    else:
        count = max(1, int((scores * n >= threshold).sum()))
    order = torch.argsort(scores, descending=True, stable=True)
    return torch.sort(order[:count]).values, order[count:]


def reorganise(x: torch.Tensor, valid: torch.Tensor, source: torch.Tensor, row: torch.Tensor, offset: int, keep: float,
                threshold: float | None = None):
    """EViT on a padded batch. x: (B, L, D) hidden states, valid: (B, L) bool, source: (B, K) int64 output
    slot (counted after the ``offset`` prefix tokens) of every input patch, row: (B, L) query-row attention.

    Keep the ceil(keep * N) most attended tokens (or, with ``threshold``, those attended at least
    threshold / N), fuse the rest into one token weighted by their attention. Loops over the batch (clips),
    never over tokens. Returns the new (x, valid, source)."""
    b = x.shape[0]
    outputs, sources = [], []
    for i in range(b):
        tokens = x[i, offset:][valid[i, offset:]]
        scores = row[i, offset:][valid[i, offset:]]
        n = tokens.shape[0]
        kept, rest = evit_keep(scores, keep, threshold)
        count = len(kept)
        new_index = torch.empty(n, dtype=torch.long, device=x.device)
        new_index[kept] = torch.arange(count, device=x.device)
        parts = [x[i, :offset], tokens[kept]]
        if len(rest):
            weights = scores[rest] / scores[rest].sum().clamp_min(1e-12)
            parts.append((weights[:, None] * tokens[rest]).sum(0, keepdim=True))
            new_index[rest] = count
        outputs.append(torch.cat(parts))
        old_slot = torch.full((valid.shape[1] - offset,), -1, dtype=torch.long, device=x.device)
        old_slot[valid[i, offset:]] = torch.arange(n, device=x.device)
        sources.append(new_index[old_slot[source[i]]])
    length = max(o.shape[0] for o in outputs)
    padded = x.new_zeros(b, length, x.shape[2])
    mask = torch.zeros(b, length, dtype=torch.bool, device=x.device)
    for i, out in enumerate(outputs):
        padded[i, : out.shape[0]] = out
        mask[i, : out.shape[0]] = True
    return padded, mask, torch.stack(sources)
