"""Cutting a live frame sequence into windows (per GOP or every N seconds). Pure: no I/O, no clocks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..decode import CodecFrame

#: Frame times within this many seconds of a boundary count as on it (float timestamps).
_TIME_TOLERANCE = 1e-3


@dataclass(frozen=True)
class WindowPolicy:
    """Where windows end.

    Attributes:
        by: "gop" cuts before every key frame; "seconds" cuts every ``seconds`` of stream time.
        seconds: window length in "seconds" mode.
        min_seconds: "gop" mode: a key frame less than this after the window start does not cut (merges
            short GOPs, e.g. scene-cut I-frames).
        max_seconds: every mode: a window never spans more than this (bounds memory when key frames are
            rare or missing).
    """

    by: Literal["gop", "seconds"] = "gop"
    seconds: float = 2.0
    min_seconds: float = 0.0
    max_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.by not in ("gop", "seconds"):
            raise ValueError(f"window must be 'gop' or 'seconds', got {self.by!r}")
        if self.seconds <= 0 or self.max_seconds <= 0 or self.min_seconds < 0:
            raise ValueError("window seconds and max_seconds must be > 0, min_seconds >= 0")


class Windower:
    """Feed frames in presentation order; ``add`` returns the previous window's frames when a frame starts
    a new one. Timestamps that go backwards or jump by more than ``max_seconds`` (a reconnect, a wrap) also
    end the window."""

    def __init__(self, policy: WindowPolicy) -> None:
        self.policy = policy
        self._frames: list[CodecFrame] = []

    @property
    def pending(self) -> int:
        """Frames in the open window."""
        return len(self._frames)

    def add(self, frame: CodecFrame) -> list[CodecFrame] | None:
        """Add the next frame; return a window when one is finished (else None).

        In "seconds" mode a window is returned as soon as its last frame is in (the next frame is due at
        the window's end, judged by the latest frame interval), not one frame later."""
        if self._frames and self._starts_new_window(frame):
            finished, self._frames = self._frames, [frame]
            return finished
        self._frames.append(frame)
        if self.policy.by == "seconds" and len(self._frames) >= 2:
            interval = frame.time - self._frames[-2].time
            if interval > 0 and frame.time + interval - self._frames[0].time >= self.policy.seconds - _TIME_TOLERANCE:
                finished, self._frames = self._frames, []
                return finished
        return None

    def flush(self) -> list[CodecFrame] | None:
        """The open window as it is (at the end of the stream, a disconnect or a stop), or None if empty."""
        finished, self._frames = self._frames, []
        return finished or None

    def _starts_new_window(self, frame: CodecFrame) -> bool:
        first, last = self._frames[0].time, self._frames[-1].time
        elapsed = frame.time - first
        if frame.time < last or frame.time - last > self.policy.max_seconds:
            return True  # discontinuity
        if elapsed >= self.policy.max_seconds - _TIME_TOLERANCE:
            return True
        if self.policy.by == "gop":
            return frame.key_frame and elapsed >= self.policy.min_seconds - _TIME_TOLERANCE
        return elapsed >= self.policy.seconds - _TIME_TOLERANCE
