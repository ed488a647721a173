"""ClipSamples -> PatchSet: score every (sampled frame, patch) by the codec's energy and keep a budget.

Pure: numpy/OpenCV over the arrays the collector gathered; no decoding here.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ._adaptive import adaptive_selection, patch_change
from ._config import PatchifyConfig
from ._energy import fuse, normalise_by_percentile
from ._geometry import patches_of, sum_pool
from ._select import select_top_k, timeline_slots, uniform_frames
from ._types import ClipSamples, PatchSet


def patch_scores(samples: ClipSamples, config: PatchifyConfig) -> np.ndarray:
    """(T, H, W) float32 patch scores: fused normalised energy summed over each patch's canvas pixels.

    Energies are per block of the source frame; each canvas pixel takes the energy of the block it shows,
    so a patch's score is the energy it covers (partly padded patches score only their content).
    """
    if config.energy == "accumulated":
        motion, residual = samples.motion_accumulated, samples.residual_accumulated
    else:
        motion, residual = samples.motion_instant, samples.residual_instant
    per_frame = config.normalise == "frame"
    fused = fuse(normalise_by_percentile(motion, per_frame), normalise_by_percentile(residual, per_frame),
                 config.fusion, config.motion_weight)
    geometry = samples.geometry
    canvas = np.stack([geometry.map_to_canvas(block_map) for block_map in fused])  # one resize per frame
    return sum_pool(canvas, geometry.patch) / float(geometry.patch * geometry.patch)


def per_frame_energy(samples: ClipSamples) -> tuple[np.ndarray, np.ndarray]:
    """(T, gh, gw) mean motion (px) and residual (levels) per decoded frame over each sample's gap."""
    starts = np.concatenate([[samples.info.frame_start - 1], samples.frame_indices[:-1]])
    gaps = np.maximum(samples.frame_indices - starts, 1).astype(np.float32)[:, None, None]
    return samples.motion_accumulated / gaps, samples.residual_accumulated / gaps


def is_static(samples: ClipSamples, config: PatchifyConfig) -> bool:
    """True when neither motion nor residual rises above the static thresholds in the clip: the 99th
    percentile of the per-frame mean maps (camera motion removed) stays below ``static_motion_px`` pixels
    and ``static_residual`` luma levels."""
    if samples.n_samples < 2:
        return False
    motion, residual = per_frame_energy(samples)
    return percentile_below(motion, 99, config.static_motion_px) and percentile_below(residual, 99, config.static_residual)


def percentile_below(values: np.ndarray, q: float, threshold: float) -> bool:
    """``np.percentile(values, q) < threshold`` (linear interpolation), exactly, without computing the percentile
    unless ``threshold`` falls between the two order statistics it interpolates (then ``np.percentile`` decides).

    The interpolated value lies between those two neighbours, so they settle the comparison on their own almost
    always; that is one partition, and it spares ``np.percentile``'s first-call import of ``numpy.ma`` (7-17 ms,
    through ``np.unique``), which a one-clip command pays in full.
    """
    flat = np.asarray(values).ravel()
    if flat.size == 0 or flat.dtype.kind not in "iuf":
        return bool(np.percentile(flat, q) < threshold)  # numpy's own answer (or error) for no values, bools, ...
    below = math.floor((flat.size - 1) * (q / 100))  # the order statistics numpy interpolates between
    above = min(below + 1, flat.size - 1)
    ordered = np.partition(flat, sorted({below, above, flat.size - 1}))
    lower, upper = ordered[below], ordered[above]
    settled = np.isfinite(lower) and np.isfinite(upper) and not np.isnan(ordered[-1])  # else numpy's lerp may give NaN
    if not settled or not (upper < threshold or lower >= threshold):
        return bool(np.percentile(flat, q) < threshold)  # infinities, NaNs, or the threshold between the neighbours
    return bool(upper < threshold)


