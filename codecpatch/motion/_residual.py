"""Residual-energy maps: how much of a frame its prediction from the previous frame fails to explain.

Stock FFmpeg does not export the codec's residual, so we stand in for it with the absolute luma difference
between the frame and its motion-compensated prediction from the previous decoded frame (warped by the
block motion field). A plain frame difference is the cheap option.

Pure numpy/OpenCV over luma arrays; no PyAV import.
"""

from __future__ import annotations

import cv2
import numpy as np


#: The residual strides offered (every pixel, a quarter, a sixteenth); see ``ResidualEstimator.sampled_residual``.
RESIDUAL_STRIDES = (1, 2, 4)


class ResidualEstimator:
    """Computes residual-energy maps, reusing scratch buffers between frames of the same size.

    Reusing buffers matters: allocating several fresh full-frame arrays per frame costs more in page
    faults than the arithmetic itself. One instance per decoding thread (instances are not thread-safe).
    """

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}
        self._samples: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def motion_compensated(
        self, current_luma: np.ndarray, previous_luma: np.ndarray, field: np.ndarray, grid_shape: tuple[int, int],
        stride: int = 1, cell: int | None = None,
    ) -> np.ndarray:
        """(gh, gw) float32 mean |current - warped previous| per block, in luma levels (0..255).

        Args:
            current_luma, previous_luma: (h, w) uint8 luma at analysis resolution.
            field: (gh, gw, 2) float32 displacement into the previous frame in analysis-resolution pixels
                (see ``warp``).
            grid_shape: (gh, gw), the grid of the output (usually ``field.shape[:2]``).
            stride: compare every ``stride``-th pixel of each axis only (1: every pixel). The previous frame
                is still sampled bilinearly at full analysis resolution, so sub-pixel motion counts as
                before; fewer pixels enter each block's mean (see ``sampled_residual``).
            cell: with ``stride > 1``, the block side in analysis pixels (``block_size / factor``), so that
                each block averages exactly the samples inside it (default ``ceil(h / gh)``).
        """
        if stride > 1:
            return self.sampled_residual(current_luma, previous_luma, field, grid_shape, stride, cell)
        predicted = self.warp(previous_luma, field)
        return self.block_mean(cv2.absdiff(current_luma, predicted, dst=self._buffer("diff", current_luma.shape, np.uint8)), grid_shape)

    def frame_difference(self, current_luma: np.ndarray, previous_luma: np.ndarray, grid_shape: tuple[int, int],
                         stride: int = 1, cell: int | None = None) -> np.ndarray:
        """(gh, gw) float32 mean |current - previous| per block, in luma levels (0..255); ``stride`` and
        ``cell`` as in ``motion_compensated``."""
        if stride > 1:
            return self.sampled_residual(current_luma, previous_luma, None, grid_shape, stride, cell)
        return self.block_mean(cv2.absdiff(current_luma, previous_luma, dst=self._buffer("diff", current_luma.shape, np.uint8)), grid_shape)

    def sampled_residual(self, current_luma: np.ndarray, previous_luma: np.ndarray, field: np.ndarray | None,
                         grid_shape: tuple[int, int], stride: int, cell: int | None = None) -> np.ndarray:
        """(gh, gw) float32 mean |current - prediction| over the sampled pixels of each block (``sample_positions``
        on both axes); the prediction is the previous luma warped by ``field`` (sampled bilinearly at full
        analysis resolution), or the previous luma itself when ``field`` is None.

        At ``stride=2`` the remap, the difference and the block mean each touch a quarter of the pixels; a
        block of ``cell`` x ``cell`` analysis pixels still averages ``(cell / stride)**2`` of them (the stride
        is capped at the cell side). Blocks are ``cell`` pixels (default ``ceil(h / gh)``). Every block that
        holds a pixel holds a sample (a 1-pixel edge row, e.g. the last of 1080p at 1/8, counts); a partial
        edge block averages the samples it has, a block past the picture (no pixel) repeats its neighbour.
        """
        h, w = previous_luma.shape
        gh, gw = grid_shape
        cell_h, cell_w = (cell, cell) if cell is not None else (-(-h // gh), -(-w // gw))
        stride = max(1, min(stride, cell_h, cell_w))  # at least one sample per block
        ys, xs, sample_grid = self._sample_layout(h, w, stride)
        current = _take(current_luma, ys, xs, stride)
        if field is None:
            predicted = _take(previous_luma, ys, xs, stride)
        else:
            sample_at = self._buffer("sample_at_sparse", (len(ys), len(xs), 2), np.float32)
            np.add(sample_grid, self._per_sample(field, ys, xs, stride, cell_h, cell_w), out=sample_at)
            predicted = cv2.remap(previous_luma, sample_at, None, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        difference = cv2.absdiff(current, predicted)
        if cell_h % stride or cell_w % stride:  # samples fall unevenly into blocks: sum them by block index
            block = (np.minimum(ys // cell_h, gh - 1)[:, None] * gw + np.minimum(xs // cell_w, gw - 1)[None, :]).ravel()
            sums = np.bincount(block, weights=difference.ravel(), minlength=gh * gw).reshape(gh, gw)
            counts = np.bincount(block, minlength=gh * gw).reshape(gh, gw)
            return _mean_of_sums(sums, counts)
        # cell a multiple of the stride: sample i lies in block i // (cell / stride), a regular grouping
        return _cell_mean(difference, grid_shape, (cell_h // stride, cell_w // stride))

    def _per_sample(self, field: np.ndarray, ys: np.ndarray, xs: np.ndarray, stride: int, cell_h: int, cell_w: int) -> np.ndarray:
        """(len(ys), len(xs), 2) float32: the block field at each sample of ``sampled_residual``."""
        gh, gw = field.shape[:2]
        rows, cols = len(ys), len(xs)
        if cell_h % stride == 0 and cell_w % stride == 0:  # whole samples per block: integer-factor nearest upsampling
            per_h, per_w = cell_h // stride, cell_w // stride
            per_sample = self._buffer("per_sample", (gh * per_h, gw * per_w, 2), np.float32)
            cv2.resize(np.ascontiguousarray(field, np.float32), (gw * per_w, gh * per_h), dst=per_sample, interpolation=cv2.INTER_NEAREST)
            return per_sample[:rows, :cols]
        return np.asarray(field, np.float32)[np.minimum(ys // cell_h, gh - 1)[:, None], np.minimum(xs // cell_w, gw - 1)[None, :]]

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

    def _sample_layout(self, h: int, w: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ys, xs, (len(ys), len(xs), 2) float32 (x, y) coordinates) of the samples of ``sampled_residual``
        on an (h, w) luma, made once per frame size (one entry: a stream's size rarely changes)."""
        key = (h, w, stride)
        if key not in self._samples:
            ys, xs = sample_positions(h, stride), sample_positions(w, stride)
            grid_x, grid_y = np.meshgrid(xs.astype(np.float32), ys.astype(np.float32))
            self._samples = {key: (ys, xs, np.stack([grid_x, grid_y], axis=-1))}
        return self._samples[key]

    def _pixel_grid(self, h: int, w: int) -> np.ndarray:
        """(h, w, 2) float32 (x, y) coordinates of every pixel."""
        grid = self._buffers.get("pixel_grid")
        if grid is None or grid.shape != (h, w, 2):
            xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
            grid = self._buffers["pixel_grid"] = np.stack([xs, ys], axis=-1)
        return grid


def sample_positions(size: int, stride: int) -> np.ndarray:
    """(ceil(size / stride),) int: the pixels ``stride // 2 + stride i`` of an axis of ``size`` pixels, the last
    one moved back onto the last pixel when it falls past it (an odd side at stride 2). Blocks start on
    multiples of the stride, so sample i lies in block ``i // (cell / stride)`` and every block that holds a
    pixel holds a sample."""
    return np.minimum(np.arange(stride // 2, size + stride // 2, stride), size - 1)


def _take(luma: np.ndarray, ys: np.ndarray, xs: np.ndarray, stride: int) -> np.ndarray:
    """luma at rows ``ys`` and columns ``xs`` (contiguous): a strided slice unless a side is odd."""
    part = luma[stride // 2 :: stride, stride // 2 :: stride]
    if part.shape == (len(ys), len(xs)):
        return np.ascontiguousarray(part)
    return luma[np.ix_(ys, xs)]


def _cell_mean(values: np.ndarray, grid_shape: tuple[int, int], per_cell: tuple[int, int]) -> np.ndarray:
    """(gh, gw) float32 mean of a (h, w) map over cells of ``per_cell`` (rows, cols) values each; a partial
    cell at the bottom/right edge averages the values it has (see ``_mean_of_sums`` for empty ones)."""
    gh, gw = grid_shape
    per_h, per_w = per_cell
    h, w = values.shape
    as_float = values.astype(np.float32)
    if (gh * per_h, gw * per_w) == (h, w):
        return cv2.resize(as_float, (gw, gh), interpolation=cv2.INTER_AREA)  # integer ratio: an exact box mean
    padded = cv2.copyMakeBorder(as_float, 0, gh * per_h - h, 0, gw * per_w - w, cv2.BORDER_CONSTANT, value=0)
    sums = cv2.resize(padded, (gw, gh), interpolation=cv2.INTER_AREA) * np.float32(per_h * per_w)
    row_counts = np.clip(h - np.arange(gh) * per_h, 0, per_h)
    col_counts = np.clip(w - np.arange(gw) * per_w, 0, per_w)
    return _mean_of_sums(sums, np.outer(row_counts, col_counts))


def _mean_of_sums(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(gh, gw) float32 sums / counts; blocks past the last row or column with any count (no sample fell in
    them) repeat that row or column."""
    means = (sums / np.maximum(counts, 1)).astype(np.float32)
    filled_rows, filled_cols = np.flatnonzero(counts.any(axis=1)), np.flatnonzero(counts.any(axis=0))
    if len(filled_rows) and filled_rows[-1] + 1 < means.shape[0]:
        means[filled_rows[-1] + 1:] = means[filled_rows[-1]]
    if len(filled_cols) and filled_cols[-1] + 1 < means.shape[1]:
        means[:, filled_cols[-1] + 1:] = means[:, filled_cols[-1]:filled_cols[-1] + 1]
    return means


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
