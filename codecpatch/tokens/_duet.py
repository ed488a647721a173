"""DUET: vision-to-vision merging (V2V) and text-to-vision pruning (T2V). Pure torch.

V2V: dominant tokens by [CLS] attention (or, without a CLS token, attention from the mean token: say so);
from the rest, a pool of the top ``pool_factor * C`` by the same score, C evenly spaced anchors in it, each
pool token assigned to its most key-similar anchor; contextual token = anchor + mean(assigned) (the paper's
rule; ``contextual="mean"`` averages instead). T2V: keep the vision tokens the text attends to most.
"""

from __future__ import annotations

import math
import time
from typing import Literal

import torch

from ._merge import Scope, apply_by_group, assign_to_nearest
from ._types import StageCount, TokenSet


def attention_scores(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """(n,) softmax(q . k / sqrt(D)) of one (D,) query over (n, D) keys."""
    return torch.softmax(keys.to(torch.float32) @ query.to(torch.float32) / math.sqrt(keys.shape[1]), dim=0)


def duet_v2v(tokens: TokenSet, keep_ratio: float = 0.5, *, scope: Scope = "frame", dominant_fraction: float = 0.5,
             pool_factor: int = 4, contextual: Literal["anchor_plus_mean", "mean"] = "anchor_plus_mean") -> TokenSet:
    """Merge ``tokens`` DUET-style to ``keep_ratio`` of each group: dominant + contextual tokens.

    The query is the CLS token when the TokenSet has one, else the mean token of the group (reported in the
    stage name as ``query=mean``). Tokens outside the dominant set and the pool are dropped; for provenance
    they count as absorbed by their most similar surviving token.
    """
    if not 0.0 < keep_ratio <= 1.0 or not 0.0 <= dominant_fraction <= 1.0:
        raise ValueError("keep_ratio must be in (0, 1] and dominant_fraction in [0, 1]")

    def rule(x: torch.Tensor, budget: int):
        query = tokens.cls if tokens.cls is not None else x.mean(dim=0)
        score = attention_scores(query, x)
        n_dominant = min(budget, int(round(budget * dominant_fraction)))
        n_context = budget - n_dominant
        order = torch.argsort(score, descending=True, stable=True)
        dominant = order[:n_dominant]
        pool = torch.sort(order[n_dominant : n_dominant + pool_factor * n_context]).values  # spatial order
        anchors = pool[torch.linspace(0, len(pool) - 1, n_context).round().long()] if n_context and len(pool) else pool[:0]
        kept = torch.sort(torch.cat([dominant, anchors])).values
        values = x[kept].clone()
        if len(anchors):
            normalised = torch.nn.functional.normalize(x, dim=1)
            to_anchor = (normalised[pool] @ normalised[anchors].T).argmax(dim=1)  # (pool,) -> anchor slot
            sums = torch.zeros(len(anchors), x.shape[1]).index_add_(0, to_anchor, x[pool])
            sizes = torch.bincount(to_anchor, minlength=len(anchors)).clamp_min(1).to(x.dtype)[:, None]
            slot = torch.searchsorted(kept, anchors)
            values[slot] = x[anchors] + sums / sizes if contextual == "anchor_plus_mean" else sums / sizes
        assignment = assign_to_nearest(x, kept)
        if len(anchors):
            assignment[pool] = torch.searchsorted(kept, anchors)[to_anchor]
            assignment[kept] = torch.arange(len(kept))
        return kept, values, assignment

    query = "cls" if tokens.cls is not None else "mean"
    return apply_by_group(tokens, rule, keep_ratio, scope, f"duet_v2v:{keep_ratio:g}(query={query})")


def text_guided_scores(vision: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """(K,) softmax attention of each (m, D) text query over the (K, D) vision tokens, averaged over queries."""
    logits = text.to(torch.float32) @ vision.to(torch.float32).T / math.sqrt(vision.shape[1])
    return torch.softmax(logits, dim=1).mean(dim=0)


def duet_t2v(tokens: TokenSet, text: torch.Tensor, keep_ratio: float = 0.5, vision_projection=None) -> TokenSet:
    """Keep the ``keep_ratio`` fraction of vision tokens the text queries attend to most (whole clip).

    ``text`` is (m, E): embeddings in the tokens' space (E = D), or in a joint space that
    ``vision_projection`` ((K, D) -> (K, E), e.g. ``ClipTextTower.project_vision``) maps the tokens into for
    scoring. Kept tokens keep their own values; dropped ones count as absorbed by their most similar kept
    token.
    """
    started = time.perf_counter()
    vision = tokens.tokens if vision_projection is None else vision_projection(tokens.tokens)
    if text.ndim != 2 or text.shape[1] != vision.shape[1]:
        raise ValueError(f"text must be (m, {vision.shape[1]}), got {tuple(text.shape)}")
    count = max(1, min(tokens.n_tokens, int(round(keep_ratio * tokens.n_tokens))))
    score = text_guided_scores(vision, text)
    kept = torch.sort(torch.argsort(score, descending=True, stable=True)[:count]).values
    assignment = assign_to_nearest(tokens.tokens.to(torch.float32), kept)
    stage = StageCount(f"duet_t2v:{keep_ratio:g}", tokens.n_tokens, count, time.perf_counter() - started)
    return tokens.select(kept, tokens.tokens[kept], assignment, stage)


def prune_hidden_states(hidden: torch.Tensor, vision_mask: torch.Tensor, text_mask: torch.Tensor, keep_ratio: float,
                        attention: torch.Tensor | None = None) -> torch.Tensor:
    """T2V inside an LLM: which positions survive after a chosen layer.

    Args:
        hidden: (B, L, D) hidden states after the layer.
        vision_mask, text_mask: (B, L) bool, which positions are vision tokens / text queries.
        keep_ratio: fraction of each sample's vision tokens to keep (the paper: 0.5 after layer 16, 0 after 24).
        attention: optional (B, H, L, L) attention probabilities of the layer; without them, scaled
            dot-product scores of the hidden states stand in.
    Returns:
        (B, L) bool keep mask: every non-vision position, plus the top vision positions per sample.
    """
    batch, length, dim = hidden.shape
    keep = ~vision_mask.clone()
    for b in range(batch):  # a loop over the batch, vectorised inside
        vision = torch.nonzero(vision_mask[b]).flatten()
        text = torch.nonzero(text_mask[b]).flatten()
        count = int(round(keep_ratio * len(vision)))
        if count == 0 or len(vision) == 0:
            continue
        if attention is not None:
            score = attention[b][:, text][:, :, vision].mean(dim=(0, 1))
        else:
            score = text_guided_scores(hidden[b, vision], hidden[b, text]) if len(text) else torch.ones(len(vision))
        keep[b, vision[torch.argsort(score, descending=True, stable=True)[:count]]] = True
    return keep
