"""Codec motion vectors -> a dense block motion field on a regular grid.

Conventions (the codec's, kept throughout codecpatch):
    A motion vector says where the content of a block of the *current* frame came from in a reference
    frame: ``src = dst + motion / motion_scale`` (pixels). So the field stores ``src - dst``, the
    displacement from the current frame *to* the reference. An object moving right by +3 px per frame has
    a past-direction vector of -3 px.

Pure numpy; no PyAV import. Vectorised: no Python loop over vectors or blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

#: The structured dtype FFmpeg's AVMotionVector has once exported through PyAV.
MOTION_VECTOR_DTYPE = np.dtype(
    {
        "names": ["source", "w", "h", "src_x", "src_y", "dst_x", "dst_y", "flags", "motion_x", "motion_y", "motion_scale"],
        "formats": ["<i4", "u1", "u1", "<i2", "<i2", "<i2", "<i2", "<u8", "<i4", "<i4", "<u2"],
    }
)

#: The smallest partition any supported codec uses (H.264 4x4); grid cells are multiples of it.
_RASTER_UNIT = 4


@dataclass(frozen=True)
class BlockMotion:
    """Per-block motion of one frame, split by prediction direction.

    Codec vectors point to a reference frame, which is not always the adjacent one: a P-frame after two
    B-frames references the anchor three frames back. ``past_distance``/``future_distance`` record how many
    frames away the references are (assuming the nearest I/P anchor, exact for one-reference encodes), so
    ``toward_previous`` can express motion per one frame.

    Shapes use ``gh = ceil(height / block_size)``, ``gw = ceil(width / block_size)``.

    Attributes:
        block_size: grid cell side in pixels.
        to_past: (gh, gw, 2) float32, (dx, dy) pixels from the current block to its source in the past
            reference (``source == -1``); zero where ``has_past`` is False.
        has_past: (gh, gw) bool, the cell had at least one past-referencing vector.
        to_future: (gh, gw, 2) float32, likewise for future references (B-frames, ``source == +1``).
        has_future: (gh, gw) bool.
        past_distance, future_distance: frames between this frame and its past / future reference (>= 1).
    """

    block_size: int
    to_past: np.ndarray
    has_past: np.ndarray
    to_future: np.ndarray
    has_future: np.ndarray
    past_distance: int = 1
    future_distance: int = 1

    @property
    def grid_shape(self) -> tuple[int, int]:
        return self.has_past.shape  # type: ignore[return-value]

    @cached_property
    def field_toward_previous(self) -> np.ndarray:
        """(gh, gw, 2) float32 displacement into the immediately previous frame, pixels per frame.

        Past vectors divided by ``past_distance`` where a cell has one; a cell predicted only from the future
        uses the negated future vector divided by ``future_distance`` (constant-velocity assumption); cells
        with neither (intra or uncoded) are zero. Computed once, then cached (treat it as read-only).
        """
        field = self.to_past if self.past_distance == 1 else self.to_past / np.float32(self.past_distance)
        field = np.where(self.has_past[..., None], field, np.float32(0))
        future_only = self.has_future & ~self.has_past
        if future_only.any():
            field = np.where(future_only[..., None], self.to_future / np.float32(-self.future_distance), field)
        return field.astype(np.float32, copy=False)

    def toward_previous(self) -> np.ndarray:
        """The cached ``field_toward_previous`` (see there)."""
        return self.field_toward_previous

    @staticmethod
    def zeros(height: int, width: int, block_size: int) -> "BlockMotion":
        gh, gw = grid_shape_for(height, width, block_size)
        zero_field = np.zeros((gh, gw, 2), np.float32)
        no_vectors = np.zeros((gh, gw), bool)
        return BlockMotion(block_size, zero_field, no_vectors, zero_field, no_vectors)


def grid_shape_for(height: int, width: int, block_size: int) -> tuple[int, int]:
    """(rows, cols) of the block grid covering a ``height`` x ``width`` frame (partial cells included)."""
    return -(-height // block_size), -(-width // block_size)


def block_motion_from_vectors(
    vectors: np.ndarray, height: int, width: int, block_size: int = 8, past_distance: int = 1, future_distance: int = 1
) -> BlockMotion:
    """Rasterise codec motion vectors onto a regular block grid.

    Args:
        vectors: (N,) structured array with at least the fields of ``MOTION_VECTOR_DTYPE`` (any order).
            Blocks may be 4x4 .. 16x16 (or larger); ``motion_scale`` handles quarter/half-pel precision.
        height, width: frame size in pixels.
        block_size: grid cell side in pixels, a multiple of 4 (4, 8, 16).
        past_distance, future_distance: frames to the past / future reference (see BlockMotion).

    Returns:
        BlockMotion whose cells hold the mean vector (pixels) of the codec blocks covering them, per
        direction. Cells no vector covers (intra or skipped without a vector) are zero with a False mask.
    """
    if block_size % _RASTER_UNIT or block_size <= 0:
        raise ValueError(f"block_size must be a positive multiple of {_RASTER_UNIT}, got {block_size}")
    grid_h, grid_w = grid_shape_for(height, width, block_size)
    if len(vectors) == 0:
        return BlockMotion.zeros(height, width, block_size)
    if past_distance < 1 or future_distance < 1:
        raise ValueError(f"reference distances must be >= 1 frame, got {past_distance}, {future_distance}")

    # A contiguous copy first: reductions over a strided field of the 40-byte records are several times slower.
    raw_scale = np.ascontiguousarray(vectors["motion_scale"])
    low_scale, high_scale = int(raw_scale.min()), int(raw_scale.max())
    dx = vectors["motion_x"].astype(np.float32)
    dy = vectors["motion_y"].astype(np.float32)
    if low_scale == high_scale:  # one scale per stream in practice (4 for H.264/HEVC, 2 for MPEG-2/4)
        scale = np.float32(max(low_scale, 1))
        dyadic = not low_scale & (low_scale - 1)
    else:
        scale = np.maximum(raw_scale.astype(np.float32), 1.0)
        dyadic = _powers_of_two(raw_scale)
    dx /= scale
    dy /= scale
    # int32 is wide enough for every index below (2 gh gw cells) and faster than int64.
    block_w = vectors["w"].astype(np.int32)
    block_h = vectors["h"].astype(np.int32)
    # dst_x/dst_y are block centres. Codec blocks are aligned to their own size, so a block either spans
    # whole grid cells or lies inside one; in the latter case cells average their blocks weighted by area.
    left_cell = _cell_of(vectors["dst_x"] - (block_w >> 1), block_size)
    top_cell = _cell_of(vectors["dst_y"] - (block_h >> 1), block_size)
    n_cells = grid_h * grid_w
    # Both directions in one pass: past cells are [0, n_cells), future cells [n_cells, 2 n_cells).
    first_cell = top_cell * grid_w + left_cell
    first_cell += (vectors["source"] > 0) * np.int32(n_cells)  # arithmetic, not a masked update: B-frames mask half
    # Cells a block spans per axis, ceil(size / block_size): from the extremes alone when every block lies
    # inside one cell (1 <= size <= block_size), the usual case on a 16 px grid, else per block.
    min_w, max_w, min_h, max_h = int(block_w.min()), int(block_w.max()), int(block_h.min()), int(block_h.max())
    within_cells = 1 <= min_w and max_w <= block_size and 1 <= min_h and max_h <= block_size
    if within_cells:
        cols_all = rows_all = np.ones(1, np.int32)  # every block spans exactly one cell
        hangs_over = bool(left_cell.min() < 0 or top_cell.min() < 0 or left_cell.max() >= grid_w or top_cell.max() >= grid_h)
    else:
        cols_all, rows_all = -(-block_w // block_size), -(-block_h // block_size)
        hangs_over = bool(left_cell.min() < 0 or top_cell.min() < 0 or (left_cell + cols_all).max() > grid_w
                          or (top_cell + rows_all).max() > grid_h)
    max_cols, max_rows = -(-max_w // block_size), -(-max_h // block_size)
    rasterised = None
    # Every block spans whole cells, at most 2 x 2 of them (16x16 macroblocks on an 8 px grid): paint per offset.
    if min_w >= block_size and min_h >= block_size and max_cols * max_rows <= 4:
        rasterised = _paint_whole_cells(dx, dy, first_cell, left_cell, top_cell, cols_all, rows_all, grid_h, grid_w, hangs_over)
    # Every block lies inside one cell (partitions of 16x16 macroblocks on a 16 px grid): one weighted sum per cell.
    if rasterised is None and dyadic and within_cells:
        rasterised = _average_within_cells(dx, dy, block_w, block_h, first_cell, left_cell, top_cell, grid_h, grid_w, block_size, hangs_over)
    if rasterised is None:
        rasterised = _rasterise(dx, dy, block_w, block_h, first_cell, left_cell, top_cell, grid_h, grid_w, block_size, hangs_over)
    field, covered = rasterised
    field = field.T
    field = field.reshape(2, grid_h, grid_w, 2)
    covered = covered.reshape(2, grid_h, grid_w)
    return BlockMotion(block_size, field[0], covered[0], field[1], covered[1], past_distance, future_distance)


def _powers_of_two(scales: np.ndarray) -> bool:
    """True when every motion_scale is a power of two (or 0): vectors are then dyadic fractions."""
    return not np.any(scales & (scales - 1))


def _cell_of(position: np.ndarray, block_size: int) -> np.ndarray:
    """``position // block_size`` (floor, negatives included) as int32: a shift when the block is a power of two."""
    block_size = int(block_size)  # a numpy integer has no bit_length
    if not block_size & (block_size - 1):
        return position >> (block_size.bit_length() - 1)
    return position // block_size


