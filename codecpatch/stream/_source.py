"""Reading a live source frame by frame: short probing, read timeouts, reconnects with backoff, and real-time
pacing of files that stand in for a camera."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterator

from ..decode import CodecFrame, DecodeOptions, StreamInfo, VideoReader
from ..decode import is_url
from ..errors import InvalidVideoError, LimitExceededError, NoVideoStreamError, SourceTimeoutError, UnsupportedCodecError, VideoError
from ._clock import CaptureClock, FrameClock, ReceiveAnchor

log = logging.getLogger("codecpatch.stream")


def is_live(source: str) -> bool:
    """True for network URLs and capture devices (they reconnect); False for files (they end)."""
    return (is_url(source) and not source.startswith("file:")) or source.startswith("/dev/")


@dataclass(frozen=True)
class Reconnect:
    """Retry policy when a live source cannot be opened, stalls (no data for the read timeout) or ends.

    Attributes:
        max_attempts: reconnect attempts in a row before giving up (None = forever). The count resets once
            a connection delivers frames.
        backoff_s: first wait; doubled after every failed attempt, up to ``backoff_max_s``.
    """

    max_attempts: int | None = None
    backoff_s: float = 0.5
    backoff_max_s: float = 10.0


@dataclass(frozen=True)
class TimedFrame:
    """A decoded frame with where it came from.

    Attributes:
        frame: the CodecFrame; ``index`` counts frames over the whole stream (across reconnects).
        session: connection number (0 = first; +1 per reconnect).
        decoded_at: ``time.monotonic()`` when the decoder delivered it (after pacing, for real-time files).
        clock: its wall-clock times: captured (when the source says, e.g. RTCP sender reports) and received.
        times_estimated: the connection had no usable timestamps up to this frame, so ``frame.time`` is its
            index over the frame rate (the reader's ``report.timestamps`` is not "pts").
    """

    frame: CodecFrame
    session: int
    decoded_at: float
    clock: FrameClock
    times_estimated: bool = False


class StreamEnded(Exception):
    """The live source could not be (re)connected within the retry policy."""


def live_frames(source: str | os.PathLike, options: DecodeOptions, *, stop: threading.Event, realtime: bool = False,
                reconnect: Reconnect = Reconnect(), on_session: Callable[[int, StreamInfo], None] | None = None,
                on_disconnect: Callable[[str], None] | None = None, name: str | None = None) -> Iterator[TimedFrame]:
    """Yield the frames of ``source`` until it ends (files), ``stop`` is set, or reconnecting gives up.

    A live source (URL or capture device) that fails to open, stalls for ``options.read_timeout``, loses its
    connection or ends is reopened after a backoff; ``on_disconnect(reason)`` is called first so the caller
    can close the open window. A file ends at its end. ``name`` is how logs and errors call the source (e.g.
    without its credentials).

    Raises:
        VideoError: a file cannot be read; or a live source is not a video stream we can use (unknown
            protocol, not a recognised format, no video stream, no decoder, frames over ``options.limits``)
            before it ever connected:
            retrying would not help (so is an RTSP server that answers 404, 401 or 403 at the first attempt);
            or frames over ``options.limits`` at any time (a feed growing past max_pixels is not reconnected).
        StreamEnded: a live source stayed away for ``reconnect.max_attempts`` attempts in a row.
    """
    source = os.fspath(source)
    name = name or source
    live = is_live(source)
    session, failures, frame_offset = -1, 0, 0
    delay = reconnect.backoff_s
    while not stop.is_set():
        delivered = 0
        capture = CaptureClock()  # per connection: each has its own RTP clock
        anchor = ReceiveAnchor()  # ... and its own timestamps
        try:
            with VideoReader(source, replace(options, on_packet=capture.on_packet)) as reader:
                session += 1
                log.info("%s: connected (session %d, %s %dx%d)", name, session, reader.info.codec, reader.info.width, reader.info.height)
                if on_session is not None:
                    on_session(session, reader.info)
                pacer = _Pacer() if realtime else None
                for frame in reader:
                    frame = replace(frame, index=frame_offset + frame.index)
                    if pacer is not None and not pacer.wait_until(frame.time, stop):
                        break
                    delivered += 1
                    received = time.time()
                    estimated = reader.report.timestamps != "pts"
                    if estimated or not (live or realtime):  # a file read at decode speed has no wall-clock time
                        clock = FrameClock(capture.captured_at(frame.pts), received)
                    else:
                        offset, epoch = anchor.at(frame.time, received)
                        clock = FrameClock(capture.captured_at(frame.pts), received, frame.time, offset, epoch)
                    yield TimedFrame(frame, session, time.monotonic(), clock, estimated)
                    if stop.is_set():
                        break
                report = reader.report
                if stop.is_set():
                    reason = "stopped"
                elif report.complete:
                    reason = "the source ended"
                else:
                    reason = f"connection lost ({report.errors[-1] if report.errors else 'reading stopped'})"
        except SourceTimeoutError as error:
            if not live:
                raise
            reason = f"stalled ({error.reason})"
        except VideoError as error:
            if not live:
                raise
            if isinstance(error, LimitExceededError) or (session < 0 and _permanent(error)):  # a limit: at any time
                raise _named(error, name) from None
            reason = f"unavailable ({error.reason})"
        frame_offset += delivered
        if stop.is_set() or not live:
            return
        if on_disconnect is not None:
            on_disconnect(reason)
        if delivered:
            failures, delay = 0, reconnect.backoff_s
        failures += 1
        if reconnect.max_attempts is not None and failures > reconnect.max_attempts:
            raise StreamEnded(f"{name}: {reason}; gave up after {reconnect.max_attempts} failed reconnect "
                              f"attempt{'' if reconnect.max_attempts == 1 else 's'}")
        log.warning("%s: %s; reconnecting in %.1f s (attempt %d%s)", name, reason, delay, failures,
                    f" of {reconnect.max_attempts}" if reconnect.max_attempts is not None else "")
        if stop.wait(delay):
            return
        delay = min(delay * 2, reconnect.backoff_max_s)


#: What servers answer for a path or login that another attempt would not fix (RTSP/HTTP status texts).
_PERMANENT_ANSWERS = ("protocol not found", "404 not found", "401 unauthorized", "403 forbidden")


def _permanent(error: VideoError) -> bool:
    """Errors that another attempt would repeat: no such protocol, not a video, no video stream, no decoder,
    no such path on the server, credentials refused, frames over the recipe's limits."""
    if isinstance(error, (InvalidVideoError, NoVideoStreamError, UnsupportedCodecError, LimitExceededError)):
        return True
    reason = error.reason.lower()
    return any(answer in reason for answer in _PERMANENT_ANSWERS)


def _named(error: VideoError, name: str) -> VideoError:
    """``error`` naming the source as ``name`` (the URL without its credentials) instead of as given; raise it
    ``from None``: the FFmpeg error behind it names the URL as given."""
    named = type(error).__new__(type(error))  # not type(error)(...): subclasses such as LimitExceededError take more
    named.__dict__.update(error.__dict__)
    VideoError.__init__(named, name, error.reason.replace(error.source, name))
    return named


class _Pacer:
    """Holds frames back to their presentation time, so a file plays like a camera."""

    def __init__(self) -> None:
        self._origin: tuple[float, float] | None = None  # (stream time, monotonic time) of the first frame

    def wait_until(self, stream_time: float, stop: threading.Event) -> bool:
        """Sleep until ``stream_time`` is due; False when ``stop`` was set meanwhile."""
        now = time.monotonic()
        if self._origin is None or stream_time < self._origin[0]:
            self._origin = (stream_time, now)
            return not stop.is_set()
        due = self._origin[1] + (stream_time - self._origin[0])
        return not stop.wait(max(0.0, due - now)) if due > now else not stop.is_set()
