"""Adaptive selection: keep a patch where the picture under it has drifted furthest since it was last kept.

A model that receives only the kept patches sees every other patch as it was when last kept (the rebuild
metric holds it; an encoder trained on codec-sparse inputs has nothing newer). So a patch is worth keeping
when its content has changed a lot *since it was last kept*, for as long as it stays that way, not when
it changed a lot in one gap. ``patch_change`` estimates, per sampled frame and patch, what the codec says
changed since the previous sample (the net displacement its motion vectors compose to over the decoded
frames in between, times the patch's texture, plus the residual it could not predict above its noise
floor) and the patch's mean and spread of luma at each sample (a 1/patch thumbnail). ``drift_matrix``
turns these into the expected error of holding patch n from sample s to u; ``adaptive_selection`` keeps
the first frame whole and then, greedily, the (sample, patch) that lowers the clip's summed squared
drift the most, until the budget is spent.

This one rule decides per clip how the budget splits between whole frames and single patches, without a
fixed ratio: at a scene cut, a light change or after a pan every patch of a frame is worth keeping and
the frame comes out whole; a static background with a moving object gets the object's patches, and a
transient (a car passing) is not frozen into the picture after it has gone. Pure numpy/OpenCV over
(T, H, W) patch grids; about 12 N T^2 bytes for N picture patches and T samples (10 MB at 196 x 64).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

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
    scale = float(np.mean(geometry.scale))
    rows, cols = geometry.grid
    coverage = np.maximum(geometry.patch_content_fraction(), 1e-6)

    # One zero canvas for every map: each fills the picture's rectangle, the padding stays zero (``place``).
    # The canvas spans only the patches that hold picture: INTER_AREA by a whole patch sums each patch's own
    # pixels, so cropping at patch boundaries changes no mean, and a letterbox's rows of padding patches (a
    # third of the canvas at 16:9) keep the zero mean the full canvas gives them without being shrunk.
    held_rows, held_cols = geometry.picture_patch_slices
    canvas = np.zeros(((held_rows.stop - held_rows.start) * patch, (held_cols.stop - held_cols.start) * patch), np.float32)
    top, left = geometry.content_y - held_rows.start * patch, geometry.content_x - held_cols.start * patch
    picture = canvas[top:top + geometry.content_height, left:left + geometry.content_width]
    means = np.zeros((rows, cols), np.float32)
    held_means = means[held_rows, held_cols]

    def patch_mean() -> np.ndarray:  # mean over each patch's picture pixels of the map ``picture`` holds now
        held_means[...] = cv2.resize(canvas, held_means.shape[::-1], interpolation=cv2.INTER_AREA)
        return means / coverage

    def resample_onto_picture(block_map: np.ndarray) -> None:  # a block map resampled to the picture's pixels
        written = cv2.resize(block_map.astype(np.float32), (geometry.content_width, geometry.content_height), dst=picture,
                             interpolation=cv2.INTER_LINEAR)
        if written is not picture:  # OpenCV wrote elsewhere (it does not here: it fills a view in place)
            picture[...] = written

    # Every map is written straight onto the canvas's picture (no copy of each map onto it).
    texture, mean, mean_square = (np.zeros((samples.n_samples, rows, cols), np.float32) for _ in range(3))
    for t, rgb in enumerate(samples.rgb):
        np.copyto(picture, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))  # luma, as float32
        luma = picture
        # sqrt(gx^2 + gy^2) in numpy, not cv2.magnitude: OpenCV's vectorised magnitude rounds some elements
        # differently depending on where the array lies in memory, so a clip could score (and, at a near tie,
        # select) differently from one run to the next. Each numpy step here is correctly rounded float32.
        gradient_x, gradient_y = cv2.Sobel(luma, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(luma, cv2.CV_32F, 0, 1, ksize=3)
        mean[t] = patch_mean()
        np.multiply(luma, luma, out=picture)
        mean_square[t] = patch_mean()
        gradient_x *= gradient_x
        gradient_y *= gradient_y
        gradient_x += gradient_y
        gradient = np.sqrt(gradient_x, out=gradient_x)
        np.divide(gradient, np.float32(8.0), out=picture)
        texture[t] = patch_mean()
    spread = np.sqrt(np.maximum(mean_square - mean * mean, 0.0))
    starts = np.concatenate([[samples.info.frame_start - 1], samples.frame_indices[:-1]])
    gaps = np.maximum(samples.frame_indices - starts, 1).astype(np.float32)[:, None, None]
    # Every sample's block maps at once (elementwise, the same float32 steps as one sample at a time); row 0 unused.
    field = samples.field_from_previous
    displacement = np.minimum(np.hypot(field[..., 0], field[..., 1]) * scale, patch)
    excess = np.maximum(samples.residual_accumulated / gaps - noise_floor, 0.0) * gaps
    held_texture = np.maximum(texture[:-1], texture[1:])  # [t - 1]: the larger of samples t - 1 and t
    moved = np.zeros(texture.shape, np.float32)
    unexplained = np.zeros(texture.shape, np.float32)
    for t in range(1, samples.n_samples):
        resample_onto_picture(displacement[t])
        moved[t] = patch_mean() * held_texture[t - 1]
        resample_onto_picture(excess[t])
        unexplained[t] = patch_mean()
    return PatchChange(moved, unexplained, mean.astype(np.float32), spread.astype(np.float32))


def drift_matrix(change: PatchChange) -> np.ndarray:
    """(N, T, T) float32: ``[n, s, u]`` estimates how far patch n at sample u is from its content at
    sample s (zero for u <= s): the change of its mean luma, plus the change accumulated from displacement
    and unexplained residual over the samples in between, which saturates at twice the larger of the two
    samples' luma spreads (content shifted by more than its texture scale is as wrong as it gets).
    ``change`` holds (T, N) float32 arrays (``PatchChange.flat``; other dtypes are taken as float32); luma levels.
    A transposed view of a (T, T, N) ``[u, s, n]`` array (``drift_rows``)."""
    return drift_rows(change, slice(None)).transpose(2, 1, 0)


def drift_rows(change: PatchChange, ends: slice) -> np.ndarray:
    """(U, T, N) float32 ``[u, s, n]``: drift_matrix's ``[n, s, u]`` for the samples u in ``ends`` (a slice of
    range(T) with step 1), laid out with the patches innermost: every step is then one float32 operation over
    contiguous rows of patches (the (N, T, T) layout broadcast along its inner axis, several times slower)."""
    moved, unexplained, mean, spread = (np.asarray(array, np.float32) for array in
                                        (change.moved, change.unexplained, change.mean, change.spread))
    first, stop, _ = ends.indices(moved.shape[0])
    cumulative = np.cumsum(moved + unexplained, axis=0)  # (T, N)
    drift = np.subtract(cumulative[ends, None, :], cumulative[None, :, :])  # accumulated change from s to u
    ceiling = np.maximum(spread[None, :, :], spread[ends, None, :])
    ceiling *= np.float32(2.0)
    np.minimum(drift, ceiling, out=drift)
    mean_change = np.subtract(mean[ends, None, :], mean[None, :, :], out=ceiling)
    drift += np.abs(mean_change, out=mean_change)
    np.maximum(drift, np.float32(0.0), out=drift)
    for row, end in enumerate(range(first, stop)):
        drift[row, end:] = 0.0  # s >= u: nothing to hold yet
    return drift


def squared_drift_sums(change: PatchChange, ends_at_once: int = 16) -> np.ndarray:
    """(N, T, T) float64 ``[n, s, u]``: the sum over samples v <= u of drift_matrix(change)[n, s, v]^2, each
    drift squared in float64 (zero for u <= s). ``change`` holds (T, N) arrays (``PatchChange.flat``).

    A transposed view of a (T, T, N) ``[u, s, n]`` array: the drift is built and squared ``ends_at_once``
    samples u at a time (``drift_rows``, a part that stays in cache), and the running sum over u is then one
    add of contiguous rows per sample, only where s < u (the rest is zero), where ``np.cumsum`` over the
    (N, T, T) layout walks each 64-long row on its own. The same float64 additions in the same order, so the
    same bits.
    """
    n_samples, n_patches = change.moved.shape
    by_end = np.empty((n_samples, n_samples, n_patches), np.float64)  # [u, s, n]
    for start in range(0, n_samples, ends_at_once):
        ends = slice(start, min(start + ends_at_once, n_samples))
        np.square(drift_rows(change, ends), out=by_end[ends], dtype=np.float64)
    for end in range(1, n_samples):
        by_end[end, :end] += by_end[end - 1, :end]
    return by_end.transpose(2, 1, 0)


def refresh_gains(error_sums: np.ndarray, kept: np.ndarray, patches: np.ndarray | None = None) -> np.ndarray:
    """Squared drift saved over the following samples by keeping a patch at each sample.

    Args:
        error_sums: ([P,] T, T) ``[s, u]`` = sum over samples s..u of the squared drift when last kept at s.
        kept: ([M,] T) bool, the samples at which the patch is already kept (sample 0 always is).
        patches: (M,) int, the rows of ``error_sums`` that ``kept``'s rows are, or None: the first M. Read in
            place, where ``error_sums[patches]`` would copy M x T x T floats.
    Returns:
        ([M,] T) float: a sample t between kept samples s < t < n saves
        sum_{u=t}^{n-1} drift(s, u)^2 - drift(t, u)^2; already kept samples gain -inf.
    """
    if kept.ndim == 1:
        return refresh_gains(error_sums[None], kept[None])[0]
    count, n_samples = kept.shape
    times = np.arange(n_samples)
    previous = np.maximum.accumulate(np.where(kept, times, 0), axis=1)
    next_kept = np.minimum.accumulate(np.where(kept, times, n_samples)[:, ::-1], axis=1)[:, ::-1]
    last = np.concatenate([next_kept[:, 1:], np.full((count, 1), n_samples)], axis=1) - 1
    before = np.maximum(times - 1, 0)
    rows = np.arange(count) if patches is None else np.asarray(patches)
    # Four lookups of [row, s, u] as takes from the flat memory, cheaper than indexing with three index arrays.
    flat, (row_step, start_step, end_step) = flat_memory(error_sums)
    held_from, fresh_from = (rows * row_step)[:, None] + previous * start_step, (rows * row_step)[:, None] + times * start_step
    started = times > 0
    held = flat.take(held_from + last * end_step) - np.where(started, flat.take(held_from + before * end_step), 0.0)
    fresh = flat.take(fresh_from + last * end_step) - np.where(started, flat.take(fresh_from + before * end_step), 0.0)
    return np.where(kept, -np.inf, held - fresh)


def flat_memory(array: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """(1-D view of the array's memory, the array's strides in elements): ``array[i, j, ...]`` is
    ``flat[i * steps[0] + j * steps[1] + ...]``. An array that is not one dense block in some axis order (a
    slice, a reversed axis) is copied first."""
    in_memory = array.transpose(np.argsort(array.strides, kind="stable")[::-1])
    if not in_memory.flags.c_contiguous:
        array = in_memory = np.ascontiguousarray(array)
    return in_memory.reshape(-1), tuple(stride // array.itemsize for stride in array.strides)


def adaptive_selection(change: PatchChange, coverage: np.ndarray, budget: int,
                       area_budget: float | None = None) -> tuple[np.ndarray, list[int]]:
    """Up to ``budget`` content patches, greedily where keeping saves the most drift.

    The first sampled frame is kept whole; then, a few at a time, the (sample, patch) whose keeping
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
        order = cells[np.argsort(-distinct.ravel()[cells], kind="stable")][:budget]
        if area_budget is not None:
            order = order[np.cumsum(coverage.ravel()[order]) <= area_budget + 1e-6]
        kept[0].ravel()[order] = True
        return kept, []
    cells = np.flatnonzero(content.ravel())
    error_sums = squared_drift_sums(change.flat(cells))  # (N, T, T)
    chosen = np.zeros((len(cells), n_samples), bool)
    chosen[:, 0] = True
    weight = coverage.ravel()[cells].astype(np.float64)
    gains = refresh_gains(error_sums, chosen) * weight[:, None]
    best_time = np.argmax(gains, axis=1)
    best_gain = gains[np.arange(len(cells)), best_time]
    area = float(weight.sum())
    area_budget = np.inf if area_budget is None else area_budget + 1e-6
    remaining = budget - per_frame
    while remaining > 0:
        # Patches' gains are independent of each other's choices, so the best few patches of a round are
        # taken together (an eighth of what is left: the last picks go one at a time, as exact greedy).
        batch = np.argsort(-best_gain, kind="stable")[: max(1, remaining // 8)]
        batch = batch[np.cumsum(weight[batch]) <= area_budget - area]
        if batch.size == 0 or not np.isfinite(best_gain[batch[0]]):
            break
        chosen[batch, best_time[batch]] = True
        area += float(weight[batch].sum())
        remaining -= batch.size
        gains_batch = refresh_gains(error_sums, chosen[batch], batch) * weight[batch, None]
        best_time[batch] = np.argmax(gains_batch, axis=1)
        best_gain[batch] = gains_batch[np.arange(batch.size), best_time[batch]]
    kept.reshape(n_samples, -1)[:, cells] = chosen.T
    whole = [t for t in range(n_samples) if kept[t][content].all()]
    return kept, whole
