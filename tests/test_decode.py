"""Real PyAV decode of the bundled synthetic clips, whose motion is known (sample_videos/manifest.json)."""

from __future__ import annotations

import numpy as np
import pytest

from codecpatch.decode import DecodeOptions, VideoReader, probe, read_frames, transcode_for_vectors

from .conftest import SAMPLES


def decode(name: str, **options):
    with VideoReader(SAMPLES / name, **options) as reader:
        frames = list(reader)
    return frames, reader


def sprite_block_vectors(frame, sprite: dict) -> np.ndarray:
    """Median (dx, dy) of the grid cells fully inside the sprite at this frame (current -> previous)."""
    size, block = sprite["size"], frame.block_motion.block_size
    x = sprite["x0"] + sprite["vx"] * frame.index
    y = sprite["y0"] + sprite["vy"] * frame.index
    rows = slice(-(-y // block) + 1, (y + size) // block - 1)
    cols = slice(-(-x // block) + 1, (x + size) // block - 1)
    return np.median(frame.motion_field[rows, cols].reshape(-1, 2), axis=0)


@pytest.mark.parametrize("clip", ["sprites_h264_p.mp4", "sprites_h264_b.mp4", "sprites_mpeg4.mp4"])
def test_codec_vectors_recover_sprite_velocities(clip, manifest):
    sprites = manifest["clips"][clip]["scene"]["sprites"]
    frames, _ = decode(clip)
    inter = [f for f in frames if f.pict_type in "PB"]
    assert inter and all(f.motion_source == "codec" for f in frames)
    for frame in inter:
        # P vectors are exact; B vectors are the encoder's rate-distortion choice under bi-prediction, where
        # a half-pel pair can stand in for the true motion.
        tolerance = 0.26 if frame.pict_type == "P" else 0.6
        for sprite in sprites:
            # The content moved by (vx, vy): it came from (-vx, -vy) in the previous frame. A P-frame after
            # B-frames references the anchor several frames back: the field is normalised per frame.
            np.testing.assert_allclose(sprite_block_vectors(frame, sprite), [-sprite["vx"], -sprite["vy"]], atol=tolerance,
                                       err_msg=f"{clip} frame {frame.index} ({frame.pict_type})")


def test_b_frames_carry_both_directions_and_reference_distances():
    frames, _ = decode("sprites_h264_b.mp4")
    b_frames = [f for f in frames if f.pict_type == "B"]
    assert b_frames
    for b in b_frames:
        assert (b.block_motion.past_distance, b.block_motion.future_distance) == (1, 1)  # single B between anchors
        after = frames[b.index + 1]
        assert after.pict_type == "P" and after.block_motion.past_distance == 2
    assert any(f.block_motion.has_future.any() for f in b_frames)
    sources = np.concatenate([f.motion_vectors["source"] for f in b_frames])
    assert set(np.unique(sources)) == {-1, 1}


def test_pan_shows_as_uniform_background_motion():
    frames, _ = decode("pan_h264_p.mp4")
    for frame in frames[1:]:
        if frame.pict_type == "P":
            np.testing.assert_allclose(np.median(frame.motion_field.reshape(-1, 2), axis=0), [2, 1], atol=0.26)


def test_i_frames_carry_no_vectors():
    frames, _ = decode("sprites_h264_p.mp4")
    i_frames = [f for f in frames if f.pict_type == "I"]
    assert [f.index for f in i_frames] == [0, 25]
    for frame in i_frames:
        assert frame.key_frame and frame.n_vectors == 0 and len(frame.motion_vectors) == 0
        assert not frame.block_motion.has_past.any() and frame.motion_energy == 0.0


def test_static_clip_has_no_motion_and_no_residual():
    frames, _ = decode("static_h264_p.mp4")
    assert max(f.motion_energy for f in frames) < 0.05
    assert max(f.mean_residual for f in frames[1:]) < 1.0


def test_vectors_are_identical_across_runs():
    runs = []
    for _ in range(3):
        frames, _ = decode("sprites_h264_b.mp4")
        runs.append(np.concatenate([f.motion_vectors for f in frames]))
    assert all(np.array_equal(runs[0], other) for other in runs[1:])


def test_motion_compensated_residual_beats_frame_difference_on_a_pan():
    mc, _ = decode("pan_h264_p.mp4", residual="mc")
    diff, _ = decode("pan_h264_p.mp4", residual="diff")
    assert mc[0].residual_energy is None  # nothing to predict the first frame from
    mean_mc = np.mean([f.mean_residual for f in mc[1:]])
    mean_diff = np.mean([f.mean_residual for f in diff[1:]])
    assert mean_mc < 0.2 * mean_diff, (mean_mc, mean_diff)


def test_scene_cut_is_an_i_frame_with_high_residual():
    frames, _ = decode("scenecut_h264_p.mp4")
    assert frames[25].pict_type == "I"
    residuals = [f.mean_residual for f in frames[1:]]
    assert int(np.argmax(residuals)) + 1 == 25
    assert frames[25].mean_residual > 10 * np.median(residuals)


def test_hevc_falls_back_to_optical_flow(manifest):
    sprites = manifest["clips"]["sprites_hevc.mp4"]["scene"]["sprites"]
    frames, reader = decode("sprites_hevc.mp4")
    assert reader.info.codec == "hevc" and not reader.info.exports_vectors
    assert frames[0].motion_source == "none"  # no previous frame to estimate from
    assert {f.motion_source for f in frames[1:]} == {"flow"}
    assert all(f.n_vectors == 0 for f in frames)
    for frame in frames[1:]:
        if frame.pict_type == "I":
            continue
        for sprite in sprites:
            # Optical flow on textured squares is good to about a pixel, in the right direction.
            np.testing.assert_allclose(sprite_block_vectors(frame, sprite), [-sprite["vx"], -sprite["vy"]], atol=1.0)


def test_flow_can_be_forced_on_a_codec_with_vectors():
    frames, _ = decode("pan_h264_p.mp4", motion="flow")
    assert {f.motion_source for f in frames[1:]} == {"flow"}
    np.testing.assert_allclose(np.median(frames[10].motion_field.reshape(-1, 2), axis=0), [2, 1], atol=0.5)


def test_motion_none_and_residual_none_compute_nothing():
    frames, _ = decode("sprites_h264_p.mp4", motion="none", residual="none")
    assert all(f.motion_source == "none" and f.block_motion is None and f.residual_energy is None for f in frames)


def test_times_come_from_pts_and_rgb_only_when_asked():
    frames, reader = decode("sprites_h264_p.mp4")
    assert reader.report.timestamps == "pts" and reader.report.complete
    np.testing.assert_allclose([f.time for f in frames], np.arange(50) / 25, atol=1e-6)
    assert all(f.rgb is None for f in frames)
    frames, _ = decode("sprites_h264_p.mp4", rgb=True, rgb_size=(64, 48), residual="none")
    assert frames[0].rgb.shape == (48, 64, 3) and frames[0].rgb.dtype == np.uint8
    native, _ = decode("sprites_h264_p.mp4", rgb=True, residual="none")
    assert native[3].rgb.shape == (240, 320, 3)


def test_transcode_gives_p_only_fixed_gop_h264(tmp_path):
    result = transcode_for_vectors(SAMPLES / "sprites_hevc.mp4", tmp_path / "out.mp4", gop=16)
    assert result.frames == 50 and (result.width, result.height) == (320, 240)
    frames = list(read_frames(result.path))
    assert [f.index for f in frames if f.pict_type == "I"] == [0, 16, 32, 48]
    assert {f.pict_type for f in frames} == {"I", "P"}
    assert all(f.motion_source == "codec" for f in frames)
    assert all((f.motion_vectors["source"] == -1).all() for f in frames)


def test_reader_is_single_use_and_probe_reads_the_header():
    info = probe(SAMPLES / "sprites_h264_p.mp4")
    assert (info.codec, info.width, info.height, info.header_frames) == ("h264", 320, 240, 50)
    with VideoReader(SAMPLES / "sprites_h264_p.mp4") as reader:
        next(iter(reader))
        with pytest.raises(RuntimeError, match="only once"):
            iter(reader)


def test_options_are_validated_with_the_argument_name():
    with pytest.raises(ValueError, match="motion"):
        DecodeOptions(motion="vectors")
    with pytest.raises(ValueError, match="block_size"):
        DecodeOptions(block_size=6)
