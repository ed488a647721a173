"""Adaptive selection: spend the budget where a patch has drifted furthest since it was last kept.

A model that receives only the kept patches sees every other patch as it was when last kept (the rebuild
metric holds it, an encoder trained on codec-sparse inputs has nothing newer). So a patch is worth keeping
when the picture under it has changed a lot *since it was last kept*, not when it changed a lot in one
gap. From the codec's own quantities we estimate, per sampled frame and patch, how much the picture
changed since the previous sample (``patch_change``, luma levels): the net displacement the motion vectors
compose to over the decoded frames in between, times the patch's texture, plus the residual the codec
could not predict (above its noise floor). A patch's *drift* accumulates that change and is reset when the
patch is kept; a threshold on drift, found by bisection to spend exactly the budget, decides what to keep.

This one rule splits the budget per clip between whole frames and single patches without a fixed ratio:
at a scene cut or after a pan every patch has drifted past the threshold and the frame is refreshed whole;
on a static background with a moving object only the object's patches cross it. The first sampled frame
is always whole (nothing has been seen yet). Pure numpy/OpenCV over (T, H, W) patch grids.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ._geometry import sum_pool
from ._types import ClipSamples

@dataclass(frozen=True)
class PatchChange:
    """What the codec and the sampled frames say about how each patch changes, (T, H, W) float32 each.

    Attributes:
        moved: change since the previous sample from displacement, luma levels: min(|composed
            displacement|, patch) x the patch's mean luma gradient (the larger of the two samples'). The
            displacement is the codec's motion field chained over every decoded frame in the gap, camera
            motion included (a held patch goes stale under a pan too), canvas px.
        unexplained: the per-decoded-frame residual above the noise floor, times the frames in the gap,
            luma levels: what motion compensation could not explain (new content, light, cuts).
        mean: the patch's mean luma at the sample (a 1/patch thumbnail of the decoded sampled frame).
        spread: the patch's luma standard deviation at the sample.
    Rows 0 of moved and unexplained are zero (the first sample has no previous one).
    """

    moved: np.ndarray
    unexplained: np.ndarray
    mean: np.ndarray
    spread: np.ndarray

    def flat(self, cells: np.ndarray) -> "PatchChange":
        """The same quantities as (T, N) over the flattened patch indices ``cells``."""
        pick = lambda array: array.reshape(array.shape[0], -1)[:, cells]  # noqa: E731
        return PatchChange(pick(self.moved), pick(self.unexplained), pick(self.mean), pick(self.spread))


def patch_change(samples: ClipSamples, noise_floor: float) -> PatchChange:
    """The PatchChange of a clip; ``noise_floor``: per-frame residual (luma levels) taken as coding noise."""
    geometry = samples.geometry
    patch = geometry.patch
    area = float(patch * patch)
    scale = float(np.mean(geometry.scale))
    luma = samples.canvas_frames().astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
    gradient = np.stack([np.hypot(cv2.Sobel(y, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(y, cv2.CV_32F, 0, 1, ksize=3)) / 8.0
                         for y in luma])
    content = geometry.content_mask()[None]
    coverage = np.maximum(sum_pool(content.astype(np.float32), patch), 1.0)
    texture = sum_pool(gradient * content, patch) / coverage  # (T, H, W) levels per px
    mean = sum_pool(luma * content, patch) / coverage
    spread = np.sqrt(np.maximum(sum_pool(luma * luma * content, patch) / coverage - mean * mean, 0.0))
    starts = np.concatenate([[samples.info.frame_start - 1], samples.frame_indices[:-1]])
    gaps = np.maximum(samples.frame_indices - starts, 1).astype(np.float32)
    moved = np.zeros(texture.shape, np.float32)
    unexplained = np.zeros(texture.shape, np.float32)
    for t in range(1, samples.n_samples):
        displacement = np.hypot(samples.field_from_previous[t][..., 0], samples.field_from_previous[t][..., 1]) * scale
        excess = np.maximum(samples.residual_accumulated[t] / gaps[t] - noise_floor, 0.0) * gaps[t]
        moved[t] = sum_pool(geometry.map_to_canvas(np.minimum(displacement, patch)), patch) / area
        moved[t] *= np.maximum(texture[t - 1], texture[t])
        unexplained[t] = sum_pool(geometry.map_to_canvas(excess), patch) / area
    return PatchChange(moved, unexplained, mean.astype(np.float32), spread.astype(np.float32))


def drift_matrix(change: PatchChange) -> np.ndarray:
    """(N, T, T) float32: ``[n, s, u]`` estimates how far patch n at sample u is from its content at
    sample s (zero for u <= s): the change of its mean luma, plus the change accumulated from displacement
    and unexplained residual over the samples in between, which saturates at twice the larger of the two
    samples' luma spreads (content shifted by more than its texture scale is as wrong as it gets).
    ``change`` holds (T, N) arrays (``PatchChange.flat``); luma levels."""
    cumulative = np.cumsum(change.moved + change.unexplained, axis=0).T  # (N, T)
    accumulated = cumulative[:, None, :] - cumulative[:, :, None]
    spread = change.spread.T
    ceiling = 2.0 * np.maximum(spread[:, :, None], spread[:, None, :])
    mean = change.mean.T
    drift = np.abs(mean[:, None, :] - mean[:, :, None]) + np.minimum(accumulated, ceiling)
    later = np.triu(np.ones(drift.shape[1:], bool), k=1)
    return np.where(later[None], np.maximum(drift, 0.0), 0.0).astype(np.float32)


def refresh_gains(error_sums: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """(T,) squared drift saved over the following samples by keeping one patch at each sample.

    Args:
        error_sums: (T, T) ``[s, u]`` = sum over samples s..u of the squared drift when last kept at s.
        kept: (T,) bool, the samples at which the patch is already kept (sample 0 always is).
    A sample t between kept samples s < t < n saves sum_{u=t}^{n-1} drift(s, u)^2 - drift(t, u)^2.
    Already kept samples gain -inf.
    """
    n_samples = kept.shape[0]
    times = np.arange(n_samples)
    kept_times = np.flatnonzero(kept)
    previous = kept_times[np.searchsorted(kept_times, times, side="right") - 1]
    following = np.append(kept_times, n_samples)[np.searchsorted(kept_times, times, side="right")]
    last = following - 1
    before = np.maximum(times - 1, 0)
    held = error_sums[previous, last] - np.where(times > 0, error_sums[previous, before], 0.0)
    fresh = error_sums[times, last] - np.where(times > 0, error_sums[times, before], 0.0)
    gains = held - fresh
    gains[kept] = -np.inf
    return gains


def adaptive_selection(change: PatchChange, coverage: np.ndarray, budget: int,
                       area_budget: float | None = None) -> tuple[np.ndarray, list[int]]:
    """Exactly ``budget`` content patches (or all of them), greedily where keeping saves the most drift.

    The first sampled frame is kept whole; then, one patch at a time, the (sample, patch) whose keeping
    lowers the clip's summed squared drift the most (``refresh_gains``), given everything kept so far.
    A scene cut or a pan makes every patch of a frame worth keeping, so whole frames come out of the
    same rule; steady local motion gets single patches. Below one frame's worth, the first frame's
    patches that differ most from mid-grey (the rebuild's start) are taken.

    Args:
        change: the clip's PatchChange.
        coverage: (H, W) share of each patch that holds picture (0 = padding, never kept). Gains count
            picture pixels only (a half-padded patch saves half as much).
        budget: patches to keep at most.
        area_budget: picture area (patches' worth) to stop at, or None: with it, the selection covers no
            more picture than whole frames of the same budget (it prefers full patches, so it may keep
            fewer tokens than ``budget``).
    Returns (kept (T, H, W) bool, the sampled frames kept whole, in time order).
    """
    n_samples = change.moved.shape[0]
    content = coverage > 0
    per_frame = int(content.sum())
    kept = np.zeros(change.moved.shape, bool)
    if budget >= n_samples * per_frame:
        kept[:] = content
        return kept, list(range(n_samples))
    if budget < per_frame:  # not even the first frame: its patches that differ most from the grey start
        distinct = np.abs(change.mean[0] - 128.0) + change.spread[0]
        cells = np.flatnonzero(content.ravel())
        order = np.argsort(-distinct.ravel()[cells], kind="stable")
        kept[0].ravel()[cells[order[:budget]]] = True
        return kept, []
    cells = np.flatnonzero(content.ravel())
    drift = drift_matrix(change.flat(cells))
    error_sums = np.cumsum(drift.astype(np.float64) ** 2, axis=2)  # (N, T, T)
    chosen = np.zeros((len(cells), n_samples), bool)
    chosen[:, 0] = True
    weight = coverage.ravel()[cells].astype(np.float64)
    gains = np.stack([refresh_gains(error_sums[n], chosen[n]) for n in range(len(cells))]) * weight[:, None]
    best_time = np.argmax(gains, axis=1)
    best_gain = gains[np.arange(len(cells)), best_time]
    area = float(weight.sum())
    area_budget = np.inf if area_budget is None else area_budget + 1e-6
    for _ in range(budget - per_frame):
        n = int(np.argmax(best_gain))  # ties: the lowest patch index, then the earliest sample
        if area + weight[n] > area_budget:
            break
        chosen[n, best_time[n]] = True
        area += weight[n]
        gains_n = refresh_gains(error_sums[n], chosen[n]) * weight[n]
        best_time[n] = int(np.argmax(gains_n))
        best_gain[n] = gains_n[best_time[n]]
    kept.reshape(n_samples, -1)[:, cells] = chosen.T
    whole = [t for t in range(n_samples) if kept[t][content].all()]
    return kept, whole
