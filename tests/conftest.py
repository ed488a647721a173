"""Shared fixtures: the bundled sample clips with their ground truth, the real clips in ../shared/videos,
and capability checks that skip in a user's clone but fail in CI (CODECPATCH_NO_SKIP=1)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_videos"
SHARED_VIDEOS = REPO.parent / "shared" / "videos"
NO_SKIP = os.environ.get("CODECPATCH_NO_SKIP") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip where a resource is optional (a user's clone); fail where CI promised it."""
    if NO_SKIP:
        pytest.fail(f"{reason} (CODECPATCH_NO_SKIP=1 turns this skip into a failure)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def manifest() -> dict:
    return json.loads((SAMPLES / "manifest.json").read_text())


@pytest.fixture(scope="session")
def shared_videos() -> Path:
    if not SHARED_VIDEOS.is_dir():
        skip_or_fail(f"{SHARED_VIDEOS} is absent")
    return SHARED_VIDEOS


@pytest.fixture(scope="session")
def ffprobe() -> str:
    path = shutil.which("ffprobe")
    if path is None:
        skip_or_fail("ffprobe is not installed (apt-get install ffmpeg)")
    return path


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        skip_or_fail("the ffmpeg CLI is not installed (apt-get install ffmpeg)")
    return path


@pytest.fixture()
def silent_tcp_server():
    """A TCP server on 127.0.0.1 that accepts connections and never sends a byte: a hanging source.
    Yields its port; connections and the socket are closed afterwards."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        for connection, _ in accepted:
            connection.close()
        server.close()


def shared_clips() -> list[str]:
    """Names of the real clips (parametrisation must not fail at collection when the folder is absent)."""
    names = ["bbb_360p_h264_ipb.264", "bbb_720p_h264_ip.mp4", "bbb_720p_mpeg4part2.mp4", "bear_180p_hevc.h265",
             "box_handheld_480p_h264_ipb.mp4", "city_pan_405p_mpeg2.mpg", "nasa_jwst_180p_h264_ipb.mp4",
             "parking_static_432p_h264.mp4", "traffic_reschange_vp9.ivf"]
    return names
