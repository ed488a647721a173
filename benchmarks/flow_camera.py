"""One global translation per frame instead of the per-block optical flow (codecs without vectors): what it keeps,
measured in one run against the default flow on the same clips.

    python benchmarks/flow_camera.py --clips CLIP ... [--out benchmarks/results/flow_camera_fidelity.json]

Variants (each replaces ``OpticalFlowEstimator.block_field`` in this process; fidelity only, not timed):
  default   the per-block DIS flow, as `codecpatch patchify` runs it
  median    the DIS field's median vector on every block: the translation a perfect global estimate would give
  phase     OpenCV's ``phaseCorrelate`` on the flow luma (<= 80 px), unwindowed
  projection  the shift that best aligns the flow luma's column and row means (integral projections),
            sub-pixel by a parabola through the three best costs
Scores: area-matched PSNR as ``flow_fallback.py --no-speed`` gives it (adaptive selection and uniform whole frames
at its picture area, budgets 3.1 / 6.25 / 12.5 / 25%).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import flow_fallback  # noqa: E402

from codecpatch.motion import OpticalFlowEstimator  # noqa: E402
from codecpatch.motion._flow import flow_halvings, halve  # noqa: E402

_PER_BLOCK = OpticalFlowEstimator.block_field
_LUMA_SIDE = 80  # the flow luma's longer side, as the default flow_max_side


def _translation(field_shape: tuple[int, int], dx: float, dy: float) -> np.ndarray:
    return np.ascontiguousarray(np.broadcast_to(np.float32([dx, dy]), (*field_shape, 2)))


def median_translation(self, current, previous, grid_shape, pixel_scale):
    field = _PER_BLOCK(self, current, previous, grid_shape, pixel_scale)
    return _translation(grid_shape, *np.median(field.reshape(-1, 2), axis=0))


def _flow_lumas(current, previous, grid_shape) -> tuple[np.ndarray, np.ndarray, int]:
    halvings = flow_halvings(current.shape, grid_shape, _LUMA_SIDE)
    return halve(current, halvings).astype(np.float32), halve(previous, halvings).astype(np.float32), halvings


def phase_translation(self, current, previous, grid_shape, pixel_scale):
    small_current, small_previous, halvings = _flow_lumas(current, previous, grid_shape)
    (dx, dy), _ = cv2.phaseCorrelate(small_current, small_previous)  # current(x) ~ previous(x + d)
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
    dx = best_shift(small_current.mean(axis=0), small_previous.mean(axis=0), max(2, small_current.shape[1] // 8))
    dy = best_shift(small_current.mean(axis=1), small_previous.mean(axis=1), max(2, small_current.shape[0] // 8))
    scale = pixel_scale * 2**halvings
    return _translation(grid_shape, dx * scale, dy * scale)


VARIANTS = {"default": _PER_BLOCK, "median": median_translation, "phase": phase_translation,
            "projection": projection_translation}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="+", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=flow_fallback.REPO / "benchmarks" / "results" / "flow_camera_fidelity.json")
    args = parser.parse_args()
    results = {}
    try:
        for clip in args.clips:
            for name, block_field in VARIANTS.items():
                OpticalFlowEstimator.block_field = block_field
                scores = flow_fallback.fidelity(clip.resolve(), "default")
                results.setdefault(clip.name, {})[name] = scores
                cells = [f"{b['adaptive']:.2f}/{b['uniform']:.2f} (area {b['area']:.4f})" for b in scores["budgets"].values()]
                print(f"{clip.name:32} {name:10} " + "  ".join(cells), flush=True)
    finally:
        OpticalFlowEstimator.block_field = _PER_BLOCK
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"budgets": list(flow_fallback.BUDGETS), "results": results}, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
