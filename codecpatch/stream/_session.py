"""A live source decoded on a background thread into windows, handed to the consumer over a bounded queue
with a declared policy for falling behind; the consumer turns each window into tokens."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Iterator, Literal

from ..decode import CodecFrame, DecodeOptions, StreamInfo, is_url, plausible_fps
from ..decode import redact  # re-exported (it moved to the decode layer)
from ..patchify import PatchifyConfig, content_size, decode_options, window_samples
from ..pipeline import ClipPipeline, ClipResult, ErrorPolicy, Recipe, limit_threads, record_and_continue
from ._clock import FrameClock, WindowClock
from ._source import Reconnect, StreamEnded, is_live, live_frames
from ._window import WindowPolicy, Windower

log = logging.getLogger("codecpatch.stream")

WhenBehind = Literal["auto", "drop_oldest", "block"]
#: How many of the latest dropped window numbers and disconnect reasons the counters keep.
_KEEP_LATEST = 100


@dataclass(frozen=True)
class FrameWindow:
    """The decoded frames of one window.

    Attributes:
        index: window number over the stream (continues across reconnects and restarts).
        frames: the frames, in presentation order.
        session: connection number the frames came from.
        last_decoded_at: ``time.monotonic()`` when its last frame was decoded (latency starts here).
        complete: False when a disconnect, the end of the source or a stop cut it short, or the decoder concealed
            one of its frames (damaged data: ``CodecFrame.concealed``).
        codec, fps: of the connection the frames came from (fps None when the stream gives no usable rate).
        clock: UTC times of its first and last frames and where they come from ("capture" / "receive_pts" /
            "receive").
        times_estimated: some of its frames had no usable timestamps (times are frame indices over the rate).
    """

    index: int
    frames: tuple[CodecFrame, ...]
    session: int
    last_decoded_at: float
    complete: bool
    codec: str = ""
    fps: float | None = None
    clock: WindowClock | None = None
    times_estimated: bool = False


@dataclass(frozen=True)
class StreamWindowResult:
    """One processed window.

    Attributes:
        window: where it came from (its frames are released; ``window.frames`` is empty).
        n_frames: decoded frames in the window; time_start / time_end: stream times (s) of its first and last.
        clip: the shard row, the compressed TokenSet and per-stage seconds (None when it failed: see error).
        error: (stage, kind, message) when processing the window failed.
        ready_at: ``time.monotonic()`` when the tokens were ready.
    """

    window: FrameWindow
    n_frames: int
    time_start: float
    time_end: float
    clip: ClipResult | None
    error: tuple[str, str, str] | None
    ready_at: float

    @property
    def latency(self) -> float:
        """Seconds from the window's last frame decoded to its tokens ready."""
        return self.ready_at - self.window.last_decoded_at


@dataclass
class SessionCounters:
    """What the decode side has seen so far (read by the consumer; written by the decode thread)."""

    frames: int = 0
    windows: int = 0
    dropped: int = 0
    dropped_indices: deque = field(default_factory=lambda: deque(maxlen=_KEEP_LATEST))  # the latest ones
    sessions: int = 0
    disconnect_count: int = 0
    disconnects: deque = field(default_factory=lambda: deque(maxlen=_KEEP_LATEST))  # the latest reasons
    ended: str = ""
    gave_up: bool = False  # the live source stayed away for max_reconnects attempts
    started_at: float | None = None  # time.monotonic() when decoding started
    first_frame_at: float | None = None  # ... and when the first frame came out

    @property
    def startup_seconds(self) -> float | None:
        """Seconds from opening the source to its first decoded frame (probing included)."""
        if self.started_at is None or self.first_frame_at is None:
            return None
        return self.first_frame_at - self.started_at


_END = object()


