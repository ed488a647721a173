"""Wall-clock (UTC) times of live frames: when the source says it captured them, else when they arrived.

An RTSP source sends RTCP sender reports that map its RTP clock to its wall clock (NTP); FFmpeg attaches
that mapping to the packets that follow as a producer reference time (``prft`` side data: the packet's
capture time in Unix microseconds). ``CaptureClock`` keeps the latest one and maps any timestamp of the same
stream through it (RTP time is linear between reports). Sources without reports (MPEG-TS over TCP/UDP,
RTMP, files, cameras) and the first frames of an RTSP connection before its first report have only the
receive time: the wall clock when the frame was decoded here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from typing import Literal

WallClockSource = Literal["capture", "receive"]

#: AVProducerReferenceTime starts with ``int64_t wallclock`` (microseconds since the Unix epoch).
_PRFT_WALLCLOCK = struct.Struct("=q")


class CaptureClock:
    """Capture times of one connection's frames from the producer reference times on its packets.

    Feed every demuxed packet to ``on_packet`` (``DecodeOptions.on_packet``); ``captured_at(pts)`` is then
    the UTC time (Unix seconds) at which the frame with presentation timestamp ``pts`` was captured, or None
    while the source has not said (no sender report yet, or a source that sends none).
    """

    def __init__(self) -> None:
        self._anchor: tuple[int, float, Fraction] | None = None  # (packet pts, its capture time s, time base)

    def on_packet(self, packet) -> None:
        """Remember the packet's capture time when it carries one (``prft`` side data)."""
        if packet.pts is None or packet.time_base is None or not packet.has_sidedata("prft"):
            return
        data = bytes(packet.get_sidedata("prft"))
        if len(data) < _PRFT_WALLCLOCK.size:
            return
        wallclock_us = _PRFT_WALLCLOCK.unpack_from(data)[0]
        if wallclock_us > 0:  # a sender whose clock was never set reports 1900/1970: not a capture time
            self._anchor = (packet.pts, wallclock_us / 1e6, packet.time_base)

    def captured_at(self, pts: int | None) -> float | None:
        """UTC seconds of the frame at ``pts`` (stream time-base ticks), or None when unknown."""
        if self._anchor is None or pts is None:
            return None
        anchor_pts, anchor_seconds, time_base = self._anchor
        return anchor_seconds + float((pts - anchor_pts) * time_base)


@dataclass(frozen=True)
class FrameClock:
    """When one frame was captured (UTC Unix seconds; None when the source did not say) and received."""

    captured: float | None
    received: float


@dataclass(frozen=True)
class WindowClock:
    """Wall-clock span of a window.

    Attributes:
        start, end: UTC Unix seconds of its first and last frames.
        source: "capture" when both come from the source's own clock (e.g. RTCP sender reports), "receive"
            when they are the times the frames were decoded here.
    """

    start: float
    end: float
    source: WallClockSource

    @classmethod
    def of(cls, first: FrameClock, last: FrameClock) -> "WindowClock":
        """The span from a window's first and last frames (capture times only when both have one)."""
        if first.captured is not None and last.captured is not None:
            return cls(first.captured, last.captured, "capture")
        return cls(first.received, last.received, "receive")

    def as_datetimes(self) -> tuple[datetime, datetime]:
        return utc(self.start), utc(self.end)


def utc(seconds: float) -> datetime:
    """Unix seconds as an aware UTC datetime (microsecond resolution)."""
    return datetime.fromtimestamp(seconds, timezone.utc)


def iso(seconds: float) -> str:
    """Unix seconds as ISO 8601 UTC with microseconds, e.g. ``2026-12-01T06:04:41.123456Z``."""
    return utc(seconds).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