def _paint_whole_cells(
    dx: np.ndarray, dy: np.ndarray, first_cell: np.ndarray, left_cell: np.ndarray, top_cell: np.ndarray,
    cols: np.ndarray, rows: np.ndarray, grid_h: int, grid_w: int, hangs_over: bool,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The fast path of ``block_motion_from_vectors`` when every block spans whole cells (16x16 macroblocks
    and 8x8 partitions on an 8 px grid): each cell takes the vector of the block covering it.

    Paints one cell offset inside the blocks at a time (a 16x16 block on an 8 px grid has 2 x 2), a few
    array operations per offset instead of per partition size. Returns ((2, 2 gh gw) float32 x/y,
    (2 gh gw,) bool covered), bit for bit what ``_rasterise`` gives, or None when two blocks of one
    direction cover the same cell (damaged or unusual streams): then the order of the writes decides, and
    ``_rasterise``'s order is the reference.
    """
    n_cells = grid_h * grid_w
    field = np.zeros((2, 2 * n_cells), np.float32)
    covered = np.zeros(2 * n_cells, bool)
    max_rows, max_cols = int(rows.max()), int(cols.max())
    painted = 0
    for offset_y in range(max_rows):
        for offset_x in range(max_cols):
            cell = first_cell + (offset_y * grid_w + offset_x)
            values_x, values_y = dx, dy
            keep = None
            if max_rows > 1 or max_cols > 1:
                if offset_y >= int(rows.min()) or offset_x >= int(cols.min()):
                    keep = (rows > offset_y) & (cols > offset_x)
            if hangs_over:
                cell_x, cell_y = left_cell + offset_x, top_cell + offset_y
                inside = (cell_x >= 0) & (cell_x < grid_w) & (cell_y >= 0) & (cell_y < grid_h)
                keep = inside if keep is None else keep & inside
            if keep is not None:
                cell, values_x, values_y = cell[keep], dx[keep], dy[keep]
            field[0][cell] = values_x
            field[1][cell] = values_y
            covered[cell] = True
            painted += cell.size
    if np.count_nonzero(covered) != painted:
        return None
    return field, covered


def _average_within_cells(
    dx: np.ndarray, dy: np.ndarray, block_w: np.ndarray, block_h: np.ndarray, first_cell: np.ndarray, left_cell: np.ndarray,
    top_cell: np.ndarray, grid_h: int, grid_w: int, block_size: int, hangs_over: bool,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The fast path of ``block_motion_from_vectors`` when every block lies inside one cell: each cell takes
    the area-weighted mean of its blocks, three weighted counts over all vectors at once instead of a pass per
    partition size.

    Bit for bit what ``_rasterise`` gives for blocks with power-of-two sides (every codec's partitions): a vector
    is a dyadic fraction (``motion / motion_scale``, a power of two) times a power-of-two area, so every partial
    sum is exact in float32 and float64 alike and the order of the additions cannot change it (for |motion|
    below ~2^20, i.e. any real stream: decoders stay in int16; with other block sides ``_rasterise``'s float32
    partial sums can round, and the two may differ in the last bit); a whole-cell block that shares its cell with another (a damaged stream,
    where ``_rasterise``'s order of writes decides) returns None, as does a scale that is not a power of two.
    Returns ((2, 2 gh gw) float32 x/y, (2 gh gw,) bool covered).
    """
    n_cells = 2 * grid_h * grid_w
    cell = first_cell
    area = block_w * block_h
    if hangs_over:
        inside = (left_cell >= 0) & (left_cell < grid_w) & (top_cell >= 0) & (top_cell < grid_h)
        cell, dx, dy, area = cell[inside], dx[inside], dy[inside], area[inside]
    # np.bincount takes intp indices and float64 weights: converted once here rather than in each of its three
    # calls. The weighted sums are the same: dx * area is a dyadic fraction times an integer area, exact in float32
    # whenever |motion * w * h| < 2^24, i.e. for every block of a real stream (decoders export int16 vectors and
    # these blocks are at most 16x16: < 2^15 * 2^8), so computing it in float64 gives the same number.
    cell = cell.astype(np.intp)
    area = area.astype(np.float64)
    weight = np.bincount(cell, weights=area, minlength=n_cells).astype(np.float32)
    # A whole-cell block sharing its cell makes that cell weigh more than a whole cell: look for one only then.
    whole_cell = np.float32(block_size * block_size)
    if weight.max() > whole_cell:
        whole = area == whole_cell
        if whole.any() and (weight[cell[whole]] != whole_cell).any():
            return None  # a whole-cell block shares its cell (its cell weighs more than its own area)
    weighted = np.empty((2, n_cells), np.float32)
    weighted[0] = np.bincount(cell, weights=dx * area, minlength=n_cells)
    weighted[1] = np.bincount(cell, weights=dy * area, minlength=n_cells)
    covered = weight > 0
    field = np.zeros((2, n_cells), np.float32)
    np.divide(weighted, weight, out=field, where=covered)
    return field, covered


def _rasterise(
    dx: np.ndarray, dy: np.ndarray, block_w: np.ndarray, block_h: np.ndarray, first_cell: np.ndarray,
    left_cell: np.ndarray, top_cell: np.ndarray, grid_h: int, grid_w: int, block_size: int, hangs_over: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """The general path of ``block_motion_from_vectors``: blocks of any size, one pass per partition size
    (in increasing ``w * 256 + h``). Returns ((2, 2 gh gw) float32 x/y, (2 gh gw,) bool covered)."""
    n_cells = grid_h * grid_w
    weighted_x = np.zeros(2 * n_cells, np.float32)
    weighted_y = np.zeros(2 * n_cells, np.float32)
    weight = np.zeros(2 * n_cells, np.float32)
    size_code = block_w * 256 + block_h  # w, h <= 255 (uint8 fields)
    # np.unique sorts; a bincount finds the few partition sizes present far faster.
    for code in np.flatnonzero(np.bincount(size_code)):  # a handful of sizes, never one loop per vector
        chosen = np.flatnonzero(size_code == code)
        w, h = int(code) // 256, int(code) % 256
        cols, rows = -(-w // block_size), -(-h // block_size)
        offset_y, offset_x = np.divmod(np.arange(rows * cols), cols)
        per_vector = rows * cols
        cell = (first_cell[chosen, None] + (offset_y * grid_w + offset_x)).ravel()
        values_x = np.repeat(dx[chosen], per_vector) if per_vector > 1 else dx[chosen]
        values_y = np.repeat(dy[chosen], per_vector) if per_vector > 1 else dy[chosen]
        if hangs_over:  # some blocks hang over the frame edge (e.g. the last macroblock row of 360 lines)
            cell_x = (left_cell[chosen, None] + offset_x).ravel()
            cell_y = (top_cell[chosen, None] + offset_y).ravel()
            inside = (cell_x >= 0) & (cell_x < grid_w) & (cell_y >= 0) & (cell_y < grid_h)
            cell, values_x, values_y = cell[inside], values_x[inside], values_y[inside]
        if w >= block_size and h >= block_size:
            # Whole cells: blocks of one direction never share a cell (with each other or with smaller
            # partitions), so plain assignment with unit weight is exact.
            weighted_x[cell], weighted_y[cell], weight[cell] = values_x, values_y, 1.0
        else:
            area = float(w * h)
            weighted_x += np.bincount(cell, weights=values_x * area, minlength=2 * n_cells).astype(np.float32)
            weighted_y += np.bincount(cell, weights=values_y * area, minlength=2 * n_cells).astype(np.float32)
            weight += np.bincount(cell, minlength=2 * n_cells).astype(np.float32) * area

    covered = weight > 0
    field = np.zeros((2, 2 * n_cells), np.float32)  # zero where nothing covers the cell
    np.divide(weighted_x, weight, out=field[0], where=covered)
    np.divide(weighted_y, weight, out=field[1], where=covered)
    return field, covered


def motion_magnitude(field: np.ndarray) -> np.ndarray:
    """(gh, gw) float32 vector length in pixels of a (gh, gw, 2) field."""
    return np.hypot(field[..., 0], field[..., 1]).astype(np.float32, copy=False)
