"""Cheaper motion for the codecs without vectors: global camera models and cheaper DIS settings instead of the
per-block optical flow, what each keeps and what it costs, measured in one run against the default flow.

    python benchmarks/flow_camera.py --clips CLIP ... [--variants NAME ...] [--repeats 3]
        [--out benchmarks/results/flow_camera_fidelity.json]

Variants (each replaces ``OpticalFlowEstimator.block_field`` in this process):
  default     the per-block DIS flow, as `codecpatch patchify` runs it
  median      the DIS field's median vector on every block: the translation a perfect global estimate would give
  phase       OpenCV's ``phaseCorrelate`` on the flow luma (<= 80 px), unwindowed
  projection  the shift that best aligns the flow luma's column and row means (integral projections),
              sub-pixel by a parabola through the three best costs
  grid        pyramidal Lucas-Kanade (OpenCV, 9x9 window, 2 levels) at 8x8 points spread over the flow luma, the
              median of their displacements
  grid_hp     the same on the flow luma minus its 9x9 box mean (a high-pass: an exposure change over a
              brightness gradient no longer reads as a shift)
  similarity  grid_hp's point pairs fitted by a 4-parameter similarity (shift, zoom, rotation; least median of
              squares), evaluated at every block's centre
  dis_gd8     the default DIS with 8 gradient-descent iterations per patch instead of 16
  dis_vr2     the default DIS with 2 variational-refinement iterations instead of 5
  dis_coarser the default DIS stopped one pyramid level coarser (its field upsampled)
Scores: area-matched PSNR as ``flow_fallback.py --no-speed`` gives it (adaptive selection and uniform whole frames
at its picture area, budgets 3.1 / 6.25 / 12.5 / 25%). Cost: ms per frame of each variant's ``block_field`` alone
(the flow luma's halving, the estimate, the field), timed in process on the (luma, previous luma) pairs that
the default's run saw, median of ``--repeats``; run it on a quiet core (``taskset``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import flow_fallback  # noqa: E402

from codecpatch.motion import OpticalFlowEstimator  # noqa: E402
from codecpatch.motion._flow import dis_coarsest_scale, flow_halvings, halve, pool_to_grid  # noqa: E402

_PER_BLOCK = OpticalFlowEstimator.block_field
_LUMA_SIDE = 80  # the flow luma's longer side, as the default flow_max_side
_POINTS_ACROSS = 8  # Lucas-Kanade points per side of the flow luma
_WINDOW = 9  # Lucas-Kanade window and high-pass box side, flow-luma pixels


def _translation(field_shape: tuple[int, int], dx: float, dy: float) -> np.ndarray:
    return np.ascontiguousarray(np.broadcast_to(np.float32([dx, dy]), (*field_shape, 2)))


def median_translation(self, current, previous, grid_shape, pixel_scale):
    field = _PER_BLOCK(self, current, previous, grid_shape, pixel_scale)
    return _translation(grid_shape, *np.median(field.reshape(-1, 2), axis=0))


def _flow_lumas(current, previous, grid_shape) -> tuple[np.ndarray, np.ndarray, int]:
    """The (h, w) uint8 lumas the default flow runs on (halved to <= 80 px), and how often they were halved."""
    halvings = flow_halvings(current.shape, grid_shape, _LUMA_SIDE)
    return halve(current, halvings), halve(previous, halvings), halvings


def phase_translation(self, current, previous, grid_shape, pixel_scale):
    small_current, small_previous, halvings = _flow_lumas(current, previous, grid_shape)
    (dx, dy), _ = cv2.phaseCorrelate(small_current.astype(np.float32), small_previous.astype(np.float32))  # current(x) ~ previous(x + d)
    scale = pixel_scale * 2**halvings
    return _translation(grid_shape, dx * scale, dy * scale)


def best_shift(current: np.ndarray, previous: np.ndarray, radius: int) -> float:
    """s minimising mean |current[x] - previous[x + s]| over the overlap, |s| <= radius, sub-pixel by a parabola."""
    n = len(current)
    costs = np.array([np.abs(current[max(0, -s):min(n, n - s)] - previous[max(0, -s) + s:min(n, n - s) + s]).mean()
                      for s in range(-radius, radius + 1)])
    best = int(costs.argmin())
    offset = 0.0
    if 0 < best < len(costs) - 1:
        left, middle, right = costs[best - 1:best + 2]
        curvature = left - 2 * middle + right
        if curvature > 0:
            offset = 0.5 * (left - right) / curvature
    return best - radius + offset


def projection_translation(self, current, previous, grid_shape, pixel_scale):
    small_current, small_previous, halvings = _flow_lumas(current, previous, grid_shape)
    small_current, small_previous = small_current.astype(np.float32), small_previous.astype(np.float32)
    dx = best_shift(small_current.mean(axis=0), small_previous.mean(axis=0), max(2, small_current.shape[1] // 8))
    dy = best_shift(small_current.mean(axis=1), small_previous.mean(axis=1), max(2, small_current.shape[0] // 8))
    scale = pixel_scale * 2**halvings
    return _translation(grid_shape, dx * scale, dy * scale)


def high_pass(luma: np.ndarray) -> np.ndarray:
    """(h, w) uint8 luma minus its _WINDOW-wide box mean, offset to 128 (saturated)."""
    return cv2.addWeighted(luma, 1.0, cv2.blur(luma, (_WINDOW, _WINDOW)), -1.0, 128.0)


def tracked_points(current: np.ndarray, previous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2) float32 points of ``current`` (an even grid, _POINTS_ACROSS a side) that pyramidal Lucas-Kanade tracked
    into ``previous``, and (n, 2) where it found them, flow-luma pixels (x, y)."""
    h, w = current.shape
    ys, xs = np.linspace(4, h - 5, _POINTS_ACROSS), np.linspace(4, w - 5, _POINTS_ACROSS)
    points = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 1, 2).astype(np.float32)
    found, status, _ = cv2.calcOpticalFlowPyrLK(current, previous, points, None, winSize=(_WINDOW, _WINDOW), maxLevel=2)
    tracked = status.ravel() == 1
    return points.reshape(-1, 2)[tracked], found.reshape(-1, 2)[tracked]


