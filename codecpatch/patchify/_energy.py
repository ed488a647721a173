"""Per-block energies from motion fields and residual maps: camera-motion removal, accumulation over
the frames between samples, normalisation and fusion. Pure numpy/OpenCV over block grids (gh, gw)."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from ._config import CameraCompensation, Fusion


def camera_motion(field: np.ndarray, valid: np.ndarray, method: CameraCompensation) -> np.ndarray:
    """(gh, gw, 2) float32 estimate of the camera-induced part of a block motion field.

    Args:
        field: (gh, gw, 2) displacement per block, pixels.
        valid: (gh, gw) bool, blocks that carry a motion estimate (intra blocks do not).
        method: "median" (one global translation), "affine" (robust least-squares affine in block
            coordinates, three trimmed refits) or "none" (zeros).
    """
    gh, gw = field.shape[:2]
    if method == "none" or not valid.any():
        return np.zeros_like(field, dtype=np.float32)
    if method == "median":
        return np.broadcast_to(median_vector(field, valid), field.shape)
    vectors = field[valid]
    rows, cols = np.nonzero(valid)
    design = np.stack([cols, rows, np.ones_like(cols)], axis=1).astype(np.float64)
    keep = np.ones(len(vectors), bool)
    for _ in range(3):
        if keep.sum() < 3:
            break
        coefficients, *_ = np.linalg.lstsq(design[keep], vectors[keep].astype(np.float64), rcond=None)
        errors = np.linalg.norm(design @ coefficients - vectors, axis=1)
        keep = errors <= max(np.percentile(errors, 70), 0.25)  # object motion is the outlier set
    all_rows, all_cols = np.mgrid[0:gh, 0:gw]
    grid_design = np.stack([all_cols.ravel(), all_rows.ravel(), np.ones(gh * gw)], axis=1)
    return (grid_design @ coefficients).reshape(gh, gw, 2).astype(np.float32)


def median_vector(field: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(2,) float32 median (dx, dy) of the valid blocks: one global translation.

    Taken over a regular quarter of the blocks (every other row and column) when that leaves enough of
    them: as robust, and several times cheaper than the full median on every frame.
    """
    sparse_valid = valid[::2, ::2]
    if np.count_nonzero(sparse_valid) >= 16:
        field, valid = field[::2, ::2], sparse_valid
    result = np.zeros(2, np.float32)
    for axis in (0, 1):
        values = field[..., axis][valid]
        if values.size:
            middle = values.size // 2
            values.partition(middle)  # O(n), no full sort
            result[axis] = values[middle] if values.size % 2 else 0.5 * (values[middle] + values[:middle].max())
    return result


def object_motion_magnitude(field: np.ndarray, valid: np.ndarray, method: CameraCompensation) -> np.ndarray:
    """(gh, gw) float32 |field - camera motion| in pixels; zero where ``valid`` is False."""
    if method == "median":  # a global translation: no full-size camera field needed
        camera_x, camera_y = median_vector(field, valid)
        magnitude = np.hypot(field[..., 0] - camera_x, field[..., 1] - camera_y)
    else:
        residual_motion = field - camera_motion(field, valid, method)
        magnitude = np.hypot(residual_motion[..., 0], residual_motion[..., 1])
    magnitude[~valid] = 0.0
    return magnitude.astype(np.float32, copy=False)


def compose_fields(newer: np.ndarray, older: np.ndarray, block_size: int) -> np.ndarray:
    """Chain two block fields: ``newer`` maps frame n -> n-1, ``older`` maps n-1 -> k; returns n -> k.

    ``result(x) = newer(x) + older(x + newer(x))`` with ``older`` sampled bilinearly at the displaced block
    position (edges replicated). Shapes (gh, gw, 2), pixels.
    """
    cols, rows = _block_coordinates(*newer.shape[:2])
    sample_x = cols + newer[..., 0] / np.float32(block_size)
    sample_y = rows + newer[..., 1] / np.float32(block_size)
    older_at = cv2.remap(np.ascontiguousarray(older, np.float32), sample_x, sample_y, interpolation=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    return np.add(newer, older_at, out=older_at, dtype=np.float32)


@lru_cache(maxsize=16)
def _block_coordinates(gh: int, gw: int) -> tuple[np.ndarray, np.ndarray]:
    cols, rows = np.meshgrid(np.arange(gw, dtype=np.float32), np.arange(gh, dtype=np.float32))
    cols.flags.writeable = rows.flags.writeable = False
    return cols, rows


def normalise_by_percentile(maps: np.ndarray, per_frame: bool, percentile: float = 95.0) -> np.ndarray:
    """Divide by the 95th percentile and clip to [0, 1].

    Args:
        maps: (T, gh, gw) non-negative energies.
        per_frame: one percentile per map (True) or one for the whole stack (False).
    A map whose percentile is zero is divided by its maximum instead (sparse motion), and stays zero when
    it is all zero.
    """
    maps = maps.astype(np.float32, copy=False)
    axes = (1, 2) if per_frame else None
    scale = np.percentile(maps, percentile, axis=axes, keepdims=per_frame)
    peak = maps.max(axis=axes, keepdims=per_frame)
    scale = np.where(scale > 0, scale, peak)
    normalised = np.divide(maps, scale, out=np.zeros_like(maps), where=np.broadcast_to(scale > 0, maps.shape))
    return np.clip(normalised, 0.0, 1.0)


def fuse(motion: np.ndarray, residual: np.ndarray, method: Fusion, motion_weight: float = 0.5) -> np.ndarray:
    """Combine normalised motion and residual energies (same shape, values in [0, 1])."""
    if method == "mean":
        return (motion + residual) / 2.0
    if method == "max":
        return np.maximum(motion, residual)
    return motion_weight * motion + (1.0 - motion_weight) * residual
