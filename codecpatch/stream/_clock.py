"""Wall-clock (UTC) times of live frames: when the source says it captured them, else when they arrived.

An RTSP source sends RTCP sender reports that map its RTP clock to its wall clock (NTP); FFmpeg attaches
that mapping to the packets that follow as a producer reference time (``prft`` side data: the packet's
capture time in Unix microseconds). ``CaptureClock`` keeps the latest one and maps any timestamp of the same
stream through it (RTP time is linear between reports). Sources without reports (MPEG-TS over TCP/UDP,
RTMP, files, cameras) and the first frames of an RTSP connection before its first report have no capture time.
When their frames carry usable timestamps, ``ReceiveAnchor`` maps stream time to wall clock through the
receive time (label "receive_pts"): one offset per connection, lowered whenever a frame arrives earlier than
the mapping says (the least-delayed frame is the best estimate of the capture time) and re-anchored when the
mapping leaves the receive times by more than a bound (timestamps jumped: a restarted sender, or clock drift).
Window spans then equal their stream-time spans exactly, without the decode jitter of receive times. Frames
with neither (no usable timestamps: raw H.264/HEVC elementary streams) have only the receive time: the wall
clock when the frame was decoded here ("receive").
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from typing import Literal

WallClockSource = Literal["capture", "receive_pts", "receive"]

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


class ReceiveAnchor:
    """Wall clock of one connection's frames from their stream times, anchored at receive times.

    ``at(stream_time, received)`` returns the offset (wall clock minus stream time, seconds) and the anchor's
    epoch for that frame. The first frame anchors (offset = received - stream_time). A frame received earlier
    than the mapping says (it cannot have been captured after it arrived: e.g. the burst after probing) lowers
    the offset to its own. A break re-anchors at the frame and starts a new epoch (a window that spans two
    epochs falls back to receive times): timestamps went back, or advanced more than ``max_skew_s`` beyond the
    receive time since the previous frame (a restarted sender, a jump), or the frame arrived more than
    ``max_skew_s`` after the mapping says (drift between the sender's clock and ours).
    """

    def __init__(self, max_skew_s: float = 1.0) -> None:
        self.max_skew_s = max_skew_s
        self._offset: float | None = None
        self._epoch = 0
        self._previous: tuple[float, float] | None = None  # (stream time, received) of the previous frame

    def at(self, stream_time: float, received: float) -> tuple[float, int]:
        """(offset s, epoch) for a frame at ``stream_time`` (s) received at ``received`` (UTC Unix s)."""
        own = received - stream_time
        previous, self._previous = self._previous, (stream_time, received)
        if self._offset is None:
            self._offset = own
            return self._offset, self._epoch
        jumped = stream_time < previous[0] or (stream_time - previous[0]) - (received - previous[1]) > self.max_skew_s
        if jumped or own - self._offset > self.max_skew_s:
            self._offset, self._epoch = own, self._epoch + 1
        elif own < self._offset:
            self._offset = own
        return self._offset, self._epoch


@dataclass(frozen=True)
class FrameClock:
    """When one frame was captured and received (UTC Unix seconds).

    Attributes:
        captured: from the source's own clock (RTCP sender reports); None when the source did not say.
        received: when the frame was decoded here.
        stream_time, offset, epoch: the frame's stream time (s) and its connection's ``ReceiveAnchor`` mapping
            at that frame (wall clock = offset + stream time); None when the frame has no usable timestamps.
    """

    captured: float | None
    received: float
    stream_time: float | None = None
    offset: float | None = None
    epoch: int = 0


@dataclass(frozen=True)
class WindowClock:
    """Wall-clock span of a window.

    Attributes:
        start, end: UTC Unix seconds of its first and last frames.
        source: "capture" when both come from the source's own clock (e.g. RTCP sender reports);
            "receive_pts" when they are stream times mapped through the receive-time anchor (their span is
            the window's stream-time span); "receive" when they are the times the frames were decoded here.
    """

    start: float
    end: float
    source: WallClockSource

    @classmethod
    def of(cls, first: FrameClock, last: FrameClock) -> "WindowClock":
        """The span from a window's first and last frames: capture times when both have one, else their stream
        times through the last frame's anchor offset (the most refined) when both share one anchor epoch, else
        receive times."""
        if first.captured is not None and last.captured is not None:
            return cls(first.captured, last.captured, "capture")
        if (first.offset is not None and last.offset is not None and first.epoch == last.epoch
                and first.stream_time is not None and last.stream_time is not None):
            return cls(last.offset + first.stream_time, last.offset + last.stream_time, "receive_pts")
        return cls(first.received, last.received, "receive")

    def as_datetimes(self) -> tuple[datetime, datetime]:
        return utc(self.start), utc(self.end)


def utc(seconds: float) -> datetime:
    """Unix seconds as an aware UTC datetime (microsecond resolution)."""
    return datetime.fromtimestamp(seconds, timezone.utc)


def iso(seconds: float) -> str:
    """Unix seconds as ISO 8601 UTC with microseconds, e.g. ``2026-12-01T06:04:41.123456Z``."""
    return utc(seconds).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