def _median_of_tracks(current, previous, grid_shape, pixel_scale, prepare):
    small_current, small_previous, halvings = _flow_lumas(current, previous, grid_shape)
    points, found = tracked_points(prepare(small_current), prepare(small_previous))
    if len(points) == 0:
        return _translation(grid_shape, 0.0, 0.0)
    dx, dy = np.median(found - points, axis=0) * (pixel_scale * 2**halvings)
    return _translation(grid_shape, dx, dy)


def grid_translation(self, current, previous, grid_shape, pixel_scale):
    return _median_of_tracks(current, previous, grid_shape, pixel_scale, lambda luma: luma)


def grid_hp_translation(self, current, previous, grid_shape, pixel_scale):
    return _median_of_tracks(current, previous, grid_shape, pixel_scale, high_pass)


def similarity_field(self, current, previous, grid_shape, pixel_scale):
    small_current, small_previous, halvings = _flow_lumas(current, previous, grid_shape)
    points, found = tracked_points(high_pass(small_current), high_pass(small_previous))
    scale = pixel_scale * 2**halvings
    model = cv2.estimateAffinePartial2D(points, found, method=cv2.LMEDS)[0] if len(points) >= 3 else None
    if model is None:  # too few points for a fit
        dx, dy = np.median(found - points, axis=0) * scale if len(points) else (0.0, 0.0)
        return _translation(grid_shape, dx, dy)
    (gh, gw), (h, w) = grid_shape, small_current.shape
    x, y = np.meshgrid((np.arange(gw) + 0.5) * w / gw - 0.5, (np.arange(gh) + 0.5) * h / gh - 0.5)  # block centres
    previous_x = model[0, 0] * x + model[0, 1] * y + model[0, 2]
    previous_y = model[1, 0] * x + model[1, 1] * y + model[1, 2]
    return (np.stack([previous_x - x, previous_y - y], axis=-1) * scale).astype(np.float32)


