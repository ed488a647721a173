"""Codec patchification on the synthetic clips with known motion, plus invariants on every mode."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from codecpatch.errors import InvalidVideoError
from codecpatch.metrics import compare_selections, rebuild, selection_fidelity
from codecpatch.patchify import Budget, PatchifyConfig, iter_clip_samples, patchify_samples, patchify_video
from codecpatch.patchify._sampling import plan_clips, uniform_samples

from .conftest import SAMPLES

CLIPS = ["sprites_h264_p.mp4", "sprites_h264_b.mp4", "sprites_mpeg4.mp4", "sprites_hevc.mp4", "pan_h264_p.mp4",
         "static_h264_p.mp4", "scenecut_h264_p.mp4"]


def one_clip(name: str, **config):
    cfg = PatchifyConfig(**config)
    samples = next(iter_clip_samples(SAMPLES / name, cfg))
    return samples, patchify_samples(samples, cfg), cfg


def sprite_boxes_on_canvas(manifest, clip, frame_index, geometry):
    """Canvas rectangles (x0, y0, x1, y1) of each sprite at a decoded frame."""
    scale_x, scale_y = geometry.scale
    boxes = []
    for sprite in manifest["clips"][clip]["scene"]["sprites"]:
        x, y = sprite["x0"] + sprite["vx"] * frame_index, sprite["y0"] + sprite["vy"] * frame_index
        boxes.append((geometry.content_x + x * scale_x, geometry.content_y + y * scale_y,
                      geometry.content_x + (x + sprite["size"]) * scale_x, geometry.content_y + (y + sprite["size"]) * scale_y))
    return boxes


@pytest.mark.parametrize("clip", ["sprites_h264_p.mp4", "sprites_h264_b.mp4", "sprites_mpeg4.mp4", "sprites_hevc.mp4"])
def test_codec_mode_puts_kept_patches_on_the_moving_sprites(clip, manifest):
    samples, patches, _ = one_clip(clip, selection="topk", budget=Budget(0.05), frames=16)
    patch = patches.geometry.patch
    on_sprite = total = 0
    for t, h, w in zip(patches.sample_index, patches.positions[:, 1], patches.positions[:, 2]):
        if t == 0:
            continue  # the first frame is kept whole
        x0, y0 = w * patch, h * patch
        boxes = sprite_boxes_on_canvas(manifest, clip, samples.frame_indices[t], patches.geometry)
        boxes += sprite_boxes_on_canvas(manifest, clip, samples.frame_indices[t - 1], patches.geometry)  # where it left
        hit = any(x0 < bx1 and x0 + patch > bx0 and y0 < by1 and y0 + patch > by0 for bx0, by0, bx1, by1 in boxes)
        on_sprite += hit
        total += 1
    assert total > 0 and on_sprite / total >= 0.9, (on_sprite, total)


def test_a_camera_pan_is_mostly_compensated_away():
    compensated, patches, _ = one_clip("pan_h264_p.mp4", camera="median", selection="topk")
    raw, _, _ = one_clip("pan_h264_p.mp4", camera="none")
    assert compensated.motion_accumulated[1:].mean() < 0.05 * raw.motion_accumulated[1:].mean()
    affine, _, _ = one_clip("pan_h264_p.mp4", camera="affine")
    assert affine.motion_accumulated[1:].mean() < 0.05 * raw.motion_accumulated[1:].mean()
    assert not patches.static_fallback
    # Content moves left/up; what is left to code is the new strip entering at the right edge.
    per_column = patches.kept[1:].sum(axis=(0, 1))
    assert int(np.argmax(per_column)) == len(per_column) - 1


def test_static_clip_triggers_the_uniform_whole_frame_fallback():
    samples, patches, _ = one_clip("static_h264_p.mp4")
    assert patches.static_fallback
    reasons = {reason for _, reason in patches.whole_frames}
    assert reasons == {"static fallback"}
    whole = [t for t, _ in patches.whole_frames]
    assert whole[0] == 0 and len(whole) >= 2 and len(set(np.diff(whole))) <= 2  # evenly spaced
    assert patches.n_kept <= patches.n_budget


@pytest.mark.parametrize("block_size, margin", [(8, 5.0), (16, 2.5)])
def test_scene_cut_frame_gets_the_most_patches(block_size, margin):
    """Top-K of accumulated energy gives the cut the most patches. On 16-px blocks the sprites' motion fills
    a larger share of each block, so the other frames score closer to the cut (36 vs a median of 13, against
    102 vs 10 on 8-px blocks)."""
    samples, patches, _ = one_clip("scenecut_h264_p.mp4", selection="topk", frames=25, budget=Budget(0.12), block_size=block_size)
    cut = int(np.flatnonzero(samples.frame_indices >= 25)[0])
    per_frame = patches.kept_per_frame
    assert per_frame[cut] == per_frame[1:].max() and per_frame[cut] > margin * np.median(per_frame[1:])


@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("budget", ["0.031", "0.125", "0.25", "3f", "500t"])
def test_invariants_budget_grid_uniqueness_padding(clip, budget):
    samples, patches, cfg = one_clip(clip, budget=Budget.parse(budget), frames=24)
    t_max, rows, cols = patches.grid
    picture = int((patches.geometry.patch_content_fraction() > 0).sum())
    assert patches.n_kept <= patches.n_budget == cfg.budget.tokens(t_max, picture)
    assert patches.n_picture == t_max * picture
    if not patches.static_fallback:  # the whole budget is spent: all tokens, or the picture area of whole frames
        coverage = patches.geometry.patch_content_fraction()
        area = cfg.budget.picture_area(t_max, float(coverage.sum()))
        if area is None:
            assert patches.n_kept == patches.n_budget
        else:
            assert area - 1.0 <= (patches.kept * coverage).sum() <= area + 1e-6
    assert patches.positions.shape == (patches.n_kept, 3) and patches.pixels.shape == (patches.n_kept, 3, 16, 16)
    assert (patches.positions[:, 1] < rows).all() and (patches.positions[:, 2] < cols).all()
    assert (patches.positions >= 0).all() and (patches.positions[:, 0] < cfg.timeline_slots).all()
    assert len({tuple(p) for p in patches.positions.tolist()}) == patches.n_kept
    padding = patches.geometry.patch_content_fraction() == 0
    assert padding.any() and not patches.kept[:, padding].any()
    # order is (t, h, w) and pixels are the canvas patches at those positions
    keys = patches.sample_index.astype(np.int64) * rows * cols + patches.positions[:, 1] * cols + patches.positions[:, 2]
    assert (np.diff(keys) > 0).all()
    frames = samples.canvas_frames()
    t, h, w = patches.sample_index[-1], patches.positions[-1, 1], patches.positions[-1, 2]
    np.testing.assert_array_equal(patches.pixels[-1], frames[t, h * 16 : h * 16 + 16, w * 16 : w * 16 + 16].transpose(2, 0, 1))


def test_deterministic_across_runs():
    first = [p.positions for p in patchify_video(SAMPLES / "sprites_h264_b.mp4")]
    second = [p.positions for p in patchify_video(SAMPLES / "sprites_h264_b.mp4")]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_patch_statistics_are_reproducible_to_the_bit_wherever_the_arrays_lie_in_memory():
    """patch_change twice on the same samples, with allocations in between that move where numpy and OpenCV put
    their arrays, gives the same bits (cv2.magnitude's vectorised rounding depended on the alignment)."""
    from codecpatch.patchify._adaptive import patch_change

    samples = next(iter_clip_samples(SAMPLES / "sprites_h264_b.mp4", PatchifyConfig()))
    first = patch_change(samples, 2.0)
    ballast = []
    for size in np.random.default_rng(0).integers(1, 100_000, 120):
        ballast.append(np.empty(int(size), np.uint8))  # moves where the next arrays land on the heap
        again = patch_change(samples, 2.0)
        for name in ("moved", "unexplained", "mean", "spread"):
            assert getattr(again, name).tobytes() == getattr(first, name).tobytes(), (name, len(ballast))


def test_percentile_below_is_numpys_percentile_comparison():
    from codecpatch.patchify._patchify import percentile_below

    rng = np.random.default_rng(7)
    for trial in range(3000):
        size = int(rng.integers(1, 300))
        values = [rng.random(size) * 5, rng.integers(0, 4, size), rng.exponential(1, size) ** 3,
                  np.r_[np.zeros(size), rng.random(2)]][trial % 4].astype(np.float32)
        if trial % 50 == 0:
            values[int(rng.integers(0, values.size))] = np.nan
        if trial % 50 in (1, 2):  # infinities among the order statistics: numpy's interpolation may give NaN
            values[rng.integers(0, values.size, max(1, size // 3))] = np.inf if trial % 50 == 1 else -np.inf
        exact = float(np.percentile(values, 99))
        for threshold in (0.5, 2.0, exact, float(np.nextafter(np.float32(exact), np.float32(np.inf)))):
            shaped = values.reshape(-1, 1) if trial % 2 else values
            assert percentile_below(shaped, 99, threshold) == bool(np.percentile(values, 99) < threshold)
    for values, q in (([-np.inf, 1.0, 2.0], 0), ([-np.inf], 99), ([1.0, np.inf], 0), ([1.0, np.inf], 50)):
        assert percentile_below(np.array(values), q, 5.0) == bool(np.percentile(values, q) < 5.0), (values, q)


def test_i_frames_kept_whole_on_request_and_counted():
    samples, patches, _ = one_clip("sprites_h264_p.mp4", selection="topk", keep_i_frames=True, budget=Budget(0.25))
    i_samples = [t for t, kind in enumerate(samples.picture_types) if kind == "I"]
    assert len(i_samples) == 2
    assert {t for t, reason in patches.whole_frames if reason in ("first", "I-frame")} == set(i_samples)
    assert patches.n_kept <= patches.n_budget


def test_chunk_mode_prefers_the_chunk_i_frame_and_shares_the_timeline():
    samples, patches, _ = one_clip("sprites_h264_p.mp4", mode="chunk", frames=4)
    assert samples.frame_indices.tolist() == [0, 18, 25, 43]  # I, middle, I, middle
    assert patches.timeline.tolist() == [0, 21, 42, 63]
    content = int((patches.geometry.patch_content_fraction() > 0).sum())
    assert patches.n_kept == 4 * content and set(patches.positions[:, 0].tolist()) == {0, 21, 42, 63}


def test_image_mode_on_a_video_frame_and_on_an_image_file(tmp_path):
    samples, patches, _ = one_clip("sprites_h264_p.mp4", mode="image", image_frame=7)
    assert samples.frame_indices.tolist() == [7] and patches.grid == (1, 14, 14)
    assert (patches.positions[:, 0] == 0).all()
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), np.full((90, 160, 3), 200, np.uint8))
    [from_image] = list(patchify_video(image, PatchifyConfig(mode="image", max_side=64)))
    assert from_image.grid == (1, 3, 4) and from_image.n_kept == 12
    (tmp_path / "broken.png").write_text("no")
    with pytest.raises(InvalidVideoError, match="broken.png"):
        list(patchify_video(tmp_path / "broken.png", PatchifyConfig(mode="image")))


def test_native_aspect_canvas():
    samples, patches, _ = one_clip("sprites_h264_p.mp4", max_side=160)
    g = patches.geometry
    assert (g.canvas_width, g.canvas_height, g.content_width, g.content_height) == (160, 128, 160, 120)
    assert patches.grid[1:] == (8, 10)


def test_long_video_is_split_into_clips():
    patchsets = list(patchify_video(SAMPLES / "sprites_h264_p.mp4", PatchifyConfig(clip_frames=20, frames=8)))
    assert [(p.info.frame_start, p.info.frame_end) for p in patchsets] == [(0, 20), (20, 40), (40, 50)]
    assert all(p.n_kept <= p.n_budget for p in patchsets)
    assert plan_clips(100, 25.0, PatchifyConfig(clip_seconds=1.0)) == [(0, 25), (25, 50), (50, 75), (75, 100)]
    assert plan_clips(110, 25.0, PatchifyConfig(clip_seconds=1.0))[-1] == (75, 110)  # a short tail joins
    assert uniform_samples(10, 20, 64).tolist() == list(range(10, 20))


def test_budget_parsing():
    assert Budget.parse("0.125") == Budget(0.125, "fraction")
    assert Budget.parse("12.5%") == Budget(0.125, "fraction")
    assert Budget.parse("8f") == Budget(8, "frames")
    assert Budget.parse("1500t") == Budget(1500, "tokens")
    assert Budget(8, "frames").tokens(64, 196) == 1568 == Budget(0.125).tokens(64, 196)
    with pytest.raises(ValueError, match="budget"):
        Budget.parse("lots")
    with pytest.raises(ValueError, match="mode"):
        PatchifyConfig(mode="dense")


def test_rebuild_is_exact_with_everything_kept_and_holds_without():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    everything = np.ones((4, 2, 2), bool)
    assert np.array_equal(rebuild(frames, everything, 16, None, "hold"), frames)
    first_only = np.zeros((4, 2, 2), bool)
    first_only[0] = True
    held = rebuild(frames, first_only, 16, None, "hold")
    assert all(np.array_equal(held[t], frames[0]) for t in range(4))


def test_codec_selection_beats_uniform_and_random_on_moving_sprites():
    samples, patches, _ = one_clip("sprites_h264_b.mp4")
    scores = compare_selections(samples, patches.kept, [0])
    assert scores["codec"].n_kept == scores["random"].n_kept == patches.n_kept
    per_frame = int((patches.geometry.patch_content_fraction() > 0).sum())
    assert scores["uniform"].n_kept % per_frame == 0  # whole frames only, at the selection's picture area
    assert abs(scores["uniform"].area_fraction - scores["codec"].area_fraction) <= 0.5 / samples.n_samples + 1e-9
    assert scores["codec"].psnr_db > scores["uniform"].psnr_db + 3
    assert scores["codec"].psnr_db > scores["random"].psnr_db
    everything = np.ones_like(patches.kept)
    assert math.isinf(selection_fidelity(samples, everything).psnr_db)


def test_exact_size_canvas_ignores_aspect():
    _, patches, _ = one_clip("sprites_h264_p.mp4", exact_size=(200, 100))
    g = patches.geometry
    assert (g.content_width, g.content_height, g.canvas_width, g.canvas_height) == (200, 100, 208, 112)


@pytest.mark.parametrize("refresh", [0.2, 1.0])
def test_refresh_patches_spread_the_budget_and_keep_the_invariants(refresh):
    samples, plain, _ = one_clip("sprites_h264_p.mp4", selection="topk", budget=Budget(0.125))
    _, mixed, _ = one_clip("sprites_h264_p.mp4", selection="topk", budget=Budget(0.125), refresh=refresh)
    _, again, _ = one_clip("sprites_h264_p.mp4", selection="topk", budget=Budget(0.125), refresh=refresh)
    assert mixed.n_kept == plain.n_kept <= mixed.n_budget
    assert np.array_equal(mixed.positions, again.positions)  # seeded
    assert not np.array_equal(mixed.kept, plain.kept)
    padding = mixed.geometry.patch_content_fraction() == 0
    assert not mixed.kept[:, padding].any() and mixed.kept[0][~padding].all()
    # refresh reaches regions the energy never picks: more distinct patch positions are touched
    touched = lambda p: int(p.kept[1:].any(axis=0).sum())  # noqa: E731
    assert touched(mixed) > touched(plain)


def test_importing_the_pure_patchify_functions_does_not_load_pyav():
    """`import codecpatch.patchify` for patchify_samples and friends leaves PyAV (and the decode layer)
    unloaded; the collector comes in on first use."""
    import subprocess
    import sys

    code = ("import sys; import codecpatch.patchify as p; p.patchify_samples; p.Budget; "
            "print('av' in sys.modules, 'codecpatch.decode' in sys.modules); p.iter_clip_samples; print('av' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "True"]



def test_the_patchify_command_does_not_load_torch(tmp_path):
    """Patchifying needs no torch (it costs ~1 s of start-up): the CLI, the default recipe and the patchify
    command leave it unloaded; reading shards as a torch dataset still loads it on first use."""
    import subprocess
    import sys

    code = ("import sys; from codecpatch.cli import main\n"
            "try: main(['patchify', '--no-fidelity', sys.argv[1]], standalone_mode=False)\n"
            "except SystemExit: pass\n"
            "print('torch' in sys.modules, file=sys.stderr); import codecpatch.shards as s; print('torch' in sys.modules, file=sys.stderr)\n"
            "s.TokenShardDataset; print('torch' in sys.modules, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code, str(SAMPLES / "pan_h264_p.mp4")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()  # the command ran and printed its result
    assert result.stderr.split()[-3:] == ["False", "False", "True"]

def _count_opens(monkeypatch) -> list[str]:
    """Wrap PyAV's open (the decode layer's only way into a container): the list of sources opened."""
    import av

    opened: list[str] = []
    real_open = av.open

    def counting_open(source, *args, **kwargs):
        opened.append(str(source))
        return real_open(source, *args, **kwargs)

    monkeypatch.setattr(av, "open", counting_open)
    return opened


@pytest.mark.parametrize("mode", ["codec", "chunk"])
@pytest.mark.parametrize("clip", CLIPS)
def test_each_input_is_opened_once(clip, mode, monkeypatch):
    plain = [(s.frame_indices.tolist(), s.rgb.sum(), s.motion_accumulated.sum()) for s in iter_clip_samples(SAMPLES / clip, PatchifyConfig(mode=mode, clip_seconds=1.0))]
    opened = _count_opens(monkeypatch)
    again = [(s.frame_indices.tolist(), s.rgb.sum(), s.motion_accumulated.sum()) for s in iter_clip_samples(SAMPLES / clip, PatchifyConfig(mode=mode, clip_seconds=1.0))]
    assert opened == [str(SAMPLES / clip)]  # header, packet plan and decode on one container
    assert len(again) > 1 and again == plain  # several clips, all from the rewound container


@pytest.mark.parametrize("name, opens", [("bbb_720p_h264_ip.mp4", 1), ("city_pan_405p_mpeg2.mpg", 1),
                                         ("bbb_360p_h264_ipb.264", 2), ("traffic_reschange_vp9.ivf", 2)])
def test_inputs_that_cannot_rewind_exactly_are_reopened(name, opens, shared_videos, monkeypatch):
    """Raw H.264 cannot seek; this IVF's timestamps are all 0, so seeking to 0 lands on its last key frame:
    both are opened a second time for the decode, which then starts at the first packet like a fresh open."""
    opened = _count_opens(monkeypatch)
    samples = list(iter_clip_samples(shared_videos / name, PatchifyConfig()))
    assert len(opened) == opens
    assert samples and samples[0].frame_indices[0] == 0 and samples[0].picture_types[0] == "I"


def test_a_size_change_inside_a_clip_without_motion_resamples_the_residual_onto_the_clips_grid():
    """Codec mode with no motion (a decode without vectors or flow) and a frame-size change mid-clip: the
    residual of the smaller frames is resampled onto the clip's block grid and accumulated there."""
    from codecpatch.decode import CodecFrame
    from codecpatch.patchify import window_samples

    def frame(index: int, width: int, height: int, residual: float) -> CodecFrame:
        grid = (-(-height // 8), -(-width // 8))
        return CodecFrame(index=index, pts=index, time=index / 25, pict_type="I" if index == 0 else "P", key_frame=index == 0,
                          width=width, height=height, motion_source="none", n_vectors=0, motion_vectors=None,
                          block_motion=None, residual_energy=np.full(grid, residual, np.float32),
                          rgb=np.zeros((height, width, 3), np.uint8))

    frames = [frame(i, 64, 48, 1.0) for i in range(4)] + [frame(i, 32, 24, 3.0) for i in range(4, 8)]
    samples = window_samples(frames, PatchifyConfig(mode="codec", frames=2, block_size=8), source="resized.ivf", codec="vp9", fps=25.0,
                             clip_index=0)
    assert samples.frame_indices.tolist() == [0, 7] and samples.info.sizes == ((64, 48), (32, 24))
    assert samples.residual_accumulated.shape == (2, 6, 8)  # the clip's grid: its first frame's 48x64 in 8-px cells
    # frames 1-3 at 1.0 and 4-7 at 3.0, resampled (a constant stays constant) and summed into the second sample
    np.testing.assert_allclose(samples.residual_accumulated[1], 3 * 1.0 + 4 * 3.0)
    np.testing.assert_allclose(samples.residual_instant[1], 3.0)
