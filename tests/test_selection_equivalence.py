"""The selection step's shortcuts against the plain formulas they replace, to the bit, on random inputs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from codecpatch.patchify._adaptive import (PatchChange, drift_matrix, patch_change, refresh_gains,
                                           squared_drift_sums)
from codecpatch.patchify._geometry import exact_geometry, native_geometry, square_geometry
from codecpatch.patchify._types import ClipInfo, ClipSamples


def plain_patch_change(samples: ClipSamples, noise_floor: float) -> PatchChange:
    """patch_change as first written: one sample at a time, every map shrunk on the whole canvas."""
    geometry = samples.geometry
    rows, cols = geometry.grid
    coverage = np.maximum(geometry.patch_content_fraction(), 1e-6)

    def patch_mean(content_map):
        return cv2.resize(geometry.place(content_map.astype(np.float32)), (cols, rows), interpolation=cv2.INTER_AREA) / coverage

    def on_picture(block_map):
        return cv2.resize(block_map.astype(np.float32), (geometry.content_width, geometry.content_height),
                          interpolation=cv2.INTER_LINEAR)

    texture, mean, mean_square = (np.zeros((samples.n_samples, rows, cols), np.float32) for _ in range(3))
    for t, rgb in enumerate(samples.rgb):
        luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
        gradient_x, gradient_y = cv2.Sobel(luma, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(luma, cv2.CV_32F, 0, 1, ksize=3)
        gradient = np.sqrt(gradient_x * gradient_x + gradient_y * gradient_y) / np.float32(8.0)
        texture[t], mean[t], mean_square[t] = patch_mean(gradient), patch_mean(luma), patch_mean(luma * luma)
    spread = np.sqrt(np.maximum(mean_square - mean * mean, 0.0))
    starts = np.concatenate([[samples.info.frame_start - 1], samples.frame_indices[:-1]])
    gaps = np.maximum(samples.frame_indices - starts, 1).astype(np.float32)
    moved, unexplained = np.zeros(texture.shape, np.float32), np.zeros(texture.shape, np.float32)
    for t in range(1, samples.n_samples):
        field = samples.field_from_previous[t]
        displacement = np.hypot(field[..., 0], field[..., 1]) * float(np.mean(geometry.scale))
        excess = np.maximum(samples.residual_accumulated[t] / gaps[t] - noise_floor, 0.0) * gaps[t]
        moved[t] = patch_mean(on_picture(np.minimum(displacement, geometry.patch))) * np.maximum(texture[t - 1], texture[t])
        unexplained[t] = patch_mean(on_picture(excess))
    return PatchChange(moved, unexplained, mean, spread)


def random_samples(geometry, n_samples: int, grid: tuple[int, int], seed: int) -> ClipSamples:
    rng = np.random.default_rng(seed)
    frames = np.sort(rng.choice(np.arange(1, 4 * n_samples), n_samples, replace=False))
    block = lambda: (rng.exponential(3.0, (n_samples, *grid)) * (rng.random((n_samples, *grid)) < 0.7)).astype(np.float32)  # noqa: E731
    return ClipSamples(
        info=ClipInfo("random", 0, 0, int(frames[-1]) + 1, 0.0, 1.0, None, geometry.source_width, geometry.source_height, "h264"),
        geometry=geometry, frame_indices=frames.astype(np.int64), times=frames / 25.0, picture_types=("P",) * n_samples,
        rgb=rng.integers(0, 256, (n_samples, geometry.content_height, geometry.content_width, 3), dtype=np.uint8),
        motion_instant=block(), residual_instant=block(), motion_accumulated=block(), residual_accumulated=block(),
        field_from_previous=rng.normal(0.0, 6.0, (n_samples, *grid, 2)).astype(np.float32), motion_sources=("codec",) * n_samples,
        block_size=16, n_frames=int(frames[-1]) + 1,
    )


GEOMETRIES = {
    "letterbox 16:9": square_geometry(1280, 720, 224, 16),
    "pillarbox 9:16": square_geometry(360, 640, 224, 16),
    "letterbox odd patch": square_geometry(853, 480, 224, 14),
    "native padded": native_geometry(643, 367, 200, 16),
    "exact": exact_geometry(320, 180, 100, 60, 8),
}


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_patch_change_equals_the_plain_per_sample_formula(name):
    """Block maps for every sample at once and patch means over only the patches that hold picture (the
    padding rows and columns cropped off the canvas) give the bits of the whole-canvas, sample-by-sample form."""
    geometry = GEOMETRIES[name]
    samples = random_samples(geometry, 9, (-(-geometry.source_height // 16), -(-geometry.source_width // 16)), seed=len(name))
    fast, plain = patch_change(samples, 2.0), plain_patch_change(samples, 2.0)
    for field in ("moved", "unexplained", "mean", "spread"):
        assert getattr(fast, field).tobytes() == getattr(plain, field).tobytes(), field


def test_picture_patches_cover_exactly_the_patches_that_hold_picture():
    for geometry in GEOMETRIES.values():
        rows, cols = geometry.picture_patch_slices
        held = np.zeros(geometry.grid, bool)
        held[rows, cols] = True
        np.testing.assert_array_equal(held, geometry.patch_content_fraction() > 0)


def random_change(n_samples: int, n_patches: int, seed: int) -> PatchChange:
    rng = np.random.default_rng(seed)
    draw = lambda scale: (rng.exponential(scale, (n_samples, n_patches)) * (rng.random((n_samples, n_patches)) < 0.6)).astype(np.float32)  # noqa: E731
    return PatchChange(draw(4.0), draw(2.0), (rng.random((n_samples, n_patches)) * 255).astype(np.float32), draw(15.0))


def test_drift_in_place_and_its_squared_sums_by_parts_equal_the_plain_formula():
    for seed, (n_samples, n_patches) in enumerate([(64, 75), (7, 1), (33, 200)]):
        change = random_change(n_samples, n_patches, seed)
        cumulative = np.cumsum(change.moved + change.unexplained, axis=0).T
        spread, mean = change.spread.T, change.mean.T
        ceiling = 2.0 * np.maximum(spread[:, :, None], spread[:, None, :])
        drift = np.abs(mean[:, None, :] - mean[:, :, None]) + np.minimum(cumulative[:, None, :] - cumulative[:, :, None], ceiling)
        later = np.triu(np.ones(drift.shape[1:], bool), k=1)
        plain = np.where(later[None], np.maximum(drift, 0.0), 0.0).astype(np.float32)
        assert drift_matrix(change).tobytes() == plain.tobytes()
        plain_sums = np.cumsum(plain.astype(np.float64) ** 2, axis=2)
        for part in (1, 5, 8, 1000):
            assert squared_drift_sums(change, part).tobytes() == plain_sums.tobytes(), part


def test_refresh_gains_of_some_patches_equal_those_of_their_copied_rows():
    rng = np.random.default_rng(3)
    error_sums = np.cumsum(rng.random((40, 12, 12)), axis=2)
    patches = rng.choice(40, 9, replace=False)
    kept = rng.random((9, 12)) < 0.3
    kept[:, 0] = True
    assert refresh_gains(error_sums, kept, patches).tobytes() == refresh_gains(error_sums[patches], kept).tobytes()


def test_flat_memory_reads_any_layout():
    from codecpatch.patchify._adaptive import flat_memory

    base = np.arange(4 * 5 * 6, dtype=np.float64).reshape(4, 5, 6)
    for array in (base, base.transpose(2, 1, 0), base.transpose(1, 0, 2), base[:, 1:4, ::2], base[::-1], base[None, 2]):
        flat, steps = flat_memory(array)
        index = np.indices(array.shape).reshape(array.ndim, -1)
        assert np.array_equal(flat.take((index * np.array(steps)[:, None]).sum(axis=0)), array.ravel())
    assert np.shares_memory(flat_memory(base.transpose(2, 1, 0))[0], base)
