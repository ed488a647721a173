"""VideoReader: decode a source with PyAV into CodecFrames (types, vectors, motion field, residual, RGB)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Iterator

import av
import cv2
from av.sidedata.sidedata import SideDataContainer
from av.video.reformatter import VideoReformatter
import numpy as np

from ..errors import CorruptVideoError, LimitExceededError, SourceTimeoutError
from ..motion import (
    MOTION_VECTOR_DTYPE,
    BlockMotion,
    OpticalFlowEstimator,
    ResidualEstimator,
    block_motion_from_vectors,
    grid_shape_for,
)
from ._plan import PacketPlan, count_packets, packet_key
from ._source import is_url, open_container
from ._types import (ASSUMED_FPS, CODECS_WITH_VECTORS, CodecFrame, DecodeLimits, DecodeOptions, DecodeReport,
                     MotionSource, StreamInfo, plausible_fps)

_PICT_TYPE_NAMES = {1: "I", 2: "P", 3: "B", 4: "S", 5: "SI", 6: "SP", 7: "BI"}
# Pixel formats whose first plane is 8-bit luma that can be read in place.
_PLANAR_8BIT_LUMA = frozenset(
    {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv410p", "yuv411p", "yuv440p",
     "yuvj440p", "nv12", "nv21", "gray", "yuva420p"}
)
_EMPTY_VECTORS = np.zeros(0, MOTION_VECTOR_DTYPE)
_B_FRAME = 3  # av.video.frame.PictureType.B
_MAX_PENDING_B_FRAMES = 16


def read_frames(source: str | os.PathLike, options: DecodeOptions | None = None, **overrides: Any) -> Iterator[CodecFrame]:
    """Open ``source``, yield its CodecFrames, and close it (also when the caller stops early)."""
    with VideoReader(source, options, **overrides) as reader:
        yield from reader


def probe(source: str | os.PathLike, **overrides: Any) -> StreamInfo:
    """Open ``source`` only to read its StreamInfo (header values; nothing is decoded)."""
    with VideoReader(source, None, **overrides) as reader:
        return reader.info


@dataclass
class _DecodeState:
    """Mutable per-stream state carried from one frame to the next."""

    count: int = 0
    previous_luma: np.ndarray | None = None
    previous_size: tuple[int, int] | None = None
    grid: tuple[int, int] = (0, 0)  # the block grid of previous_size
    factor: int = 1  # the analysis downscale of previous_size
    last_pts: int | None = None
    last_time: float = 0.0
    last_timed_index: int = 0
    frame_indexed: bool = False
    last_anchor: int | None = None  # index of the latest I/P frame: the past reference of what follows
    pending: list = field(default_factory=list)  # B-frames waiting for their future anchor
    flow_field: np.ndarray | None = None  # the last optical-flow estimate (DecodeOptions.flow_every)
    flow_refused: bool = False  # the optical flow refuses frames of previous_size (too small): zero motion


class VideoReader:
    """Decode one video source into CodecFrames.

    Use as a context manager (or call ``close``); iterating it once yields every decoded frame in
    presentation order, then ``report`` says how far decoding got. The container is always closed, on
    exhaustion, on error, or when the caller stops early.

    Args:
        source: local path, URL (rtsp/rtmp/http/tcp/udp/...) or capture device (``/dev/videoN``).
        options: DecodeOptions; keyword ``overrides`` replace single fields (``VideoReader(p, rgb=True)``).

    Raises:
        VideoError subclasses on open (see ``codecpatch.errors``); CorruptVideoError while iterating under
        ``on_error="raise"``; SourceTimeoutError when a read blocks longer than ``read_timeout``.
    """

    _rgb_scaler: VideoReformatter | None = None  # created on the first RGB conversion (see _rgb)
    _vector_dtype: np.dtype | None = None  # PyAV's motion-vector dtype, from the first frame with vectors

    def __init__(self, source: str | os.PathLike, options: DecodeOptions | None = None, **overrides: Any) -> None:
        self.options = replace(options or DecodeOptions(), **overrides)
        self.source = os.fspath(source)
        self.report = DecodeReport()
        self._iterated = False
        check_file_size(self.source, self.options.limits)
        self._open()
        codec_name = self._stream.codec_context.name
        self._export_vectors = self.options.motion in ("auto", "codec") and codec_name in CODECS_WITH_VECTORS
        self._use_flow = self.options.motion == "flow" or (self.options.motion == "auto" and not self._export_vectors)
        self._configure_decoder()
        self.info = self._stream_info(codec_name)
        try:
            check_header_limits(self.info, self._container, self.options.limits)
        except BaseException:
            self.close()
            raise
        self._fps = self.info.header_fps if self._plausible(self.info.header_fps) else self._container_fps()
        self._flow = OpticalFlowEstimator(self.options.flow_preset, self.options.flow_max_side) if self._use_flow else None
        self._residuals = ResidualEstimator()

    # -- public -------------------------------------------------------------------------------------

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the container (idempotent)."""
        if self._container is not None:
            self._container.close()
            self._container = None

    def plan_packets(self) -> PacketPlan:
        """Demux the whole video stream without decoding it (count its packets, its frame rate from their
        timestamps; see ``decode.plan_packets``), then rewind, so that iterating still decodes from the first
        packet: one open of the file serves both the look ahead and the decode.

        Where a rewind cannot be trusted to land exactly where a fresh open starts, the source is opened again
        instead (the result is the same, at the cost of a second open): URLs and devices (not seekable),
        raw elementary streams (.264/.h265: FFmpeg cannot seek them), and any container whose first packet
        after the rewind is not the first packet of the look ahead (e.g. IVF files whose timestamps are all 0,
        where seeking to 0 lands on the last key frame). Call it before iterating.
        """
        if self._iterated:
            raise RuntimeError(f"{self.source}: plan_packets must be called before iterating the reader")
        if self._container is None:
            raise RuntimeError(f"{self.source}: reader is closed")
        if is_url(self.source) or self.source.startswith("/dev/"):
            plan, _ = self._plan_on_new_container()
            return plan
        plan, first = count_packets(self._container, self._stream)
        if first is None or not self._rewind_to(first):
            self._reopen()
        return plan

    def choose_rgb(self, size: tuple[int, int] | None, select) -> None:
        """Set which frames are converted to RGB (``select(index, pict_type)``) and at what (width, height),
        after opening (when they depend on the header or the packet plan); before iterating."""
        self.options = replace(self.options, rgb_size=size, rgb_select=select)

    def _plan_on_new_container(self) -> tuple[PacketPlan, object]:
        container = open_container(self.source, input_format=None, open_timeout=self.options.open_timeout,
                                   read_timeout=self.options.read_timeout, options={})
        try:
            return count_packets(container, container.streams.video[0])
        finally:
            container.close()

    def _rewind_to(self, first: tuple) -> bool:
        """Seek back to the start; True when the first packet demuxed there is ``first`` (and the container is
        left positioned before it again), False when the seek fails or lands elsewhere."""
        try:
            self._container.seek(0, backward=True)
            landed = next(iter(self._container.demux(self._stream)), None)
            if landed is None or packet_key(landed) != first:
                return False
            self._container.seek(0, backward=True)
            return True
        except (av.error.FFmpegError, OSError, StopIteration):
            return False

    def _open(self) -> None:
        self._container = open_container(
            self.source,
            input_format=self.options.input_format,
            open_timeout=self.options.open_timeout,
            read_timeout=self.options.read_timeout,
            options=dict(self.options.container_options),
        )
        self._stream = self._container.streams.video[0]
        # Every frame decoded from this stream's packets carries the stream's time base (PyAV's demux stamps
        # each packet, flush packets included, with it, and decoding hands it to the frame), so it is read
        # once here: ``av_frame.time_base`` builds a Fraction for every frame.
        time_base = self._stream.time_base
        self._time_base = (time_base.numerator, time_base.denominator) if time_base else None

    def _reopen(self) -> None:
        self._container.close()
        self._container = None
        self._open()
        self._configure_decoder()

    def __iter__(self) -> Iterator[CodecFrame]:
        if self._iterated:
            raise RuntimeError(f"{self.source}: a VideoReader can be iterated only once; open a new one")
        self._iterated = True
        return self._frames()

    # -- decoding -----------------------------------------------------------------------------------

    def _frames(self) -> Iterator[CodecFrame]:
        state = _DecodeState()
        try:
            if self._container is None:
                raise RuntimeError(f"{self.source}: reader is closed")
            packets = self._container.demux(self._stream)
            while True:
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except av.error.ExitError as error:
                    raise SourceTimeoutError(self.source, f"no data for {self.options.read_timeout:g} s") from error
                except av.error.FFmpegError as error:
                    # The demuxer cannot go on: end the stream cleanly with what we have.
                    yield from self._flush_pending(state, future_anchor_known=False)
                    self._stop_on_error(f"reading the container failed: {error.strerror or error}", error)
                    return
                if self.options.on_packet is not None:
                    self.options.on_packet(packet)
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError as error:
                    if self.options.on_error == "raise":
                        raise CorruptVideoError(self.source, f"undecodable packet ({error.strerror or error})", state.count) from error
                    self.report.packets_skipped += 1
                    self.report.errors.append(f"packet at dts={packet.dts}: {error.strerror or error}")
                    continue
                for av_frame in decoded:
                    yield from self._in_display_order(av_frame, state)
            yield from self._flush_pending(state, future_anchor_known=False)
            self.report.complete = True
            self._check_header_count()
        finally:
            self.close()

    def _in_display_order(self, av_frame: av.VideoFrame, state: _DecodeState) -> Iterator[CodecFrame]:
        """Hold B-frames back until the next anchor (I/P) arrives, so that their future reference distance
        is known; frames still come out in presentation order."""
        if self._export_vectors and int(av_frame.pict_type) == _B_FRAME:
            state.pending.append(av_frame)
            if len(state.pending) > _MAX_PENDING_B_FRAMES:  # all-B oddities: keep memory bounded
                yield from self._flush_pending(state, future_anchor_known=False)
            return
        yield from self._flush_pending(state, future_anchor_known=True)
        yield self._codec_frame(av_frame, state, future_distance=1)

    def _flush_pending(self, state: _DecodeState, future_anchor_known: bool) -> Iterator[CodecFrame]:
        pending, state.pending = state.pending, []
        for position, av_frame in enumerate(pending):
            distance = len(pending) - position if future_anchor_known else 1
            yield self._codec_frame(av_frame, state, future_distance=distance)

    def _stop_on_error(self, message: str, error: Exception) -> None:
        self.report.errors.append(message)
        if self.options.on_error == "raise":
            raise CorruptVideoError(self.source, message, self.report.frames_decoded) from error

    def _check_header_count(self) -> None:
        announced, decoded = self.info.header_frames, self.report.frames_decoded
        if announced and decoded < announced:
            self.report.warnings.append(
                f"decoded {decoded} frames but the header announces {announced}: the file may be truncated"
            )

    def _codec_frame(self, av_frame: av.VideoFrame, state: _DecodeState, future_distance: int) -> CodecFrame:
        options = self.options
        width, height = av_frame.width, av_frame.height
        limits = options.limits
        if limits.max_frames is not None and state.count >= limits.max_frames:
            raise LimitExceededError(self.source, f"more than {limits.max_frames} decoded frames", "max_frames",
                                     state.count + 1, limits.max_frames)
        if state.previous_size != (width, height):
            check_frame_size(self.source, width, height, limits, "decoded frame")
            if state.previous_size is not None:
                self.report.warnings.append(
                    f"frame size changed at frame {state.count}: {state.previous_size[0]}x{state.previous_size[1]}"
                    f" -> {width}x{height}"
                )
            self.report.sizes_seen.append((width, height))
            state.previous_luma = None  # nothing to predict from across a size change
            state.flow_field = None
            state.previous_size = (width, height)
            state.grid = grid_shape_for(height, width, options.block_size)
            state.factor = self._analysis_factor(width, height)
            state.flow_refused = self._flow is not None and not self._flow.estimates((height // state.factor, width // state.factor), state.grid)
            if state.flow_refused:
                self.report.warnings.append(
                    f"frames of {width}x{height} are too small for optical flow: their motion is zero from frame {state.count}"
                )
        concealed = bool(av_frame.is_corrupt)
        if concealed:
            self.report.corrupt_frames += 1

        grid, factor = state.grid, state.factor
        need_luma = options.residual != "none" or self._use_flow
        luma = _luma(av_frame, factor) if need_luma else None

        vectors: np.ndarray | None = None
        block_motion: BlockMotion | None = None
        motion_source: MotionSource = "none"
        if self._export_vectors:
            side_data = _motion_vector_side_data(av_frame)
            if side_data is None:
                vectors = _EMPTY_VECTORS
            elif self._vector_dtype is None:
                vectors = side_data.to_ndarray()
                self._vector_dtype = vectors.dtype
            else:  # what to_ndarray does, without building its dtype anew (~3 us a frame)
                vectors = np.frombuffer(side_data, self._vector_dtype)
            if options.block_motion:
                past_distance = state.count - state.last_anchor if state.last_anchor is not None else 1
                block_motion = block_motion_from_vectors(vectors, height, width, options.block_size, past_distance, future_distance)
            motion_source = "codec"
        elif self._flow is not None:
            if luma is not None and state.previous_luma is not None and not state.flow_refused:
                if state.flow_field is not None and state.count % options.flow_every:
                    flow_field = state.flow_field  # between estimates: the last one again
                else:
                    flow_field = self._flow.block_field(luma, state.previous_luma, grid, float(factor))
                    if options.flow_every > 1:
                        flow_field.flags.writeable = False  # shared by the frames that reuse it
                    state.flow_field = flow_field
                everywhere, nowhere = np.ones(grid, bool), np.zeros(grid, bool)
                block_motion = BlockMotion(options.block_size, flow_field, everywhere, np.zeros_like(flow_field), nowhere)
                motion_source = "flow"
            else:
                block_motion = BlockMotion.zeros(height, width, options.block_size)

        residual = None
        if luma is not None and state.previous_luma is not None and options.residual != "none":
            stride = options.residual_stride
            cell = options.block_size // factor if stride > 1 else None  # stride 1: the original cells, rows unchanged
            if options.residual == "mc" and block_motion is not None:
                field_in_analysis_pixels = block_motion.toward_previous()  # only read: not copied at factor 1
                if factor != 1:
                    field_in_analysis_pixels = field_in_analysis_pixels / factor
                residual = self._residuals.motion_compensated(luma, state.previous_luma, field_in_analysis_pixels, grid, stride, cell)
            else:
                residual = self._residuals.frame_difference(luma, state.previous_luma, grid, stride, cell)

        pict_type = _PICT_TYPE_NAMES.get(int(av_frame.pict_type), "?")
        rgb = None
        if options.rgb and (options.rgb_select is None or options.rgb_select(state.count, pict_type)):
            size = options.rgb_size or (options.rgb_fit(width, height) if options.rgb_fit is not None else None)
            rgb = self._rgb(av_frame, size)

        frame = CodecFrame(
            index=state.count,
            pts=av_frame.pts,
            time=self._checked_time(av_frame, state),
            pict_type=pict_type,
            key_frame=bool(av_frame.key_frame),
            width=width,
            height=height,
            motion_source=motion_source,
            n_vectors=0 if vectors is None else len(vectors),
            motion_vectors=vectors if options.keep_vectors else None,
            block_motion=block_motion,
            residual_energy=residual,
            rgb=rgb,
            concealed=concealed,
        )
        state.previous_luma = luma
        if frame.pict_type != "B":
            state.last_anchor = state.count
        state.count += 1
        self.report.frames_decoded = state.count
        return frame

    def _rgb(self, av_frame: av.VideoFrame, size: tuple[int, int] | None) -> np.ndarray:
        """(height, width, 3) uint8 RGB of ``av_frame``, at ``size`` (width, height) or its own size.

        One swscale context serves the whole stream: ``VideoFrame.to_ndarray(format=..., width=...)`` makes
        a new one for every frame (PyAV keeps the reformatter on the frame); setting it up again was ~20-30%
        of each conversion (0.3 of 1.3 ms for 720p H.264 to 224x126). The pixels are the same.
        """
        if self._rgb_scaler is None:
            self._rgb_scaler = VideoReformatter()
        width, height = size if size is not None else (None, None)
        return self._rgb_scaler.reformat(av_frame, width=width, height=height, format="rgb24").to_ndarray()

    def _checked_time(self, av_frame: av.VideoFrame, state: _DecodeState) -> float:
        time_s = self._frame_time(av_frame, state)
        allowed = self.options.limits.max_seconds
        if allowed is not None and time_s > allowed:
            raise LimitExceededError(self.source, f"a frame at {time_s:.1f} s (the stream is longer than its limit)",
                                     "max_seconds", time_s, allowed)
        return time_s

    def _frame_time(self, av_frame: av.VideoFrame, state: _DecodeState) -> float:
        """Seconds from the stream start. Falls back to counting frames once timestamps are missing or stop
        increasing (raw streams, IVF with all-zero pts)."""
        pts, index = av_frame.pts, state.count
        time_base = self._time_base  # the frame's (see _open), as (numerator, denominator) in lowest terms
        usable = pts is not None and time_base is not None and (state.last_pts is None or pts > state.last_pts)
        if usable and not state.frame_indexed:
            state.last_pts, state.last_timed_index = pts, index
            # float(pts * time_base) without building Fractions: int / int rounds correctly, so the same float
            state.last_time = pts * time_base[0] / time_base[1]
            return state.last_time
        if not state.frame_indexed:
            state.frame_indexed = True
            self.report.timestamps = "frame_index"
            why = "no timestamps" if pts is None else "timestamps stop increasing"
            rate = f"{self._fps:g} fps" if self._fps else f"an assumed {ASSUMED_FPS:g} fps (no frame rate in the stream or container)"
            self.report.warnings.append(f"{why} from frame {index}: times are estimated from frame indices at {rate}")
        seconds_per_frame = 1.0 / (self._fps or ASSUMED_FPS)
        return state.last_time + (index - state.last_timed_index) * seconds_per_frame

    # -- setup ----------------------------------------------------------------------------------------

    def _configure_decoder(self) -> None:
        context = self._stream.codec_context
        if self._export_vectors:
            context.options = {"flags2": "+export_mvs"}
        thread_type = self.options.thread_type
        if thread_type == "auto":
            # Frame threading drops or alters exported H.264 B-frame vectors from run to run; slice threading
            # decodes clean input the same for any count (damaged input: see DecodeOptions.threads).
            thread_type = "slice"
        if thread_type == "none" or self.options.threads == 1:
            context.thread_count = 1
        else:
            context.thread_type = thread_type.upper()
            context.thread_count = self.options.threads

    def _stream_info(self, codec_name: str) -> StreamInfo:
        stream = self._stream
        rate: Fraction | None = stream.average_rate
        return StreamInfo(
            source=self.source,
            container=self._container.format.name,
            codec=codec_name,
            width=int(stream.codec_context.width or 0),
            height=int(stream.codec_context.height or 0),
            header_fps=float(rate) if rate else None,
            header_frames=int(stream.frames or 0),
            time_base=float(stream.time_base) if stream.time_base else None,
            exports_vectors=codec_name in CODECS_WITH_VECTORS,
        )

    def _analysis_factor(self, width: int, height: int) -> int:
        """Integer downscale for residual/flow: longer side <= analysis_max_side, >= 2 px per block."""
        factor = 1
        while max(width, height) / factor > self.options.analysis_max_side and factor * 2 <= self.options.block_size // 2:
            factor *= 2
        return factor

    def _container_fps(self) -> float | None:
        """Frames over the container's duration, when the header has no usable rate but both are known."""
        frames, duration = self._stream.frames, self._container.duration  # duration in microseconds
        fps = frames / (duration / 1e6) if frames and duration and duration > 0 else None
        return fps if self._plausible(fps) else None

    @staticmethod
    def _plausible(fps: float | None) -> bool:
        return plausible_fps(fps) is not None


def check_file_size(source: str, limits: DecodeLimits) -> None:
    """Refuse a local file larger than ``limits.max_file_mb`` (URLs and devices have no size to check)."""
    if limits.max_file_mb is None or is_url(source) or source.startswith("/dev/"):
        return
    try:
        size_mb = os.path.getsize(source) / 2**20
    except OSError:
        return  # missing or unreadable: opening it says why
    if size_mb > limits.max_file_mb:
        raise LimitExceededError(source, f"file size {size_mb:.1f} MiB", "max_file_mb", size_mb, limits.max_file_mb)


def check_frame_size(source: str, width: int, height: int, limits: DecodeLimits, where: str) -> None:
    """Refuse frames of more than ``limits.max_pixels`` pixels (``where``: "header" or "decoded frame")."""
    if limits.max_pixels is not None and width * height > limits.max_pixels:
        raise LimitExceededError(source, f"{where} size {width}x{height} = {width * height} pixels", "max_pixels",
                                 width * height, limits.max_pixels)


def check_header_limits(info: StreamInfo, container: av.container.InputContainer, limits: DecodeLimits) -> None:
    """Refuse a source whose header announces more than ``limits`` allow (before anything is decoded)."""
    check_frame_size(info.source, info.width, info.height, limits, "header")
    if limits.max_frames is not None and info.header_frames > limits.max_frames:
        raise LimitExceededError(info.source, f"header frame count {info.header_frames}", "max_frames",
                                 info.header_frames, limits.max_frames)
    if limits.max_seconds is not None and container.duration:
        seconds = container.duration / av.time_base
        if seconds > limits.max_seconds:
            raise LimitExceededError(info.source, f"header duration {seconds:.1f} s", "max_seconds", seconds, limits.max_seconds)


def _luma(av_frame: av.VideoFrame, factor: int) -> np.ndarray:
    """(~height / factor, ~width / factor) uint8 luma (factor a power of two), read from the Y plane in place."""
    width, height = av_frame.width, av_frame.height
    if av_frame.format.name in _PLANAR_8BIT_LUMA:
        plane = av_frame.planes[0]
        luma = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:height, :width]
    else:
        luma = av_frame.to_ndarray(format="gray")
    if factor == 1:
        return np.ascontiguousarray(luma)
    while factor > 1:  # OpenCV's area resize has a fast path for exactly 2x; 4x direct is ~8x slower
        luma = cv2.resize(luma, (luma.shape[1] // 2, luma.shape[0] // 2), interpolation=cv2.INTER_AREA)
        factor //= 2
    return luma


def _motion_vector_side_data(av_frame: av.VideoFrame):
    """The frame's MOTION_VECTORS side data, or None.

    ``frame.side_data`` caches a container that points back at the frame: a reference cycle that only a
    full garbage collection frees, so every decoded frame (hundreds of KB) stays alive, RSS grows by
    ~0.6 MB per 720p frame and page faults slow decoding down. A container of our own is freed with the
    frame.
    """
    try:
        return SideDataContainer(av_frame).get("MOTION_VECTORS")
    except TypeError:  # a PyAV whose container constructor differs: use the (leaky) property
        return av_frame.side_data.get("MOTION_VECTORS")
