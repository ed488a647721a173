"""Residual-energy maps: how much of a frame its prediction from the previous frame fails to explain.

Stock FFmpeg does not export the codec's residual, so we stand in for it with the absolute luma difference
between the frame and its motion-compensated prediction from the previous decoded frame (warped by the
block motion field). A plain frame difference is the cheap option.

Pure numpy/OpenCV over luma arrays; no PyAV import.
"""

from __future__ import annotations

import cv2
import numpy as np


class ResidualEstimator:
    """Computes residual-energy maps, reusing scratch buffers between frames of the same size.

    Reusing buffers matters: allocating several fresh full-frame arrays per frame costs more in page
    faults than the arithmetic itself. One instance per decoding thread (instances are not thread-safe).
    """

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def motion_compensated(
        self, current_luma: np.ndarray, previous_luma: np.ndarray, field: np.ndarray, grid_shape: tuple[int, int]
    ) -> np.ndarray:
        """(gh, gw) float32 mean |current - warped previous| per block, in luma levels (0..255).

        Args:
            current_luma, previous_luma: (h, w) uint8 luma at analysis resolution.
            field: (gh, gw, 2) float32 displacement into the previous frame in analysis-resolution pixels
                (see ``warp``).
            grid_shape: (gh, gw), the grid of the output (usually ``field.shape[:2]``).
        """
        predicted = self.warp(previous_luma, field)
        return self.block_mean(cv2.absdiff(current_luma, predicted, dst=self._buffer("diff", current_luma.shape, np.uint8)), grid_shape)

    def frame_difference(self, current_luma: np.ndarray, previous_luma: np.ndarray, grid_shape: tuple[int, int]) -> np.ndarray:
        """(gh, gw) float32 mean |current - previous| per block, in luma levels (0..255)."""
        return self.block_mean(cv2.absdiff(current_luma, previous_luma, dst=self._buffer("diff", current_luma.shape, np.uint8)), grid_shape)

    def warp(self, previous_luma: np.ndarray, field: np.ndarray) -> np.ndarray:
        """Motion-compensated prediction of the current frame from the previous one.

        Args:
            previous_luma: (h, w) uint8 luma of the previous frame, at analysis resolution.
            field: (gh, gw, 2) float32 displacement (dx, dy) from the current frame into the previous one,
                in analysis-resolution pixels; each cell covers ``ceil(h/gh) x ceil(w/gw)`` pixels (partial
                cells at the bottom/right edge).

        Returns:
            (h, w) uint8 prediction ``pred[y, x] = previous[y + dy, x + dx]`` (bilinear, edges replicated).
            The array is a scratch buffer, overwritten by the next call.
        """
        h, w = previous_luma.shape
        gh, gw = field.shape[:2]
        cell_h, cell_w = -(-h // gh), -(-w // gw)
        # Nearest upsampling by an integer factor keeps block boundaries exact; crop the partial edge cells.
        padded = self._buffer("per_pixel", (gh * cell_h, gw * cell_w, 2), np.float32)
        cv2.resize(np.ascontiguousarray(field, np.float32), (gw * cell_w, gh * cell_h), dst=padded, interpolation=cv2.INTER_NEAREST)
        sample_at = self._buffer("sample_at", (h, w, 2), np.float32)
        np.add(self._pixel_grid(h, w), padded[:h, :w], out=sample_at)
        predicted = self._buffer("predicted", (h, w), np.uint8)
        cv2.remap(previous_luma, sample_at, None, interpolation=cv2.INTER_LINEAR, dst=predicted, borderMode=cv2.BORDER_REPLICATE)
        return predicted

    def block_mean(self, values: np.ndarray, grid_shape: tuple[int, int]) -> np.ndarray:
        """(gh, gw) float32 mean of a (h, w) map over the cells of a grid covering it.

        Cells are ``ceil(h/gh) x ceil(w/gw)`` pixels; partial cells at the bottom/right edge are completed by
        replicating the edge pixels.
        """
        gh, gw = grid_shape
        h, w = values.shape
        cell_h, cell_w = -(-h // gh), -(-w // gw)
        as_float = self._buffer("as_float", (h, w), np.float32)
        np.copyto(as_float, values, casting="unsafe")
        if (gh * cell_h, gw * cell_w) != (h, w):
            as_float = cv2.copyMakeBorder(as_float, 0, gh * cell_h - h, 0, gw * cell_w - w, cv2.BORDER_REPLICATE)
        # INTER_AREA with an integer ratio is an exact box mean, and much faster than a numpy reshape-mean.
        return cv2.resize(as_float, (gw, gh), interpolation=cv2.INTER_AREA)

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape != tuple(shape) or buffer.dtype != dtype:
            buffer = self._buffers[name] = np.empty(shape, dtype)
        return buffer

    def _pixel_grid(self, h: int, w: int) -> np.ndarray:
        """(h, w, 2) float32 (x, y) coordinates of every pixel."""
        grid = self._buffers.get("pixel_grid")
        if grid is None or grid.shape != (h, w, 2):
            xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
            grid = self._buffers["pixel_grid"] = np.stack([xs, ys], axis=-1)
        return grid


def warp_by_block_field(previous_luma: np.ndarray, field: np.ndarray) -> np.ndarray:
    """(h, w) uint8 motion-compensated prediction; see ``ResidualEstimator.warp``."""
    return ResidualEstimator().warp(previous_luma, field).copy()


def block_mean(values: np.ndarray, grid_shape: tuple[int, int]) -> np.ndarray:
    """(gh, gw) float32 per-cell mean of a (h, w) map; see ``ResidualEstimator.block_mean``."""
    return ResidualEstimator().block_mean(values, grid_shape)


def motion_compensated_residual(
    current_luma: np.ndarray, previous_luma: np.ndarray, field: np.ndarray, grid_shape: tuple[int, int]
) -> np.ndarray:
    """(gh, gw) float32 mean |current - warped previous| per block; see ``ResidualEstimator``."""
    return ResidualEstimator().motion_compensated(current_luma, previous_luma, field, grid_shape)


def frame_difference(current_luma: np.ndarray, previous_luma: np.ndarray, grid_shape: tuple[int, int]) -> np.ndarray:
    """(gh, gw) float32 mean |current - previous| per block, in luma levels (0..255)."""
    return ResidualEstimator().frame_difference(current_luma, previous_luma, grid_shape)