def codec_selection(samples: ClipSamples, config: PatchifyConfig) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]], bool, int]:
    """The codec mode's choice: (kept (T,H,W), scores (T,H,W), whole frames, static fallback?, budget).

    The budget counts patches that hold picture (``content``), so a fraction is a fraction of the picture
    whatever the canvas's padding; the adaptive selection also stops at the picture area whole frames of
    that budget would cover (it may keep fewer tokens than the budget, never more area).
    """
    content = samples.geometry.patch_content_fraction() > 0
    budget = config.budget.tokens(samples.n_samples, int(content.sum()))
    if config.selection == "onevision":
        config = replace(config, energy="instant", normalise="frame", keep_first=True, keep_i_frames=True, refresh=0.0)
    if is_static(samples, config):
        kept, chosen = uniform_frames(samples.n_samples, content, budget)
        return kept, patch_scores(samples, config), [(t, "static fallback") for t in chosen], True, budget
    if config.selection == "adaptive":
        change = patch_change(samples, config.static_residual)
        coverage = samples.geometry.patch_content_fraction()
        area_budget = config.budget.picture_area(samples.n_samples, float(coverage.sum()))
        kept, whole_frames = adaptive_selection(change, coverage, budget, area_budget)
        return kept, change.moved + change.unexplained, [(t, whole_frame_reason(samples, t)) for t in whole_frames], False, budget
    scores = patch_scores(samples, config)
    candidates: list[tuple[int, str]] = [(0, "first")] if config.keep_first else []
    if config.keep_i_frames:
        candidates += [(t, "I-frame") for t, kind in enumerate(samples.picture_types) if kind == "I"]
    selection_scores = scores
    if config.refresh > 0:
        selection_scores = with_refresh(scores, content, budget, candidates, config.refresh, config.seed)
    kept, whole = select_top_k(selection_scores, content, budget, candidates)
    return kept, scores, whole, False, budget


def whole_frame_reason(samples: ClipSamples, t: int) -> str:
    """Why the adaptive selection kept sampled frame ``t`` whole, in the codec's words."""
    if t == 0:
        return "first"
    return "I-frame" if samples.picture_types[t] == "I" else "drift"


def with_refresh(scores: np.ndarray, content: np.ndarray, budget: int, whole: list[tuple[int, str]], fraction: float,
                 seed: int) -> np.ndarray:
    """Scores with a seeded random ``fraction`` of the non-whole budget raised to +inf, so top-K takes them
    first: a sprinkling of refresh patches over regions and times the energy never reaches."""
    per_frame = int(content.sum())
    whole_frames = [t for t, _ in whole][: max(0, budget // max(per_frame, 1))]
    eligible = content[None] & np.ones(scores.shape[0], bool)[:, None, None]
    eligible[whole_frames] = False
    candidates = np.flatnonzero(eligible.ravel())
    count = min(len(candidates), int(round(fraction * max(0, budget - per_frame * len(whole_frames)))))
    boosted = scores.astype(np.float64, copy=True)
    if count:
        boosted.ravel()[np.random.default_rng(seed).choice(candidates, size=count, replace=False)] = np.inf
    return boosted


def patchify_samples(samples: ClipSamples, config: PatchifyConfig) -> PatchSet:
    """Turn one clip's samples into a PatchSet according to ``config.mode``.

    codec: global top-K over (sampled frame, patch) by fused energy, whole-frame keeps first.
    chunk / image: every content patch of every sampled frame.
    """
    geometry = samples.geometry
    rows, cols = geometry.grid
    content = geometry.patch_content_fraction() > 0
    if config.mode == "codec":
        kept, scores, whole, static, budget = codec_selection(samples, config)
    else:
        kept = np.broadcast_to(content, (samples.n_samples, rows, cols)).copy()
        scores = np.zeros(kept.shape, np.float32)
        whole, static, budget = [(t, config.mode) for t in range(samples.n_samples)], False, int(kept.sum())
    return build_patchset(samples, config, kept, scores, whole, static, budget)


def build_patchset(
    samples: ClipSamples, config: PatchifyConfig, kept: np.ndarray, scores: np.ndarray,
    whole: list[tuple[int, str]], static: bool, budget: int,
) -> PatchSet:
    """Cut the kept patches out of the canvas frames and attach their positions and provenance."""
    timeline = timeline_slots(samples.n_samples, config.timeline_slots) if config.mode != "image" else np.zeros(1, np.int32)
    t_index, h_index, w_index = np.nonzero(kept)  # row-major: ordered by (t, h, w)
    pixels = patches_of(samples.canvas_frames(), samples.geometry.patch)[t_index, h_index, w_index]
    types = np.asarray(samples.picture_types, dtype="<U2")
    return PatchSet(
        pixels=np.ascontiguousarray(pixels),
        positions=np.stack([timeline[t_index], h_index, w_index], axis=1).astype(np.int32),
        sample_index=t_index.astype(np.int32),
        frame_index=samples.frame_indices[t_index].astype(np.int64),
        picture_type=types[t_index],
        saliency=scores[t_index, h_index, w_index].astype(np.float32),
        grid=(samples.n_samples, *samples.geometry.grid),
        timeline=timeline,
        frame_indices=samples.frame_indices.copy(),
        kept=kept,
        whole_frames=tuple(whole),
        static_fallback=static,
        mode=config.mode,
        budget=str(config.budget),
        n_budget=budget,
        info=samples.info,
        geometry=samples.geometry,
    )
