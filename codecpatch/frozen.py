"""Tokens a frozen (pretrained, used as is) image ViT can use: more evenly spaced whole frames, each encoded
with its full context, then compressed to an *output*-token budget.

The plan for a clip of ``T`` sampled frames with ``P`` picture patches each and an output budget of ``B``
tokens: the whole-frame baseline would encode ``B / P`` frames; we encode ``factor`` times as many (evenly
spaced, capped at ``T``) and bring each to about ``B / frames`` tokens with a per-frame compressor
(``random_merge``: random keep, merge into the nearest kept token, size-weighted; ApET; or 2x2 / 2x1 pooling),
after the encoder or, with ``merge_after`` L, inside it after block L with the remaining blocks run with
proportional attention. Merged tokens carry their size (patches per token). Codec signals (accumulated motion and residual energy)
give ``activity``; ``activity_frames`` and ``activity_counts`` are the codec rules the benchmark compares
against even spacing (they did not beat it: see benchmarks/README.md, so the plan does not use them).

Pure apart from the ViT forward in ``encode_frames``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from .tokens import FrameMerge, StageCount, TokenSet, apet, pool_frames, random_merge

Compressor = Literal["random_merge", "apet", "pool", "none"]
COMPRESSORS: tuple[str, ...] = ("random_merge", "apet", "pool", "none")


@dataclass(frozen=True)
class FrozenSettings:
    """How the frozen-encoder path reduces a clip.

    Attributes:
        budget: output tokens per clip, as a fraction of all picture patches of the sampled frames (0, 1].
        factor: frames encoded, as a multiple of the whole-frame baseline's ``budget * T`` (>= 1).
        compressor: "random_merge" (default; per-frame random keep + merge into the nearest, size-weighted),
            "apet" (per frame, to the planned count), "pool" (2x2 average pooling when factor >= 4, 2x1 when
            factor >= 2) or "none" (whole frames).
        seed: seed of random_merge.
        merge_after: 0 compresses the encoder's output tokens; L >= 1 compresses each frame's hidden tokens
            after block L of the ViT and runs the remaining blocks with proportional attention.
    """

    budget: float = 0.0625
    factor: int = 4
    compressor: Compressor = "random_merge"
    seed: int = 0
    merge_after: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.budget <= 1.0:
            raise ValueError(f"frozen budget must be a fraction in (0, 1], got {self.budget}")
        if self.factor < 1:
            raise ValueError(f"frozen factor must be >= 1, got {self.factor}")
        if self.compressor not in COMPRESSORS:
            raise ValueError(f"frozen compressor must be one of {COMPRESSORS}, got {self.compressor!r}")
        if self.merge_after < 0 or (self.merge_after and self.compressor == "none"):
            raise ValueError(f"frozen merge_after must be >= 0 and needs a compressor, got {self.merge_after} with {self.compressor!r}")


@dataclass(frozen=True)
class FrozenPlan:
    """Which sampled frames to encode whole and how many output tokens each keeps.

    Attributes:
        frames: (F,) int64 ascending sampled-frame indices.
        counts: (F,) int64 output tokens per frame (sum = the clip's output tokens).
        budget_tokens: the clip's output-token budget.
    """

    frames: np.ndarray
    counts: np.ndarray
    budget_tokens: int


def even_frames(available: int, count: int) -> np.ndarray:
    """(min(count, available),) evenly spaced indices in [0, available), ascending and distinct."""
    count = max(1, min(available, count))
    return np.unique(np.linspace(0, available - 1, count).round().astype(np.int64))


def even_counts(total: int, frames: int, per_frame_max: int) -> np.ndarray:
    """(frames,) int64 near-equal shares of ``total`` tokens (each in [1, per_frame_max])."""
    base = np.full(frames, total // frames, np.int64)
    base[: total - int(base.sum())] += 1
    return np.clip(base, 1, per_frame_max)


def plan_frozen(n_frames: int, picture_per_frame: int, settings: FrozenSettings) -> FrozenPlan:
    """The plan for a clip of ``n_frames`` sampled frames of ``picture_per_frame`` picture patches each."""
    budget = output_budget(n_frames, picture_per_frame, settings.budget)
    baseline = max(1, round(budget / picture_per_frame))
    factor = 1 if settings.compressor == "none" else settings.factor
    frames = even_frames(n_frames, baseline * factor)
    counts = even_counts(budget, len(frames), picture_per_frame)
    return FrozenPlan(frames, counts, budget)


def pool_window(factor: int) -> tuple[int, int]:
    """The pooling window for ``factor`` times more frames: 2x2 from 4, 2x1 (two columns) from 2, else 1x1."""
    return (2, 2) if factor >= 4 else (1, 2) if factor >= 2 else (1, 1)


def compress_frames(tokens: TokenSet, plan: FrozenPlan, settings: FrozenSettings) -> TokenSet:
    """Bring each frame of ``tokens`` (whole frames, grouped by frame, in plan order) to its planned count."""
    if settings.compressor == "none":
        return tokens
    if settings.compressor == "pool":
        return pool_frames(tokens, pool_window(settings.factor))
    if settings.compressor == "apet":
        return per_frame(tokens, frame_merge(settings, plan.counts))
    return random_merge(tokens, counts=torch.as_tensor(plan.counts), seed=settings.seed)


def frame_merge(settings: FrozenSettings, counts: np.ndarray) -> FrameMerge:
    """The per-frame compressor of ``settings``: (frame j's TokenSet, j) -> about ``counts[j]`` tokens. Used
    inside the ViT (``merge_after``) and by ``per_frame``; random_merge seeds frame j with ``seed + j``."""

    def merge(frame: TokenSet, j: int) -> TokenSet:
        count = int(counts[j])
        if settings.compressor == "random_merge":
            return random_merge(frame, counts=torch.tensor([count]), seed=settings.seed + j)
        if settings.compressor == "apet":
            return apet(frame, min(1.0, count / max(1, frame.n_tokens)))
        if settings.compressor == "pool":
            return pool_frames(frame, pool_window(settings.factor))
        return frame

    return merge


def per_frame(tokens: TokenSet, merge: FrameMerge) -> TokenSet:
    """Apply ``merge`` to each frame (``group``) of ``tokens`` on its own (frames in ascending order, j = 0, 1,
    ...) and stitch the results in frame order; sizes and provenance carry through."""
    started = time.perf_counter()
    groups = torch.unique(tokens.group)
    parts, slot = [], torch.empty(tokens.n_tokens, dtype=torch.int64)
    offset = 0
    for j, g in enumerate(groups):  # one iteration per frame
        members = torch.nonzero(tokens.group == g).flatten()
        out = merge(TokenSet(tokens.tokens[members], tokens.positions[members], tokens.group[members],
                             torch.arange(len(members)), tokens.cls, ()), j)
        slot[members] = out.absorbed_into + offset
        offset += out.n_tokens
        parts.append(out)
    name = parts[0].stages[-1].name.split(":")[0] if parts and parts[0].stages else "per_frame"
    stage = StageCount(f"{name}:per_frame", tokens.n_tokens, offset, time.perf_counter() - started)
    return TokenSet(torch.cat([p.tokens for p in parts]), torch.cat([p.positions for p in parts]),
                    torch.cat([p.group for p in parts]), slot[tokens.absorbed_into], tokens.cls, (*tokens.stages, stage))


def encode_frames(model, patches: np.ndarray, picture: np.ndarray, frames: np.ndarray, batch: int = 16,
                  merge: tuple[int, FrameMerge] | None = None) -> TokenSet:
    """Encode ``frames`` whole, each on its own ([CLS] + its picture patches, as the image ViT was trained).

    Args:
        model: a ``SparseViT`` (with Xray blocks, a frame's tokens come out already reduced; ``sizes`` say how
            many patches each carries).
        patches: (T, H, W, 3, P, P) uint8 canvas patches of the sampled frames.
        picture: (H, W) bool, patches that show picture (letterbox padding is left out).
        frames: (F,) sampled-frame indices to encode.
        merge: (L, frame merge): merge each frame's tokens after block L, called with the frame's index j in
            ``frames`` (``SparseViT.forward_merging``: proportional attention in the remaining blocks).
    Returns:
        TokenSet in frame order (within a frame, raster order of each token's first patch), positions (t, h, w),
        group = t, ``absorbed_into`` over the F * picture.sum() input patches, ``cls`` the mean per-frame [CLS].
    """
    started = time.perf_counter()
    parameter = next(model.parameters())
    rows, cols = picture.shape
    h, w = np.nonzero(picture)
    n = len(h)
    mean = torch.tensor(model.config.image_mean).view(1, 1, 3, 1, 1)
    std = torch.tensor(model.config.image_std).view(1, 1, 3, 1, 1)
    tokens, positions, absorbed, cls_rows = [], [], [], []
    grid_position = torch.stack([torch.from_numpy(h).long(), torch.from_numpy(w).long()], 1)  # (n, 2)
    for start in range(0, len(frames), batch):  # a loop over batches of frames, never tokens
        chunk = np.asarray(frames[start : start + batch], np.int64)
        pixels = torch.from_numpy(np.ascontiguousarray(patches[chunk][:, h, w])).float() / 255.0  # (b, n, 3, P, P)
        where = torch.cat([torch.from_numpy(chunk).repeat_interleave(n)[:, None], grid_position.repeat(len(chunk), 1)], 1)
        inputs = (((pixels - mean) / std).to(parameter.device, parameter.dtype), where.view(len(chunk), n, 3).to(parameter.device),
                  torch.ones(len(chunk), n, dtype=torch.bool, device=parameter.device), (rows, cols))
        with torch.inference_mode():
            if merge is None:
                out, valid, cls, source = model(*inputs)
            else:
                after, rule = merge
                out, valid, cls, source = model.forward_merging(*inputs, after, lambda frame, i, s=start: rule(frame, s + i))
        for i, t in enumerate(chunk):  # one iteration per frame
            kept = out[i][valid[i]].float().cpu()
            src = source[i].cpu()
            first = torch.full((len(kept),), n, dtype=torch.int64).scatter_reduce_(0, src, torch.arange(n), reduce="amin")
            order = torch.argsort(first)  # raster order of each token's first patch
            slot = torch.empty(len(kept), dtype=torch.int64)
            slot[order] = torch.arange(len(kept))
            offset = sum(len(x) for x in tokens)
            tokens.append(kept[order])
            positions.append(torch.cat([torch.full((len(kept), 1), int(t)), grid_position[first[order]]], 1))
            absorbed.append(offset + slot[src])
        if cls is not None:
            cls_rows.append(cls.float().cpu())
    all_tokens = torch.cat(tokens) if tokens else torch.zeros(0, model.config.dim)
    all_positions = torch.cat(positions) if positions else torch.zeros(0, 3, dtype=torch.int64)
    name = "vit:whole_frames" + (f"+merge@{merge[0]}" if merge is not None else "")
    stage = StageCount(name, n * len(frames), len(all_tokens), time.perf_counter() - started)
    return TokenSet(all_tokens, all_positions, all_positions[:, 0].clone(),
                    torch.cat(absorbed) if absorbed else torch.zeros(0, dtype=torch.int64),
                    torch.cat(cls_rows).mean(0) if cls_rows else None, (stage,))


# -- codec rules (measured in benchmarks/fidelity.py --frozen; not used by the plan) ---------------------------


def activity(motion_accumulated: np.ndarray, residual_accumulated: np.ndarray) -> np.ndarray:
    """(T,) float64 per-frame codec activity: accumulated motion and residual energy since the previous sample,
    each divided by its clip mean (so both count equally), summed. Inputs (T, gh, gw)."""
    motion = motion_accumulated.reshape(len(motion_accumulated), -1).sum(1).astype(np.float64)
    residual = residual_accumulated.reshape(len(residual_accumulated), -1).sum(1).astype(np.float64)
    score = np.zeros(len(motion))
    for signal in (motion, residual):
        if signal.mean() > 0:
            score += signal / signal.mean()
    return score


def activity_frames(score: np.ndarray, count: int, mix: float = 0.5) -> np.ndarray:
    """``count`` frames at even quantiles of the cumulative weight ``mix`` * even + (1 - mix) * activity: for
    each target (k + 0.5) / count, the first frame whose cumulative midpoint reaches it (mix 1 is close to even
    spacing): denser sampling where the codec saw change. Ascending, distinct."""
    t = len(score)
    count = max(1, min(t, count))
    weight = mix / t + (1 - mix) * (score / score.sum() if score.sum() > 0 else np.full(t, 1.0 / t))
    cumulative = np.cumsum(weight) - weight / 2  # each frame at the middle of its share
    targets = (np.arange(count) + 0.5) / count
    chosen = np.unique(np.searchsorted(cumulative, targets).clip(0, t - 1))
    if len(chosen) < count:  # collisions in a burst: fill with the evenly spaced frames not chosen yet
        extra = [f for f in even_frames(t, t) if f not in set(chosen.tolist())]
        spread = np.asarray(extra)[even_frames(len(extra), count - len(chosen))]
        chosen = np.sort(np.concatenate([chosen, spread]))
    return chosen.astype(np.int64)


def activity_counts(score: np.ndarray, total: int, per_frame_max: int, mix: float = 0.5) -> np.ndarray:
    """(F,) output tokens per frame for frames of activity ``score`` (F,): shares of ``total`` in proportion to
    ``mix`` * even + (1 - mix) * activity, each in [1, per_frame_max], summing to ``total`` where possible."""
    f = len(score)
    share = mix / f + (1 - mix) * (score / score.sum() if score.sum() > 0 else np.full(f, 1.0 / f))
    counts = np.clip(np.floor(share * total).astype(np.int64), 1, per_frame_max)
    order = np.argsort(-(share * total - np.floor(share * total)), kind="stable")
    for k in range(max(0, total - int(counts.sum()))):  # hand out the remainder by largest fraction
        i = order[k % f]
        if counts[i] < per_frame_max:
            counts[i] += 1
    return counts


def output_budget(n_frames: int, picture_per_frame: int, budget: float) -> int:
    """Output tokens of a clip at ``budget`` (a fraction of its picture patches)."""
    return max(1, math.floor(budget * n_frames * picture_per_frame + 0.5))
