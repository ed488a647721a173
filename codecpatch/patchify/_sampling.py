"""Planning: split a video into clips and choose which decoded frames each clip samples. Pure."""

from __future__ import annotations

import numpy as np

from ..decode import ASSUMED_FPS
from ._config import PatchifyConfig


def plan_clips(n_frames: int, fps: float | None, config: PatchifyConfig) -> list[tuple[int, int]]:
    """[start, end) frame ranges of the clips. A tail shorter than half a clip joins the previous one."""
    if n_frames <= 0:
        return []
    if config.clip_frames is not None:
        length = config.clip_frames
    elif config.clip_seconds is not None:
        # no usable rate: the rate the decode layer times such a stream at, so clips match the rows' seconds
        length = max(1, int(round(config.clip_seconds * (fps or ASSUMED_FPS))))
    else:
        return [(0, n_frames)]
    starts = list(range(0, n_frames, length))
    if len(starts) > 1 and n_frames - starts[-1] < length / 2:
        starts.pop()
    ends = starts[1:] + [n_frames]
    return list(zip(starts, ends))


def uniform_samples(start: int, end: int, count: int) -> np.ndarray:
    """(min(count, end - start),) int64 frame indices spread evenly over [start, end), first and last included."""
    count = min(count, end - start)
    if count <= 0:
        return np.zeros(0, np.int64)
    return np.round(np.linspace(start, end - 1, count)).astype(np.int64)


def chunk_bounds(start: int, end: int, count: int) -> np.ndarray:
    """(n + 1,) int64 boundaries of n = min(count, end - start) equal chunks of [start, end)."""
    count = max(1, min(count, end - start))
    return np.round(np.linspace(start, end, count + 1)).astype(np.int64)
