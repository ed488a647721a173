"""Which patches to keep: the codec's global top-K, and the baselines it is measured against.

Pure numpy over (T, H, W) patch grids. Every function returns a (T, H, W) bool mask whose count never
exceeds the budget and never includes a patch that is all padding.
"""

from __future__ import annotations

import numpy as np


def select_top_k(
    scores: np.ndarray,
    content: np.ndarray,
    budget: int,
    whole_frame_candidates: list[tuple[int, str]],
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Keep whole frames first (in the order given, while they fit), then the highest-scoring patches.

    Args:
        scores: (T, H, W) float patch scores (higher = keep).
        content: (H, W) bool, patches that show some of the frame (False = pure padding, never kept).
        budget: maximum number of patches to keep.
        whole_frame_candidates: (t, reason) frames to keep whole, by priority.

    Returns:
        (kept mask (T, H, W), the (t, reason) frames actually kept whole). Ties between equal scores go to
        the earlier (t, h, w), so the result is deterministic.
    """
    n_samples = scores.shape[0]
    per_frame = int(content.sum())
    kept = np.zeros(scores.shape, bool)
    whole: list[tuple[int, str]] = []
    used = 0
    for t, reason in whole_frame_candidates:
        if 0 <= t < n_samples and not kept[t].any() and used + per_frame <= budget:
            kept[t] = content
            whole.append((t, reason))
            used += per_frame
    remaining = budget - used
    if remaining > 0:
        eligible = (~kept & content[None]).ravel()
        candidates = np.flatnonzero(eligible)
        if candidates.size:
            order = np.argsort(-scores.ravel()[candidates], kind="stable")
            kept.ravel()[candidates[order[:remaining]]] = True
    return kept, whole


def uniform_frames(n_samples: int, content: np.ndarray, budget: int) -> tuple[np.ndarray, list[int]]:
    """Whole frames, evenly spaced from the first, as many as the budget holds.

    A budget smaller than one frame keeps the first ``budget`` content patches of the first frame (raster
    order) instead. Returns (kept mask, the sampled-frame indices kept whole).
    """
    per_frame = int(content.sum())
    kept = np.zeros((n_samples, *content.shape), bool)
    count = min(n_samples, budget // max(per_frame, 1))
    if count == 0:
        kept[0].ravel()[np.flatnonzero(content.ravel())[:budget]] = True
        return kept, []
    chosen = sorted({int(round(x)) for x in np.linspace(0, n_samples - 1, count)}) if count > 1 else [0]
    kept[chosen] = content
    return kept, chosen


def random_patches(
    n_samples: int, content: np.ndarray, budget: int, whole: list[int], seed: int
) -> np.ndarray:
    """The frames in ``whole`` kept whole (same rule as the method compared), the rest of the budget on
    uniformly random content patches (seeded)."""
    kept = np.zeros((n_samples, *content.shape), bool)
    for t in whole:
        kept[t] = content
    remaining = budget - int(kept.sum())
    candidates = np.flatnonzero((~kept & content[None]).ravel())
    if remaining > 0 and candidates.size:
        chosen = np.random.default_rng(seed).choice(candidates, size=min(remaining, candidates.size), replace=False)
        kept.ravel()[chosen] = True
    return kept


def kept_area_fraction(kept: np.ndarray, coverage: np.ndarray) -> float:
    """Share of the clip's picture area the kept patches cover.

    Args:
        kept: (T, H, W) bool selection.
        coverage: (H, W) float, the share of each patch that holds picture (0 = pure padding, 1 = full).
    Returns:
        sum of the kept patches' picture coverage / (T x the picture's area in patches), in [0, 1].
    """
    picture = float(coverage.sum()) * kept.shape[0]
    return float((kept * coverage[None]).sum() / picture) if picture > 0 else 0.0


def timeline_slots(n_samples: int, slots: int) -> np.ndarray:
    """(T,) int32 slot of each sampled frame on a ``slots``-long timeline, evenly spread, unique.

    With T <= slots the first sample is slot 0 and the last slot ``slots - 1``; with more samples than
    slots the timeline grows to T slots.
    """
    if n_samples <= 1:
        return np.zeros(n_samples, np.int32)
    slots = max(slots, n_samples)
    return np.round(np.linspace(0, slots - 1, n_samples)).astype(np.int32)
