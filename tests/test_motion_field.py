"""Pure motion-field and residual algorithms on hand-made inputs (no decoding)."""

import numpy as np
import pytest

from codecpatch.motion import (
    MOTION_VECTOR_DTYPE,
    BlockMotion,
    ResidualEstimator,
    block_mean,
    block_motion_from_vectors,
    frame_difference,
    motion_compensated_residual,
    warp_by_block_field,
)


def vectors(*rows):
    """rows of (source, w, h, dst_x_centre, dst_y_centre, motion_x, motion_y, motion_scale)."""
    out = np.zeros(len(rows), MOTION_VECTOR_DTYPE)
    for i, (source, w, h, cx, cy, mx, my, scale) in enumerate(rows):
        out[i] = (source, w, h, cx + mx // scale, cy + my // scale, cx, cy, 0, mx, my, scale)
    return out


def test_quarter_pel_16x16_block_fills_four_8x8_cells():
    motion = block_motion_from_vectors(vectors((-1, 16, 16, 8, 8, -6, 10, 4)), height=32, width=32, block_size=8)
    assert motion.grid_shape == (4, 4)
    np.testing.assert_allclose(motion.to_past[:2, :2], np.broadcast_to([-1.5, 2.5], (2, 2, 2)))
    assert motion.has_past[:2, :2].all() and motion.has_past.sum() == 4
    assert not motion.has_future.any()
    assert (motion.to_past[2:, :] == 0).all()


def test_half_pel_scale_and_4x4_grid():
    motion = block_motion_from_vectors(vectors((-1, 8, 8, 4, 4, 3, -2, 2)), height=16, width=16, block_size=4)
    np.testing.assert_allclose(motion.to_past[:2, :2], np.broadcast_to([1.5, -1.0], (2, 2, 2)))
    assert motion.has_past.sum() == 4


def test_small_blocks_average_into_a_cell_by_area():
    # Two 8x4 halves of one 8x8 cell with different vectors, plus a 4x4 in the next cell.
    motion = block_motion_from_vectors(
        vectors((-1, 8, 4, 4, 2, 8, 0, 4), (-1, 8, 4, 4, 6, 0, 8, 4), (-1, 4, 4, 10, 2, 4, 4, 4)),
        height=8, width=16, block_size=8,
    )
    np.testing.assert_allclose(motion.to_past[0, 0], [1.0, 1.0])
    np.testing.assert_allclose(motion.to_past[0, 1], [1.0, 1.0])


def test_b_frame_directions_are_kept_apart_and_combined():
    motion = block_motion_from_vectors(
        vectors((-1, 8, 8, 4, 4, -8, 0, 4), (1, 8, 8, 4, 4, 8, 0, 4), (1, 8, 8, 12, 4, 12, 4, 4)),
        height=8, width=16, block_size=8,
    )
    np.testing.assert_allclose(motion.to_past[0, 0], [-2, 0])
    np.testing.assert_allclose(motion.to_future[0, 0], [2, 0])
    assert motion.has_past.tolist() == [[True, False]] and motion.has_future.tolist() == [[True, True]]
    toward_previous = motion.toward_previous()
    np.testing.assert_allclose(toward_previous[0, 0], [-2, 0])  # past vector wins
    np.testing.assert_allclose(toward_previous[0, 1], [-3, -1])  # future only: negated


def test_no_vectors_gives_zero_field_and_blocks_over_the_edge_are_clipped():
    empty = block_motion_from_vectors(np.zeros(0, MOTION_VECTOR_DTYPE), 20, 20, 8)
    assert empty.grid_shape == (3, 3) and not empty.has_past.any() and (empty.toward_previous() == 0).all()
    # A 16x16 macroblock whose lower half hangs below a 20-line frame (grid of 3 rows).
    motion = block_motion_from_vectors(vectors((-1, 16, 16, 8, 24, 4, 4, 4)), 20, 20, 8)
    assert motion.has_past[2, :2].all() and motion.has_past.sum() == 2


def test_block_size_must_be_a_multiple_of_four():
    with pytest.raises(ValueError, match="block_size"):
        block_motion_from_vectors(np.zeros(0, MOTION_VECTOR_DTYPE), 16, 16, 6)


def test_a_numpy_integer_block_size_rasterises_like_an_int():
    macroblocks = vectors((-1, 16, 16, 8, 8, 4, 4, 4), (1, 8, 8, 20, 4, -8, 2, 2), (-1, 8, 8, 28, 12, 12, 0, 4))
    for size in (8, 12, 16):
        plain = block_motion_from_vectors(macroblocks, 32, 32, size)
        numpy_int = block_motion_from_vectors(macroblocks, 32, 32, np.int64(size))
        for name in ("to_past", "has_past", "to_future", "has_future"):
            assert np.array_equal(getattr(plain, name), getattr(numpy_int, name)), (size, name)


def test_vectorised_rasteriser_matches_a_naive_loop():
    rng = np.random.default_rng(0)
    rows = []
    for by in range(0, 64, 16):
        for bx in range(0, 96, 16):
            if rng.random() < 0.5:  # one 16x16
                rows.append((int(rng.choice([-1, 1])), 16, 16, bx + 8, by + 8, *rng.integers(-40, 40, 2), 4))
            else:  # four 8x8, some split into 4x4
                for oy in (0, 8):
                    for ox in (0, 8):
                        rows.append((-1, 8, 8, bx + ox + 4, by + oy + 4, *rng.integers(-40, 40, 2), 4))
    vecs = vectors(*[tuple(int(v) for v in r) for r in rows])
    motion = block_motion_from_vectors(vecs, 64, 96, 16)
    expected = np.zeros((4, 6, 2))
    counts = np.zeros((4, 6))
    for v in vecs[vecs["source"] < 0]:
        cy, cx = (v["dst_y"] - v["h"] // 2) // 16, (v["dst_x"] - v["w"] // 2) // 16
        area = int(v["w"]) * int(v["h"])
        expected[cy, cx] += np.array([v["motion_x"], v["motion_y"]]) / 4 * area
        counts[cy, cx] += area
    expected = np.divide(expected, counts[..., None], out=np.zeros_like(expected), where=counts[..., None] > 0)
    np.testing.assert_allclose(motion.to_past, expected, atol=1e-5)
    np.testing.assert_array_equal(motion.has_past, counts > 0)


def _macroblock_partitions(rng, kinds: int) -> list[tuple]:
    """(source, w, h, dst_x, dst_y) of the 3 x 4 macroblocks of a 48x64 frame, each of a random direction and
    partition: 16x16, two 16x8, two 8x16, four 8x8 and (``kinds=5``) 8x8 sub-partitions (8x4, 4x8, 4x4)."""
    rows = []
    for by in range(0, 48, 16):
        for bx in range(0, 64, 16):
            source = int(rng.choice([-1, 1]))
            kind = rng.integers(kinds)
            if kind == 0:
                rows.append((source, 16, 16, bx + 8, by + 8))
            elif kind == 1:
                rows += [(source, 16, 8, bx + 8, by + 4), (source, 16, 8, bx + 8, by + 12)]
            elif kind == 2:
                rows += [(source, 8, 16, bx + 4, by + 8), (source, 8, 16, bx + 12, by + 8)]
            elif kind == 3:
                rows += [(source, 8, 8, bx + ox + 4, by + oy + 4) for oy in (0, 8) for ox in (0, 8)]
            else:
                rows += [(source, 8, 4, bx + 4, by + 2), (source, 8, 4, bx + 4, by + 6), (source, 4, 8, bx + 10, by + 4),
                         (source, 4, 8, bx + 14, by + 4)] + [(source, 4, 4, bx + ox + 2, by + 8 + oy + 2) for oy in (0, 4)
                                                              for ox in (0, 4, 8, 12)]
    return rows


def _general_path(vecs, height, width, block_size):
    """block_motion_from_vectors forced through the per-partition-size rasteriser."""
    import codecpatch.motion._field as field_module

    original = field_module._paint_whole_cells
    field_module._paint_whole_cells = lambda *args: None
    try:
        return block_motion_from_vectors(vecs, height, width, block_size)
    finally:
        field_module._paint_whole_cells = original


@pytest.mark.parametrize("overlap", [False, True])
def test_whole_cell_fast_path_is_bit_identical_to_the_general_rasteriser(overlap):
    # Macroblocks and 8x8 / 16x8 / 8x16 partitions of both directions, a last row hanging over a 40 px frame
    # edge, and (overlap) two blocks of one direction on the same cells, as a damaged stream can give: there the
    # general path's write order decides and the fast path must step aside.
    rng = np.random.default_rng(1)
    rows = _macroblock_partitions(rng, kinds=4)
    if overlap:
        rows += [(-1, 16, 16, 24, 8), (-1, 8, 8, 20, 4)]
    vecs = vectors(*[(*r, *(int(v) for v in rng.integers(-40, 40, 2)), 4) for r in rows])
    fast, general = block_motion_from_vectors(vecs, 40, 64, 8), _general_path(vecs, 40, 64, 8)
    for name in ("to_past", "has_past", "to_future", "has_future"):
        assert getattr(fast, name).tobytes() == getattr(general, name).tobytes(), name
    assert fast.has_past.any() and fast.has_future.any()


def textured(h, w, seed=0):
    rng = np.random.default_rng(seed)
    import cv2

    return cv2.GaussianBlur(rng.integers(0, 256, (h, w), dtype=np.uint8), (0, 0), 1.5)


def test_motion_compensation_explains_a_known_shift():
    previous = textured(64, 96)
    current = np.roll(previous, shift=(2, 3), axis=(0, 1))  # content moved down 2, right 3
    field = np.broadcast_to(np.float32([-3, -2]), (8, 12, 2)).copy()  # current -> previous
    predicted = warp_by_block_field(previous, field)
    interior = (slice(8, -8), slice(8, -8))
    np.testing.assert_array_equal(predicted[interior], current[interior])
    mc = motion_compensated_residual(current, previous, field, (8, 12))
    diff = frame_difference(current, previous, (8, 12))
    assert mc[1:-1, 1:-1].max() == 0
    assert diff[1:-1, 1:-1].mean() > 10


def test_block_mean_handles_partial_edge_cells_and_buffer_reuse():
    values = np.arange(30, dtype=np.float32).reshape(5, 6)
    means = block_mean(values, (3, 2))  # cells of 2x3, last row partial (replicated)
    assert means.shape == (3, 2)
    np.testing.assert_allclose(means[0, 0], values[:2, :3].mean())
    np.testing.assert_allclose(means[2, 1], values[4, 3:].mean())
    estimator = ResidualEstimator()
    first = estimator.block_mean(values, (3, 2)).copy()
    estimator.block_mean(values * 2, (3, 2))
    np.testing.assert_allclose(estimator.block_mean(values, (3, 2)), first)


def test_zero_block_motion_helper():
    motion = BlockMotion.zeros(17, 33, 8)
    assert motion.grid_shape == (3, 5)


def _sampled_reference(current, previous, field, grid, stride, cell):
    """Brute force: the pixels stride // 2 + stride i (the last one clamped to the last pixel), predicted by
    bilinear sampling of ``previous``
    at (x + dx, y + dy) of its block (edges clamped), |difference| averaged per block."""
    h, w = previous.shape
    gh, gw = grid
    sums, counts = np.zeros(grid), np.zeros(grid)
    offset = stride // 2
    for y in sorted({min(v, h - 1) for v in range(offset, h + offset, stride)}):
        for x in sorted({min(v, w - 1) for v in range(offset, w + offset, stride)}):
            by, bx = min(y // cell, gh - 1), min(x // cell, gw - 1)
            dx, dy = field[by, bx] if field is not None else (0.0, 0.0)
            sx, sy = min(max(x + dx, 0), w - 1), min(max(y + dy, 0), h - 1)
            x0, y0 = int(np.floor(sx)), int(np.floor(sy))
            x1, y1, fx, fy = min(x0 + 1, w - 1), min(y0 + 1, h - 1), sx - x0, sy - y0
            p = previous.astype(np.float64)
            value = (p[y0, x0] * (1 - fx) + p[y0, x1] * fx) * (1 - fy) + (p[y1, x0] * (1 - fx) + p[y1, x1] * fx) * fy
            sums[by, bx] += abs(float(current[y, x]) - value)
            counts[by, bx] += 1
    return sums / np.maximum(counts, 1)


@pytest.mark.parametrize("shape, cell, stride", [((32, 48), 8, 2), ((30, 44), 8, 2), ((36, 36), 16, 4), ((18, 21), 3, 2)])
def test_sampled_residual_is_the_block_mean_over_every_strided_pixel(shape, cell, stride):
    """stride > 1: each block averages |current - prediction| over exactly its strided pixels (also partial
    edge blocks, and cells the stride does not divide), the prediction bilinear at full resolution."""
    h, w = shape
    previous, current = textured(h, w, seed=1), textured(h, w, seed=2)
    grid = (-(-h // cell), -(-w // cell))
    field = np.random.default_rng(3).uniform(-2.5, 2.5, (*grid, 2)).astype(np.float32)
    estimator = ResidualEstimator()
    got = estimator.motion_compensated(current, previous, field, grid, stride=stride, cell=cell)
    # OpenCV's remap interpolates on a 1/32 px lattice with fixed-point weights: within half a level of the exact value
    np.testing.assert_allclose(got, _sampled_reference(current, previous, field, grid, stride, cell), atol=0.6)
    difference = estimator.frame_difference(current, previous, grid, stride=stride, cell=cell)
    np.testing.assert_allclose(difference, _sampled_reference(current, previous, None, grid, stride, cell), atol=1e-4)


def test_sampled_residual_explains_a_known_shift_and_matches_every_pixel_on_flat_blocks():
    previous = textured(64, 96)
    current = np.roll(previous, shift=(2, 3), axis=(0, 1))
    field = np.broadcast_to(np.float32([-3, -2]), (8, 12, 2)).copy()
    estimator = ResidualEstimator()
    assert estimator.motion_compensated(current, previous, field, (8, 12), stride=2, cell=8)[1:-1, 1:-1].max() == 0
    assert estimator.frame_difference(current, previous, (8, 12), stride=2, cell=8)[1:-1, 1:-1].mean() > 10
    # a frame whose difference is constant per block: the samples' mean is the every-pixel mean
    steps = np.kron(np.arange(96, dtype=np.uint8).reshape(8, 12), np.ones((8, 8), np.uint8))
    np.testing.assert_array_equal(estimator.frame_difference(steps, np.zeros_like(steps), (8, 12), stride=2, cell=8),
                                  frame_difference(steps, np.zeros_like(steps), (8, 12)))


def test_sampled_residual_samples_every_block_that_holds_a_pixel():
    """The first pixel of every block is a sample: a last block row of one pixel (1080 rows at 1/8: 135 rows on
    68 blocks of 2) still sees a change there, and so does a frame one pixel high (1920x8 at 1/8); a block
    past the picture repeats its neighbour; a stride above the cell side is capped at one sample per block."""
    previous = textured(135, 240, seed=4)
    current = previous.copy()
    current[134] = 255 - current[134]  # a change in the last analysis row only
    estimator = ResidualEstimator()
    moved = estimator.frame_difference(current, previous, (68, 120), stride=2, cell=2)
    assert moved[67].min() > 0 and moved[:67].max() == 0
    np.testing.assert_allclose(moved, _sampled_reference(current, previous, None, (68, 120), 2, 2), atol=1e-4)
    thin_previous, thin_current = textured(1, 240, seed=6), textured(1, 240, seed=7)
    field = np.zeros((1, 120, 2), np.float32)
    thin = estimator.motion_compensated(thin_current, thin_previous, field, (1, 120), stride=2, cell=2)
    np.testing.assert_allclose(thin, _sampled_reference(thin_current, thin_previous, field, (1, 120), 2, 2), atol=0.6)
    past = estimator.frame_difference(textured(16, 32, seed=1), textured(16, 32, seed=2), (3, 2), stride=2, cell=16)
    np.testing.assert_array_equal(past[1], past[0])  # rows 16-31 and 32-47 hold no pixel of a 16-row picture
    np.testing.assert_array_equal(past[2], past[0])
    capped = estimator.frame_difference(textured(17, 32, seed=4), textured(17, 32, seed=5), (9, 16), stride=4, cell=2)
    np.testing.assert_array_equal(capped, estimator.frame_difference(textured(17, 32, seed=4), textured(17, 32, seed=5), (9, 16),
                                                                     stride=2, cell=2))


def _forced_general(vecs, height, width, block_size):
    """block_motion_from_vectors with both fast paths disabled."""
    import codecpatch.motion._field as field_module

    paint, within = field_module._paint_whole_cells, field_module._average_within_cells
    field_module._paint_whole_cells = field_module._average_within_cells = lambda *args: None
    try:
        return block_motion_from_vectors(vecs, height, width, block_size)
    finally:
        field_module._paint_whole_cells, field_module._average_within_cells = paint, within


@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("height", [48, 40])
def test_within_cell_fast_path_is_bit_identical_to_the_general_rasteriser(overlap, height):
    """On a 16 px grid every H.264 partition (16x16 down to 4x4) lies inside one cell: the one-pass weighted
    mean gives the general path's field bit for bit, also with a last row hanging over a 40 px frame edge, and
    steps aside where a macroblock shares its cell with another block (a damaged stream)."""
    import codecpatch.motion._field as field_module

    rng = np.random.default_rng(2)
    rows = _macroblock_partitions(rng, kinds=5)
    if overlap:
        rows += [(-1, 16, 16, 24, 8), (-1, 8, 8, 20, 4)]
    vecs = vectors(*[(*r, *(int(v) for v in rng.integers(-40, 40, 2)), 4) for r in rows])
    calls = []
    original = field_module._average_within_cells
    field_module._average_within_cells = lambda *args: calls.append(original(*args)) or calls[-1]
    try:
        fast = block_motion_from_vectors(vecs, height, 64, 16)
    finally:
        field_module._average_within_cells = original
    general = _forced_general(vecs, height, 64, 16)
    assert len(calls) == 1 and (calls[0] is None) == overlap  # the fast path ran, and stepped aside on the overlap
    for name in ("to_past", "has_past", "to_future", "has_future"):
        assert getattr(fast, name).tobytes() == getattr(general, name).tobytes(), name
    assert fast.has_past.any() and fast.has_future.any()
