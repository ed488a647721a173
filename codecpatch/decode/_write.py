"""Writing RGB frames to a video file (used by pictures and tests); PyAV stays inside the decode layer."""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np


def write_rgb_video(frames: np.ndarray, path: str | os.PathLike, fps: float = 4.0, crf: int = 20) -> None:
    """Encode (N, H, W, 3) uint8 RGB frames as H.264 (yuv420p; H and W are cropped to even sizes)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (N, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    height, width = frames.shape[1] - frames.shape[1] % 2, frames.shape[2] - frames.shape[2] % 2
    rate = Fraction(fps).limit_denominator(1000)
    with av.open(os.fspath(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate, options={"crf": str(crf), "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:height, :width]), format="rgb24")
            frame.pts = index
            frame.time_base = 1 / rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
