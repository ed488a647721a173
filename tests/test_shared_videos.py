"""The real third-party clips in ../shared/videos (see its SOURCES.md): picture types agree with ffprobe,
motion comes from the codec where FFmpeg exports vectors and from optical flow where it does not, B-frame
vectors are reproducible, and odd streams (raw Annex-B, no timestamps, resolution changes) decode cleanly."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from codecpatch.decode import VideoReader

from .conftest import shared_clips

pytestmark = [pytest.mark.shared_videos, pytest.mark.slow]

NO_VECTORS = {"bear_180p_hevc.h265", "traffic_reschange_vp9.ivf"}


def ffprobe_types(ffprobe: str, path) -> list[str]:
    out = subprocess.run(
        [ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pict_type", "-of", "csv=p=0", str(path)],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout
    return [line.strip().rstrip(",") for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("clip", shared_clips())
def test_types_match_ffprobe_and_motion_source_fits_the_codec(clip, shared_videos, ffprobe):
    path = shared_videos / clip
    with VideoReader(path, residual="none") as reader:
        records = [(f.pict_type, f.motion_source, f.n_vectors) for f in reader]
    assert reader.report.complete and not reader.report.errors
    assert [t for t, _, _ in records] == ffprobe_types(ffprobe, path)
    sources = {s for _, s, _ in records}
    if clip in NO_VECTORS:
        assert sources <= {"flow", "none"} and "flow" in sources
        assert all(n == 0 for _, _, n in records)
    else:
        assert sources == {"codec"}
        assert all(n == 0 for t, _, n in records if t == "I")
        assert sum(n for t, _, n in records if t in "PB") > 0


@pytest.mark.parametrize("clip", ["bbb_360p_h264_ipb.264", "box_handheld_480p_h264_ipb.mp4"])
def test_b_frame_vectors_identical_across_runs(clip, shared_videos):
    runs = []
    for _ in range(3):
        with VideoReader(shared_videos / clip, residual="none") as reader:
            runs.append([f.motion_vectors.copy() for f in reader])
    for other in runs[1:]:
        assert len(other) == len(runs[0])
        assert all(np.array_equal(a, b) for a, b in zip(runs[0], other))


def test_raw_annex_b_is_frame_indexed(shared_videos):
    with VideoReader(shared_videos / "bbb_360p_h264_ipb.264", motion="none", residual="none") as reader:
        times = [f.time for f in reader]
    assert reader.report.timestamps == "frame_index"
    np.testing.assert_allclose(times, np.arange(len(times)) / 25.0)


def test_resolution_changes_mid_stream(shared_videos):
    with VideoReader(shared_videos / "traffic_reschange_vp9.ivf") as reader:
        frames = [(f.index, f.width, f.height, f.residual_energy is None, f.motion_field.shape) for f in reader]
    assert reader.report.sizes_seen == [(640, 360), (426, 240), (640, 360), (854, 480), (1280, 720)]
    changes = [i for i in range(1, len(frames)) if frames[i][1:3] != frames[i - 1][1:3]]
    assert changes == [50, 158, 307, 495]
    for index in [0, *changes]:
        assert frames[index][3], "no residual across a size change"
    for index, width, height, _, field_shape in frames:
        assert field_shape == (-(-height // 8), -(-width // 8), 2)
    assert len(frames) == 500 and reader.report.timestamps == "frame_index"
