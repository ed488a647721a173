"""The optical-flow fallback (codecpatch/motion/_flow.py): known displacements of a translating pattern at every
preset and flow size, the halving rule, the pooling onto the block grid, and its DecodeOptions."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from codecpatch.decode import DecodeOptions, VideoReader
from codecpatch.motion import OpticalFlowEstimator, block_mean, grid_shape_for
from codecpatch.motion._flow import dis_coarsest_scale, flow_halvings, halve, pool_to_grid

from .conftest import SAMPLES


def textured(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(height, width) uint8 smooth random texture: noise blurred over ~8 pixels (blobs a few flow pixels
    wide even at one flow pixel per 8x8 block), mean 128, standard deviation 50."""
    noise = np.random.default_rng(seed).uniform(0, 255, (height, width)).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), 8.0)
    return np.clip(128 + 50 * (blurred - blurred.mean()) / blurred.std(), 0, 255).astype(np.uint8)


def shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``image`` whose content moved by (dx, dy) pixels: out(x, y) = image(x - dx, y - dy)."""
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, matrix, image.shape[::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize("preset", ["ultrafast", "fast", "medium"])
@pytest.mark.parametrize("max_side", [None, 160])
def test_translating_pattern_gives_minus_its_velocity_in_full_resolution_pixels(preset, max_side):
    # A 768x432 frame analysed at factor 4 (192x108), as the reader does; the content moves by (+6, -4)
    # full-resolution pixels, so each block's displacement into the previous frame is (-6, +4).
    height, width, factor, velocity = 432, 768, 4, (6.0, -4.0)
    previous_full = textured(height, width)
    current_full = shifted(previous_full, *velocity)
    previous, current = halve(previous_full, 2), halve(current_full, 2)
    grid = grid_shape_for(height, width, 8)
    field = OpticalFlowEstimator(preset, max_side).block_field(current, previous, grid, float(factor))
    assert field.shape == (*grid, 2) and field.dtype == np.float32
    inner = field[8:-8, 8:-8].reshape(-1, 2)  # away from the borders, where the shifted content is made up
    np.testing.assert_allclose(np.median(inner, axis=0), [-velocity[0], -velocity[1]], atol=0.6)


@pytest.mark.parametrize("preset", ["ultrafast", "fast", "medium"])
def test_a_smaller_flow_luma_estimates_at_the_same_resolution(preset):
    # Halving the luma lowers DIS's finest scale by one level: it still estimates at the resolution it uses on
    # the full analysis luma, so both block fields agree to a fraction of a full-resolution pixel.
    previous_full = textured(432, 768, seed=5)
    current_full = shifted(previous_full, -3.0, 2.5)
    previous, current = halve(previous_full, 2), halve(current_full, 2)
    full = OpticalFlowEstimator(preset).block_field(current, previous, (54, 96), 4.0)
    small = OpticalFlowEstimator(preset, 160).block_field(current, previous, (54, 96), 4.0)
    inner = (slice(8, -8), slice(8, -8))
    assert np.median(np.hypot(*(small[inner] - full[inner]).reshape(-1, 2).T)) < 0.35


def test_a_still_pattern_has_no_motion():
    image = halve(textured(432, 768, seed=3), 2)
    field = OpticalFlowEstimator("ultrafast", 160).block_field(image, image, (54, 96), 4.0)
    assert np.abs(field).max() < 0.05


@pytest.mark.parametrize(
    "shape, grid, max_side, expected",
    [
        ((108, 192), (54, 96), None, 0),  # no limit: the analysis luma itself
        ((108, 192), (54, 96), 160, 1),  # 768x432 at factor 4: one flow pixel per 8x8 block
        ((108, 192), (54, 96), 16, 1),  # never coarser than the grid, whatever the limit
        ((180, 320), (90, 160), 160, 1),  # 1280x720 at factor 4
        ((120, 213), (60, 107), 160, 1),  # 854x480: the halved width falls one pixel short of the grid
        ((180, 320), (45, 80), 80, 2),  # 16-pixel blocks: two halvings reach the grid
        ((180, 320), (90, 160), 320, 0),  # already small enough
        ((30, 40), (8, 10), 16, 0),  # never below 16 pixels on the shorter side
    ],
)
def test_flow_halvings(shape, grid, max_side, expected):
    assert flow_halvings(shape, grid, max_side) == expected


@pytest.mark.parametrize("shape, grid", [((108, 192), (54, 96)), ((54, 96), (54, 96)), ((60, 106), (60, 107)), ((45, 83), (12, 21))])
def test_pooling_matches_block_mean_channel_by_channel(shape, grid):
    flow = np.random.default_rng(1).normal(0, 3, (*shape, 2)).astype(np.float32)
    pooled = pool_to_grid(flow, grid)
    assert pooled.shape == (*grid, 2)
    for channel in (0, 1):
        assert np.array_equal(pooled[..., channel], block_mean(flow[..., channel], grid))


def test_options_are_checked():
    with pytest.raises(ValueError, match="flow_preset"):
        DecodeOptions(flow_preset="slow")
    with pytest.raises(ValueError, match="flow_max_side"):
        DecodeOptions(flow_max_side=8)
    with pytest.raises(ValueError, match="max_side"):
        OpticalFlowEstimator("fast", 4)
    for every in (0, 1.5, True):
        with pytest.raises(ValueError, match="flow_every"):
            DecodeOptions(flow_every=every)


def test_flow_every_estimates_every_nth_frame_and_holds_it_between(monkeypatch):
    """flow_every=3: DIS runs on frames 1 (the first with a predecessor), 3, 6, ...; the frames between carry the
    last estimate unchanged (the same field, read-only), and the motion-compensated residual uses it."""
    calls: list[int] = []
    original = OpticalFlowEstimator.block_field

    def counted(self, current, previous, grid, scale):
        calls.append(len(calls))
        return original(self, current, previous, grid, scale)

    monkeypatch.setattr(OpticalFlowEstimator, "block_field", counted)
    with VideoReader(SAMPLES / "sprites_hevc.mp4", keep_vectors=False) as reader:
        every_frame = list(reader)
    assert len(calls) == len(every_frame) - 1
    calls.clear()
    with VideoReader(SAMPLES / "sprites_hevc.mp4", keep_vectors=False, flow_every=3) as reader:
        held = list(reader)
    estimated = [f.index for f in held[1:] if f.index % 3 == 0 or f.index == 1]
    assert len(calls) == len(estimated) and len(held) == len(every_frame)
    for frame in held[1:]:
        source = max(i for i in estimated if i <= frame.index)  # the estimate this frame carries
        assert frame.motion_source == "flow"
        np.testing.assert_array_equal(frame.block_motion.to_past, every_frame[source].block_motion.to_past)
        assert not frame.block_motion.to_past.flags.writeable
        if frame.index == source:
            np.testing.assert_array_equal(frame.residual_energy, every_frame[frame.index].residual_energy)
    assert any(not np.array_equal(h.motion_field, e.motion_field) for h, e in zip(held, every_frame))


def test_reader_passes_the_flow_options(manifest):
    # The HEVC sprites (no codec vectors; 320x240, analysed at full size) with the flow on a 160x120 luma still
    # recover the sprites' velocities: DIS estimates at the same resolution (see the test above).
    sprites = manifest["clips"]["sprites_hevc.mp4"]["scene"]["sprites"]
    with VideoReader(SAMPLES / "sprites_hevc.mp4", flow_preset="ultrafast", flow_max_side=160) as reader:
        assert reader._flow.preset == "ultrafast" and reader._flow.max_side == 160
        frames = list(reader)
    assert {f.motion_source for f in frames[1:]} == {"flow"}
    block = 8
    for frame in frames[1:]:
        if frame.pict_type == "I":
            continue
        for sprite in sprites:
            size, x, y = sprite["size"], sprite["x0"] + sprite["vx"] * frame.index, sprite["y0"] + sprite["vy"] * frame.index
            rows = slice(-(-y // block) + 1, (y + size) // block - 1)
            cols = slice(-(-x // block) + 1, (x + size) // block - 1)
            median = np.median(frame.motion_field[rows, cols].reshape(-1, 2), axis=0)
            np.testing.assert_allclose(median, [-sprite["vx"], -sprite["vy"]], atol=1.0)


def test_patchify_settings_reach_the_decoder():
    """PatchifyConfig's analysis settings become the DecodeOptions every file and stream decodes with: the
    0.2 defaults (16-px blocks, residual on every 2nd pixel, flow at <= 80 px) and, set back, the older ones
    (flow_max_side 0: the flow on the analysis luma itself, DecodeOptions' None)."""
    from codecpatch.patchify import PatchifyConfig
    from codecpatch.patchify._collect import decode_options

    new = decode_options(PatchifyConfig())
    assert (new.block_size, new.residual_stride, new.flow_max_side) == (16, 2, 80)
    old = decode_options(PatchifyConfig(block_size=8, residual_stride=1, flow_max_side=0))
    assert (old.block_size, old.residual_stride, old.flow_max_side) == (8, 1, None)
    with pytest.raises(ValueError, match="flow_max_side"):
        PatchifyConfig(flow_max_side=8)
    with pytest.raises(ValueError, match="residual_stride"):
        PatchifyConfig(residual_stride=3)


def test_small_images_get_flow_without_crashing_and_images_dis_refuses_get_none():
    """At 0.2.1's settings DIS raised on some small images and died of a segmentation fault on others (16x82, 24x80,
    28x200: its own choice of scales, taken when the finest scale set is above the image's coarsest). The finest
    scale is now never set above it: those images get a flow, and only images DIS refuses (a side under one 8-px
    patch, ``dis_coarsest_scale`` < 0) get a zero field. Run in a child process, so that a regression fails this
    test instead of killing the test run."""
    import subprocess
    import sys

    script = (
        "import numpy as np, cv2\n"
        "from codecpatch.motion import OpticalFlowEstimator, grid_shape_for\n"
        "rng = np.random.default_rng(0)\n"
        "for preset in ('ultrafast', 'fast', 'medium'):\n"
        "    for max_side in (None, 80):\n"
        "        for h, w in ((16, 82), (82, 16), (24, 80), (28, 200), (25, 240), (10, 40), (64, 64), (6, 40), (8, 8), (4, 300)):\n"
        "            a = cv2.GaussianBlur(rng.uniform(0, 255, (h, w)).astype(np.float32), (0, 0), 1.5)\n"
        "            a = np.clip(128 + 3 * (a - a.mean()), 0, 255).astype(np.uint8)\n"
        "            estimator, grid = OpticalFlowEstimator(preset, max_side), grid_shape_for(h, w, 8)\n"
        "            field = estimator.block_field(a, np.roll(a, 2, axis=1), grid, 1.0)\n"
        "            assert field.shape == (*grid, 2), (h, w)\n"
        "            refused = (h, w) in {(6, 40), (8, 8), (4, 300)}  # a side under one 8-px patch, or both under ~12 px\n"
        "            assert estimator.estimates((h, w), grid) == (not refused), (preset, max_side, h, w)\n"
        "            assert field.any() == (not refused), (preset, max_side, h, w)\n"
        "print('ok')\n"
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0 and child.stdout.strip() == "ok", (child.returncode, child.stderr[-2000:])


@pytest.mark.parametrize("shape, expected", [((8, 8), -1), ((4, 300), -1), ((6, 40), -1), ((16, 82), 1), ((45, 80), 1),
                                             ((60, 106), 2), ((90, 160), 2), ((180, 320), 3), ((0, 5), -1)])
def test_dis_coarsest_scale_as_dis_computes_it(shape, expected):
    # min(round(log2(long / 32)), floor(log2(short // 8))): C's integer division and truncation toward zero
    assert dis_coarsest_scale(shape, 8) == expected


def _vp9_clip(path, width: int, height: int, frames: int, step: int):
    """A VP9 clip (no codec vectors: the flow path) of a texture panning ``step`` px right per frame."""
    import av

    texture = textured(height, width + step * frames, seed=5)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx-vp9", rate=10, options={"crf": "10", "b:v": "0"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            left = step * (frames - index)  # the window slides left over the texture: its content moves right
            picture = np.repeat(texture[:, left:left + width, None], 3, axis=2)
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_a_small_video_gets_flow_and_one_dis_refuses_gets_zero_motion_and_says_so(tmp_path):
    """A 64x64 VP9 clip (0.2.1's guard-free DIS picked its own scales there) gets the square's motion; a 96x6 one
    (a side under one DIS patch) decodes every frame with zero motion, labelled as no motion source, the residual
    still seeing the change, and the report says why there is no motion."""
    with VideoReader(_vp9_clip(tmp_path / "small.webm", 64, 64, 8, 3), keep_vectors=False) as reader:
        frames = list(reader)
        assert not any("optical flow" in w for w in reader.report.warnings)
    field = np.stack([f.motion_field for f in frames[2:]]).reshape(-1, 2)
    assert np.median(field[:, 0]) == pytest.approx(-3.0, abs=0.75) and np.abs(np.median(field[:, 1])) < 0.75
    with VideoReader(_vp9_clip(tmp_path / "strip.webm", 96, 6, 8, 8), keep_vectors=False) as reader:
        frames = list(reader)
        report = reader.report
    assert len(frames) == 8 and {f.motion_source for f in frames} == {"none"}  # no estimate: not labelled "flow"
    assert all(not f.motion_field.any() for f in frames)
    assert all(f.residual_energy.max() > 10 for f in frames[1:])
    assert any("96x6 are too small for optical flow" in w for w in report.warnings)