def dis_setting(finest_offset: int = 0, **setters):
    """A block_field that runs the estimator's DIS with some of its settings changed (``setters``: DIS setter name
    without "set" -> value) and its finest scale ``finest_offset`` levels coarser."""
    def block_field(self, current, previous, grid_shape, pixel_scale):
        plan = self._plan(current.shape, grid_shape)
        if plan is None:
            return np.zeros((*grid_shape, 2), np.float32)
        if getattr(self, "_changed_settings", None) != setters:
            for name, value in setters.items():
                getattr(self._dis, "set" + name)(value)
            self._changed_settings = setters
        halvings, finest = plan
        small_current, small_previous = halve(current, halvings), halve(previous, halvings)
        self._dis.setFinestScale(min(finest + finest_offset, dis_coarsest_scale(small_current.shape, self._dis.getPatchSize())))
        flow = self._dis.calc(small_current, small_previous, None)
        return (pool_to_grid(flow, grid_shape) * (pixel_scale * 2**halvings)).astype(np.float32)
    return block_field


VARIANTS = {"default": _PER_BLOCK, "median": median_translation, "phase": phase_translation,
            "projection": projection_translation, "grid": grid_translation, "grid_hp": grid_hp_translation,
            "similarity": similarity_field, "dis_gd8": dis_setting(GradientDescentIterations=8),
            "dis_vr2": dis_setting(VariationalRefinementIterations=2), "dis_coarser": dis_setting(finest_offset=1)}


def recording(block_field, calls: list):
    """``block_field`` that also keeps every call's arguments (the lumas are the reader's own arrays: copied)."""
    def recorded(self, current, previous, grid_shape, pixel_scale):
        calls.append((current.copy(), previous.copy(), grid_shape, pixel_scale))
        return block_field(self, current, previous, grid_shape, pixel_scale)
    return recorded


def cost_ms(block_field, calls: list, repeats: int) -> float:
    """Median over ``repeats`` of the ms per call of ``block_field`` on one fresh estimator over ``calls``."""
    options = flow_fallback.patchify_options()
    runs = []
    for _ in range(repeats):
        estimator = OpticalFlowEstimator(options.flow_preset, options.flow_max_side)
        started = time.perf_counter()
        for current, previous, grid_shape, pixel_scale in calls:
            block_field(estimator, current, previous, grid_shape, pixel_scale)
        runs.append((time.perf_counter() - started) / max(len(calls), 1))
    return 1000 * statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="+", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=flow_fallback.REPO / "benchmarks" / "results" / "flow_camera_fidelity.json")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    results = {}
    try:
        for clip in args.clips:
            calls: list = []
            for name in ["default"] + [v for v in args.variants if v != "default"]:
                OpticalFlowEstimator.block_field = recording(_PER_BLOCK, calls) if name == "default" else VARIANTS[name]
                scores = flow_fallback.fidelity(clip.resolve(), "default")
                OpticalFlowEstimator.block_field = _PER_BLOCK
                scores["flow_ms_per_frame"] = cost_ms(VARIANTS[name], calls, args.repeats)
                results.setdefault(clip.name, {})[name] = scores
                cells = [f"{b['adaptive']:.2f}/{b['uniform']:.2f} (area {b['area']:.4f})" for b in scores["budgets"].values()]
                print(f"{clip.name:32} {name:12} {scores['flow_ms_per_frame']:6.3f} ms  " + "  ".join(cells), flush=True)
    finally:
        OpticalFlowEstimator.block_field = _PER_BLOCK
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"budgets": list(flow_fallback.BUDGETS), "results": results}, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
