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
    """Computes residual-energy maps, reusing scratch buffers between frames of the same geometry.

    Reusing buffers matters: allocating several fresh full-frame arrays per frame costs more in page
    faults than the arithmetic itself. And at analysis sizes (~320x180) each numpy or OpenCV call's fixed
    cost (~1-5 us) rivals its arithmetic, so everything that depends only on the frame and grid geometry
    (sample positions and coordinates, per-block sample counts, padded buffers) is made once per geometry
    (``_SampleLayout``, ``_PixelLayout``; a stream's geometry rarely changes) and each frame runs only the
    arithmetic. The maps returned are fresh arrays (callers keep them); ``warp``'s prediction is a scratch
    buffer. One instance per decoding thread (instances are not thread-safe).
    """

    def __init__(self) -> None:
        self._sampled: _SampleLayout | None = None  # the latest geometry of ``sampled_residual``
        self._pixels: _PixelLayout | None = None  # the latest geometry of ``warp`` / ``block_mean``

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
        difference = self._pixel_layout(current_luma.shape, grid_shape).difference
        return self.block_mean(cv2.absdiff(current_luma, predicted, dst=difference), grid_shape)

    def frame_difference(self, current_luma: np.ndarray, previous_luma: np.ndarray, grid_shape: tuple[int, int],
                         stride: int = 1, cell: int | None = None) -> np.ndarray:
        """(gh, gw) float32 mean |current - previous| per block, in luma levels (0..255); ``stride`` and
        ``cell`` as in ``motion_compensated``."""
        if stride > 1:
            return self.sampled_residual(current_luma, previous_luma, None, grid_shape, stride, cell)
        difference = self._pixel_layout(current_luma.shape, grid_shape).difference
        return self.block_mean(cv2.absdiff(current_luma, previous_luma, dst=difference), grid_shape)

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
        layout = self._sample_layout(h, w, gh, gw, stride, cell_h, cell_w)
        current = layout.take(current_luma)
        if field is None:
            predicted = layout.take(previous_luma)
        else:
            predicted = cv2.remap(previous_luma, layout.sample_at(field), None, interpolation=cv2.INTER_LINEAR,
                                  dst=layout.predicted, borderMode=cv2.BORDER_REPLICATE)
        return layout.block_means(cv2.absdiff(current, predicted, dst=layout.difference))

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
        layout = self._pixel_layout(previous_luma.shape, field.shape[:2])
        map_x, map_y = layout.sample_maps(field)
        return cv2.remap(previous_luma, map_x, map_y, interpolation=cv2.INTER_LINEAR, dst=layout.predicted,
                         borderMode=cv2.BORDER_REPLICATE)

    def block_mean(self, values: np.ndarray, grid_shape: tuple[int, int]) -> np.ndarray:
        """(gh, gw) float32 mean of a (h, w) map over the cells of a grid covering it.

        Cells are ``ceil(h/gh) x ceil(w/gw)`` pixels; partial cells at the bottom/right edge are completed by
        replicating the edge pixels.
        """
        layout = self._pixel_layout(values.shape, grid_shape)
        whole = layout.whole_cells
        np.copyto(layout.picture, values, casting="unsafe")
        h, w = values.shape
        if whole.shape[0] > h:  # complete partial edge cells: replicate the last row, then the last column
            whole[h:, :w] = whole[h - 1, :w]
        if whole.shape[1] > w:
            whole[:, w:] = whole[:, w - 1:w]
        # INTER_AREA with an integer ratio is an exact box mean, and much faster than a numpy reshape-mean.
        return cv2.resize(whole, layout.grid_size, interpolation=cv2.INTER_AREA)

    def _sample_layout(self, *key: int) -> "_SampleLayout":
        """The ``_SampleLayout`` of ``key`` = (h, w, gh, gw, stride, cell_h, cell_w), kept until the geometry changes."""
        layout = self._sampled
        if layout is None or layout.key != key:
            layout = self._sampled = _SampleLayout(*key)
        return layout

    def _pixel_layout(self, shape: tuple[int, ...], grid_shape: tuple[int, ...]) -> "_PixelLayout":
        key = (shape[0], shape[1], grid_shape[0], grid_shape[1])
        layout = self._pixels
        if layout is None or layout.key != key:
            layout = self._pixels = _PixelLayout(*key)
        return layout


