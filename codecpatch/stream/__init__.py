"""Live sources (cameras, network streams, files played in real time) into tokens with bounded latency.

``StreamSession(source, recipe).results()`` is an iterator of processed windows (TokenSets included) for a
model that consumes them online; ``run_stream`` writes them to rolling Parquet shards (``codecpatch stream``).
"""

from __future__ import annotations

from ._clock import CaptureClock, FrameClock, ReceiveAnchor, WindowClock
from ._runner import STREAM_STATS, STREAM_WINDOWS, StreamStats, run_stream
from ._session import FrameWindow, SessionCounters, StreamSession, StreamWindowResult, default_stream_id, redact
from ._source import Reconnect, StreamEnded, TimedFrame, is_live, live_frames
from ._window import WindowPolicy, Windower

__all__ = [
    "STREAM_STATS",
    "STREAM_WINDOWS",
    "CaptureClock",
    "FrameClock",
    "FrameWindow",
    "ReceiveAnchor",
    "Reconnect",
    "SessionCounters",
    "StreamEnded",
    "StreamSession",
    "StreamStats",
    "StreamWindowResult",
    "TimedFrame",
    "WindowClock",
    "WindowPolicy",
    "Windower",
    "default_stream_id",
    "is_live",
    "live_frames",
    "redact",
    "run_stream",
]