class StreamSession:
    """Decode ``source`` on a background thread, cut it into windows and queue them (at most ``queue_size``).

    Iterate ``windows()`` for raw FrameWindows or ``results()`` for processed ones; both end when the
    source ends (files), reconnecting gives up, or ``stop()`` was called and the queue is drained.

    When the consumer falls behind, ``when_behind="drop_oldest"`` discards the oldest queued window (counted
    in ``counters.dropped``), keeping latency bounded; ``"block"`` stops decoding until there is room
    (back-pressure: a live sender then buffers or drops on its side); ``"auto"`` drops for live sources and
    real-time files, and blocks for a file read as fast as it decodes (nothing is lost there).

    Starting a session sets torch's and OpenCV's thread counts to ``recipe.stream.threads`` (process-wide).
    A window that fails goes to ``on_error`` (default ``record_and_continue``: ``result.error``; pass
    codecpatch.pipeline.reraise to have ``process`` raise).
    """

    def __init__(self, source: str | os.PathLike, recipe: Recipe, *, stream_id: str | None = None, first_window: int = 0,
                 on_error: ErrorPolicy = record_and_continue, pipeline: ClipPipeline | None = None) -> None:
        self.source = os.fspath(source)
        self.public_source = redact(self.source)  # what rows and logs show (no credentials)
        self.recipe = recipe
        self.stream_id = stream_id or default_stream_id(self.source)
        self.pipeline = pipeline or ClipPipeline(recipe)
        self.config: PatchifyConfig = self.pipeline.config
        self.on_error = on_error
        s = recipe.stream
        self.policy = WindowPolicy(by=s.window, seconds=s.window_seconds, min_seconds=s.min_window_seconds,
                                   max_seconds=s.max_window_seconds)
        self.counters = SessionCounters()
        self._queue: queue.Queue = queue.Queue(maxsize=s.queue)
        self._stop = threading.Event()
        self._next_window = first_window
        self._abandoned = False  # the consumer has gone: the decode thread must not wait for it
        self._thread = threading.Thread(target=self._decode, name=f"decode {self.stream_id}", daemon=True)
        self._started = False
        self._failure: BaseException | None = None
        behind = s.when_behind
        if behind == "auto":
            behind = "drop_oldest" if is_live(self.source) or s.realtime else "block"
        self.when_behind: str = behind

    # -- control --------------------------------------------------------------------------------------

    def start(self) -> "StreamSession":
        if not self._started:
            self._started = True
            limit_threads(self.recipe.stream.threads)
            self._thread.start()
            self._warm_up()  # while the decode thread opens the source
        return self

    def stop(self) -> None:
        """Stop reading: the open window is flushed as a last (incomplete) window, queued ones still come out."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def __enter__(self) -> "StreamSession":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Stop, release queued windows and wait (bounded) for the decode thread and its connection to end."""
        self.stop()
        self._abandon()
        if self._started:
            self._thread.join(timeout=self._grace_seconds())

    def _grace_seconds(self) -> float:
        """How long a stopped decoder may stay blocked in an open or a read before it is left behind."""
        s = self.recipe.stream
        return max(s.open_timeout, s.read_timeout) + 1.0

    def _abandon(self) -> None:
        self._abandoned = True
        while True:  # free the queue, so that a decoder waiting to put sees room or the flag
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def _warm_up(self) -> None:
        """Load the encoder and run it and the compressors once on a few blank patches, so that the first
        window does not pay for model loading and first-call set-up (measured: ~0.3 s of a pixel encoder's
        first window; seconds for a ViT loaded from disk)."""
        try:
            self.pipeline.warm_up()
        except Exception as error:  # only an optimisation: the first window will say what is wrong
            log.debug("%s: warm-up failed: %s", self.public_source, error)

    # -- consuming --------------------------------------------------------------------------------------

    def windows(self, poll_s: float = 0.25) -> Iterator[FrameWindow | None]:
        """Queued windows in order; yields None every ``poll_s`` while waiting (so callers can rotate shards or
        check clocks). Ends when the source ends, reconnecting gives up, or after ``stop()`` once the queue is
        drained; leaving the loop early stops the session. Raises what ended the decode thread (a file that
        cannot be read, a source that cannot be a video)."""
        self.start()
        grace_until = None
        try:
            while True:
                try:
                    item = self._queue.get(timeout=poll_s)
                except queue.Empty:
                    if self._stop.is_set():  # a decoder blocked in an open or a read: give it its timeout, no more
                        grace_until = grace_until or time.monotonic() + self._grace_seconds()
                        if time.monotonic() > grace_until:
                            log.warning("%s: decoder did not stop within its timeouts; leaving it", self.public_source)
                            return
                    yield None
                    continue
                if item is _END:
                    if self._failure is not None:
                        raise self._failure
                    return
                yield item
        finally:  # normal end, an exception, or the caller left the loop: release the decoder either way
            self.stop()
            self._abandon()

    def results(self) -> Iterator[StreamWindowResult]:
        """Processed windows (patchify, encode, compress on the caller's thread), in order."""
        for window in self.windows():
            if window is not None:
                yield self.process(window)

    def process(self, window: FrameWindow) -> StreamWindowResult:
        """Turn one window into tokens and a shard row; failures are returned, not raised."""
        frames = window.frames
        stages = ["decode"]  # the window's frames into clip samples (decoding itself ran on the decode thread)
        clip, error = None, None
        try:
            started = time.perf_counter()
            samples = window_samples(frames, self.config, source=self.public_source, codec=window.codec, fps=window.fps,
                                     clip_index=window.index, times_estimated=window.times_estimated)
            if samples is None:
                raise ValueError("window without frames")
            selected = time.perf_counter()
            clip = self.pipeline.process(samples, video_id=self.stream_id, source=self.public_source, stages=stages)
            clip.stage_seconds["decode"] = selected - started
            if window.clock is not None:
                start, end = window.clock.as_datetimes()
                clip = replace(clip, row=replace(clip.row, wallclock_start=start, wallclock_end=end, wallclock_source=window.clock.source))
        except Exception as failure:  # the policy decides: record (one bad window must not end the stream) or raise
            error = self.on_error(failure, stages[-1], self.source, f"{self.public_source} window {window.index}")
        released = replace(window, frames=())
        return StreamWindowResult(released, len(frames), frames[0].time, frames[-1].time, clip, error, time.monotonic())

    # -- decode thread ------------------------------------------------------------------------------------

    def _decode_options(self) -> DecodeOptions:
        s = self.recipe.stream
        config = self.config
        container_options = {}
        if is_url(self.source):
            container_options = {"probesize": str(s.probesize), "analyzeduration": str(int(s.analyzeduration_s * 1e6))}
        if self.source.startswith(("rtsp://", "rtsps://")) and s.rtsp_transport != "auto":
            container_options["rtsp_transport"] = s.rtsp_transport
        return decode_options(
            config, rgb_fit=lambda width, height: content_size(width, height, config),
            open_timeout=s.open_timeout, read_timeout=s.read_timeout, threads=s.decoder_threads,
            container_options=container_options, limits=replace(self.recipe.limits.decode_limits(), max_seconds=None, max_frames=None),
        )

    def _decode(self) -> None:
        s = self.recipe.stream
        windower = Windower(self.policy)
        connection = {"session": 0, "codec": "", "fps": None}
        last_decoded_at = 0.0
        clocks: dict[int, FrameClock] = {}  # frame index -> wall-clock times, for the frames of the open window
        estimated: set[int] = set()  # indices of the open window's frames without usable timestamps

        def close_window(frames: list[CodecFrame] | None, complete: bool, decoded_at: float) -> None:
            if frames:
                clock = WindowClock.of(clocks[frames[0].index], clocks[frames[-1].index])
                times_estimated = any(frame.index in estimated for frame in frames)
                for frame in frames:
                    clocks.pop(frame.index, None)
                    estimated.discard(frame.index)
                complete = complete and not any(frame.concealed for frame in frames)
                self._enqueue(FrameWindow(self._next_window, tuple(frames), connection["session"], decoded_at, complete,
                                          connection["codec"], connection["fps"], clock, times_estimated))
                self._next_window += 1

        def on_disconnect(reason: str) -> None:
            self.counters.disconnect_count += 1
            self.counters.disconnects.append(reason)
            close_window(windower.flush(), False, last_decoded_at)

        def on_session(session: int, info: StreamInfo) -> None:
            self.counters.sessions = session + 1
            connection.update(session=session, codec=info.codec, fps=plausible_fps(info.header_fps or None))

        self.counters.started_at = time.monotonic()
        try:
            reconnect = Reconnect(s.max_reconnects, s.backoff_s, s.backoff_max_s)
            for timed in live_frames(self.source, self._decode_options(), stop=self._stop, realtime=s.realtime,
                                     reconnect=reconnect, on_session=on_session, on_disconnect=on_disconnect,
                                     name=self.public_source):
                clocks[timed.frame.index] = timed.clock
                if timed.times_estimated:
                    estimated.add(timed.frame.index)
                finished = windower.add(timed.frame)
                if finished:  # ends with this frame (seconds mode) or with the one before (a key frame cut)
                    close_window(finished, True, timed.decoded_at if finished[-1] is timed.frame else last_decoded_at)
                last_decoded_at = timed.decoded_at
                if self.counters.first_frame_at is None:
                    self.counters.first_frame_at = timed.decoded_at
                self.counters.frames += 1
            close_window(windower.flush(), not self._stop.is_set(), last_decoded_at)
            self.counters.ended = "stopped" if self._stop.is_set() else "source ended"
        except StreamEnded as ended:
            self.counters.ended = str(ended)
            self.counters.gave_up = True
            log.error("%s", ended)
        except BaseException as failure:  # handed to the consumer, which raises it
            self._failure = failure
            self.counters.ended = f"failed: {failure}"
        finally:
            self._put(_END)

    def _put(self, item) -> bool:
        """Put ``item``, waiting for room unless the consumer has gone (then it is discarded: False)."""
        while not self._abandoned:
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _enqueue(self, window: FrameWindow) -> None:
        self.counters.windows += 1
        if self.when_behind == "block":
            self._put(window)  # waits for the consumer (back-pressure)
            return
        while not self._abandoned:
            try:
                self._queue.put_nowait(window)
                return
            except queue.Full:
                try:
                    oldest = self._queue.get_nowait()
                except queue.Empty:
                    continue
                self.counters.dropped += 1
                self.counters.dropped_indices.append(oldest.index)
                log.warning("%s: processing is behind; dropped window %d", self.public_source, oldest.index)


def default_stream_id(source: str) -> str:
    """A readable id for a source: the URL without credentials or query, or the file or device path."""
    return redact(source).split("?", 1)[0]