class _PixelLayout:
    """The every-pixel residual's geometry (``warp``, ``block_mean``): an (h, w) map on a (gh, gw) grid of
    cells of cell_h x cell_w = ``ceil(h/gh) x ceil(w/gw)`` pixels, with its scratch buffers; made once per
    geometry.

    Attributes:
        key: (h, w, gh, gw).
        grid_size: (gw, gh), as OpenCV takes sizes.
        predicted, difference: (h, w) uint8 scratch.
        whole_cells: (gh * cell_h, gw * cell_w) float32 scratch, a map completed to whole cells;
            ``picture``: its (h, w) top-left view.
    """

    def __init__(self, h: int, w: int, gh: int, gw: int) -> None:
        self.key = (h, w, gh, gw)
        whole_h, whole_w = gh * -(-h // gh), gw * -(-w // gw)  # the pixels of whole cells
        self.grid_size = (gw, gh)
        self.predicted = np.empty((h, w), np.uint8)
        self.difference = np.empty((h, w), np.uint8)
        self.whole_cells = np.empty((whole_h, whole_w), np.float32)
        self.picture = self.whole_cells[:h, :w]
        # sample_maps: cells are expanded to pixels one axis at a time (nearest upsampling by the integer cell
        # side, as OpenCV takes sizes: (width, height)), then cropped to the picture.
        self._x, self._y = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)[:, None]
        self._dx = np.empty((gh, whole_w), np.float32)  # dx per cell row and pixel column
        self._x_plus_dx = np.empty((gh, w), np.float32)  # x + dx per cell row and pixel column
        self._map_x = np.empty((whole_h, w), np.float32)  # x + dx per pixel
        self._dy = np.empty((whole_h, gw), np.float32)  # dy per pixel row and cell column
        self._y_plus_dy = np.empty((h, gw), np.float32)  # y + dy per pixel row and cell column
        self._map_y = np.empty((h, whole_w), np.float32)  # y + dy per pixel
        self._maps = self._map_x[:h], self._map_y[:, :w]

    def sample_maps(self, field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """((h, w), (h, w)) float32 scratch: the x and y where each pixel is read in the previous frame, its
        own coordinate plus its cell's (dx, dy) in ``field`` ((gh, gw, 2)).

        The sums are the same float32 ``x + dx`` and ``y + dy`` as a per-pixel field added to a per-pixel
        grid, but each is made per cell row (x) or cell column (y) and then repeated down or across: about
        half the memory traffic (at 320x180, ~50 us less a frame in the decode loop). OpenCV's remap reads a
        pair of one-channel float maps exactly as one two-channel map.
        """
        dx, x_plus_dx, map_x = self._dx, self._x_plus_dx, self._map_x
        dy, y_plus_dy, map_y = self._dy, self._y_plus_dy, self._map_y
        nearest = cv2.INTER_NEAREST
        cv2.resize(np.ascontiguousarray(field[:, :, 0], np.float32), dx.shape[::-1], dst=dx, interpolation=nearest)
        np.add(self._x, dx[:, :x_plus_dx.shape[1]], out=x_plus_dx)
        cv2.resize(x_plus_dx, map_x.shape[::-1], dst=map_x, interpolation=nearest)
        cv2.resize(np.ascontiguousarray(field[:, :, 1], np.float32), dy.shape[::-1], dst=dy, interpolation=nearest)
        np.add(self._y, dy[:y_plus_dy.shape[0]], out=y_plus_dy)
        cv2.resize(y_plus_dy, map_y.shape[::-1], dst=map_y, interpolation=nearest)
        return self._maps


class _SampleLayout:
    """The sampled residual's geometry (``ResidualEstimator.sampled_residual``): the samples of an (h, w) luma
    at ``stride`` on a (gh, gw) grid of ``cell_h`` x ``cell_w`` blocks, with its scratch buffers; made once
    per geometry, so that each frame runs only the arithmetic.

    The samples are the (rows, cols) = (len(ys), len(xs)) pixels at rows ``ys`` and columns ``xs``
    (``sample_positions``). When the stride divides both cell sides (always at the decode settings: sides
    and strides are powers of two), sample i lies in block ``i // per`` with ``per = cell / stride``
    samples a side, so a block's sum is an area resize of the differences (zero-padded to whole blocks of
    (gh * per_h, gw * per_w) samples) times ``per_h * per_w``; otherwise the samples are summed by block
    index. Either way a block's mean is its sum over its count of samples, and blocks past the last row or
    column holding a sample repeat it.

    Attributes:
        key: (h, w, gh, gw, stride, cell_h, cell_w).
        ys, xs: (rows,) and (cols,) int sample rows and columns.
        predicted, difference: (rows, cols) uint8 scratch.
    """

    def __init__(self, h: int, w: int, gh: int, gw: int, stride: int, cell_h: int, cell_w: int) -> None:
        self.key = (h, w, gh, gw, stride, cell_h, cell_w)
        self.ys, self.xs = ys, xs = sample_positions(h, stride), sample_positions(w, stride)
        rows, cols = len(ys), len(xs)
        self._grid_shape, self._grid_size = (gh, gw), (gw, gh)
        # ``take``: a strided slice when no last sample was moved back onto the last pixel (no odd side at 2)
        self._first, self._stride = stride // 2, stride
        self._strided = (len(range(stride // 2, h, stride)), len(range(stride // 2, w, stride))) == (rows, cols)
        self._flat_index = (ys[:, None] * w + xs[None, :]).ravel()  # into a C-contiguous (h, w) luma
        self._index = np.ix_(ys, xs)
        grid_x, grid_y = np.meshgrid(xs.astype(np.float32), ys.astype(np.float32))
        self._sample_grid = np.stack([grid_x, grid_y], axis=-1)  # (rows, cols, 2) float32 (x, y) of each sample
        self.predicted = np.empty((rows, cols), np.uint8)
        self.difference = np.empty((rows, cols), np.uint8)
        self._regular = cell_h % stride == 0 and cell_w % stride == 0
        if self._regular:  # whole samples per block: sample i lies in block i // per
            per_h, per_w = cell_h // stride, cell_w // stride
            self._whole_blocks_size = (gw * per_w, gh * per_h)
            # the field at each sample of whole blocks, then (in place, on the samples) the sampling map
            self._per_sample = np.empty((gh * per_h, gw * per_w, 2), np.float32)
            self._sample_at = self._per_sample[:rows, :cols]
            self._tiles = (gh * per_h, gw * per_w) == (rows, cols)
            self._area = np.float32(per_h * per_w)
            # The samples' differences as float32, zero-padded to whole blocks; only the (rows, cols) corner
            # is ever written, so the padding stays zero.
            self._as_float = np.zeros((gh * per_h, gw * per_w), np.float32)
            self._as_float_cropped = self._as_float[:rows, :cols]
            self._sums = np.empty((gh, gw), np.float32)
            counts = np.outer(np.clip(rows - np.arange(gh) * per_h, 0, per_h), np.clip(cols - np.arange(gw) * per_w, 0, per_w))
        else:  # samples fall unevenly into blocks
            self._sample_at = np.empty((rows, cols, 2), np.float32)
            block_rows, block_cols = np.minimum(ys // cell_h, gh - 1), np.minimum(xs // cell_w, gw - 1)
            self._block_rows, self._block_cols = block_rows[:, None], block_cols[None, :]
            self._block = (block_rows[:, None] * gw + block_cols[None, :]).ravel()  # each sample's block, flat
            counts = np.bincount(self._block, minlength=gh * gw).reshape(gh, gw)
        self._divisor = np.maximum(counts, 1).astype(np.float64)  # (gh, gw) samples per block, at least 1
        filled_rows, filled_cols = np.flatnonzero(counts.any(axis=1)), np.flatnonzero(counts.any(axis=0))
        # the last block row / column holding a sample, when blocks past it repeat it (else None)
        self._last_row = int(filled_rows[-1]) if len(filled_rows) and filled_rows[-1] + 1 < gh else None
        self._last_col = int(filled_cols[-1]) if len(filled_cols) and filled_cols[-1] + 1 < gw else None

    def take(self, luma: np.ndarray) -> np.ndarray:
        """(rows, cols) uint8, a fresh contiguous array: ``luma`` ((h, w)) at the samples."""
        if self._strided:
            first, stride = self._first, self._stride
            return np.ascontiguousarray(luma[first::stride, first::stride])
        if luma.flags.c_contiguous:  # one flat take is ~4x faster than 2-D fancy indexing
            return luma.take(self._flat_index).reshape(len(self.ys), len(self.xs))
        return luma[self._index]

    def sample_at(self, field: np.ndarray) -> np.ndarray:
        """(rows, cols, 2) float32 scratch (rows may be strided): where each sample is read in the previous
        frame, its (x, y) plus its block's (dx, dy) in ``field`` ((gh, gw, 2))."""
        if self._regular:  # integer-factor nearest upsampling of the field (into the map's own buffer)
            cv2.resize(np.ascontiguousarray(field, np.float32), self._whole_blocks_size, dst=self._per_sample,
                       interpolation=cv2.INTER_NEAREST)
            per_sample = self._sample_at
        else:
            per_sample = np.asarray(field, np.float32)[self._block_rows, self._block_cols]
        return np.add(per_sample, self._sample_grid, out=self._sample_at)

    def block_means(self, difference: np.ndarray) -> np.ndarray:
        """(gh, gw) float32, a fresh array: the mean of the (rows, cols) ``difference`` over each block's
        samples; blocks past the last row or column holding a sample repeat that row or column."""
        if self._regular:
            np.copyto(self._as_float_cropped, difference, casting="unsafe")
            if self._tiles:  # every block whole: INTER_AREA with an integer ratio is an exact box mean
                return cv2.resize(self._as_float, self._grid_size, interpolation=cv2.INTER_AREA)
            sums = cv2.resize(self._as_float, self._grid_size, dst=self._sums, interpolation=cv2.INTER_AREA)
            np.multiply(sums, self._area, out=sums)
        else:
            sums = np.bincount(self._block, weights=difference.ravel(), minlength=self._divisor.size)
            sums = sums.reshape(self._grid_shape)
        # sums / counts in float64, rounded to float32
        means = np.divide(sums, self._divisor, out=np.empty(self._grid_shape, np.float32), casting="unsafe")
        if self._last_row is not None:
            means[self._last_row + 1:] = means[self._last_row]
        if self._last_col is not None:
            means[:, self._last_col + 1:] = means[:, self._last_col:self._last_col + 1]
        return means


def sample_positions(size: int, stride: int) -> np.ndarray:
    """(ceil(size / stride),) int: the pixels ``stride // 2 + stride i`` of an axis of ``size`` pixels, the last
    one moved back onto the last pixel when it falls past it (an odd side at stride 2). Blocks start on
    multiples of the stride, so sample i lies in block ``i // (cell / stride)`` and every block that holds a
    pixel holds a sample."""
    return np.minimum(np.arange(stride // 2, size + stride // 2, stride), size - 1)


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
