"""The decode layer's data types: options in, frames and reports out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np

from .._validation import check_choice as _check_choice
from ..motion import BlockMotion, motion_magnitude
from ..motion._flow import MIN_FLOW_SIDE, FlowPreset
from ..motion._residual import RESIDUAL_STRIDES

MotionMode = Literal["auto", "codec", "flow", "none"]
ResidualMode = Literal["mc", "diff", "none"]
ErrorPolicy = Literal["raise", "skip"]
ThreadType = Literal["auto", "slice", "frame", "none"]
MotionSource = Literal["codec", "flow", "none"]

#: Frame rates outside this range (frames per second) are treated as "no usable rate" (e.g. a 1/1000
#: time base reported as 1000 fps).
PLAUSIBLE_FPS = (1.0, 480.0)


def plausible_fps(fps: float | None) -> float | None:
    """``fps`` when it is a usable frame rate (within PLAUSIBLE_FPS), else None."""
    return fps if fps is not None and PLAUSIBLE_FPS[0] <= fps <= PLAUSIBLE_FPS[1] else None

#: Frame rate assumed for a stream with neither timestamps nor a usable rate in its header or container (e.g.
#: IVF with all-zero pts): its times are estimates, and the decode report and shard rows say so.
ASSUMED_FPS = 25.0

#: Decoders for which FFmpeg exports motion vectors with ``flags2=+export_mvs`` (H.264 and the
#: mpegvideo family). Everything else gets pixel-based motion when motion is asked for.
CODECS_WITH_VECTORS = frozenset(
    {"h264", "mpeg1video", "mpeg2video", "mpeg4", "h263", "h263p", "h261", "flv1", "msmpeg4v1", "msmpeg4v2",
     "msmpeg4v3", "wmv1", "wmv2"}
)


@dataclass(frozen=True)
class DecodeLimits:
    """What one source may cost to decode; a source over a limit is refused (``LimitExceededError``) instead of
    taking a worker's memory or hours. Checked from the header before decoding (file size, frame size,
    duration, frame count) and again on decoded frames (headers lie). ``None`` switches a limit off.

    Attributes:
        max_pixels: width x height of one frame (default 8K UHD, 7680 x 4320; a 16000 x 16000 H.264 frame
            needs ~2.7 GB while decoding).
        max_seconds: duration of the source in seconds (default 6 hours).
        max_file_mb: size of a local file in MiB (default 64 GiB).
        max_frames: frames decoded from one source (default 1,000,000: 9.2 hours at 30 fps); every clip of
            the source is bounded by it too.
    """

    max_pixels: int | None = 7680 * 4320
    max_seconds: float | None = 6 * 3600.0
    max_file_mb: float | None = 64 * 1024.0
    max_frames: int | None = 1_000_000

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_seconds", "max_file_mb", "max_frames"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 (or None for no limit), got {value}")


#: No limits at all (the decode layer's default for direct use; pipelines pass their recipe's limits).
NO_LIMITS = DecodeLimits(None, None, None, None)


@dataclass(frozen=True)
class DecodeOptions:
    """What to compute per frame and how to open and decode the source.

    Attributes:
        motion: "auto" uses codec vectors when the codec exports them and optical flow otherwise;
            "codec" uses codec vectors only (frames of other codecs get none); "flow" always estimates from
            pixels; "none" skips motion.
        block_size: side in pixels of the motion/residual grid cells (4, 8 or 16).
        block_motion: build the block motion field from codec vectors. False keeps only the raw vectors
            (cheapest; ``residual="mc"`` then needs to be "diff" or "none").
        residual: "mc" = |frame - motion-compensated previous frame|, "diff" = |frame - previous frame|,
            "none" = skip.
        analysis_max_side: residual and optical flow run on luma downscaled by an integer factor until its
            longer side is at most this many pixels (the factor never exceeds block_size / 2).
        residual_stride: the residual compares every n-th analysis pixel of each axis (1: every pixel; 2: a
            quarter of them, each block still averaging (block / factor / 2)**2 of its pixels, at about a
            third of the cost; see ``ResidualEstimator.sampled_residual``).
        rgb: return the RGB picture per frame (costs more than decoding: leave off unless needed).
        rgb_size: (width, height) to resize RGB to; None keeps each frame's own size (or asks ``rgb_fit``).
        rgb_fit: with ``rgb_size=None``, a function ``(width, height) -> (width, height)`` giving the RGB size
            for a frame of that size (for sources whose size is known only once they are open).
        rgb_select: with ``rgb=True``, a predicate ``(index, pict_type) -> bool`` choosing which frames get
            RGB (e.g. only the frames a sampler wants); None converts every frame.
        keep_vectors: keep the raw structured motion-vector array on each frame.
        thread_type: decoder threading. "auto" is slice threading: clean input decodes the same for every
            thread count, while frame threading changes exported H.264 B-frame vectors from run to run. "frame"
            must be asked for.
        threads: decoder thread count (default 1; 0 = FFmpeg chooses, one per CPU it sees). Damaged input is
            concealed differently with threading off (1) and on (H.264, HEVC: the same for any count >= 2; a
            damaged VP9 clip decoded 76 frames with 1 thread and all 500 with 2; MPEG-2: 2 and 4 threads
            differ), so 0 makes the frames of a damaged file depend on the machine: every default in the
            library (here, ``iter_clip_samples``, the recipes' ``decode_cpus`` and ``stream.decoder_threads``,
            ``transcode_for_vectors``) is 1.
        limits: DecodeLimits refusing sources too large to decode (default: none).
        open_timeout, read_timeout: seconds before opening / a blocking read gives up (network sources).
        on_error: "raise" raises CorruptVideoError at the first undecodable packet; "skip" drops the packet,
            counts it in the report and goes on (a demuxer failure still ends the stream, cleanly).
        input_format: force a demuxer (e.g. "v4l2", "mpegts"); None lets FFmpeg probe (``/dev/video*`` sources
            default to "v4l2").
        container_options: extra FFmpeg format options (e.g. {"probesize": "32768"}).
        on_packet: called with every demuxed video packet before it is decoded (e.g. to read the producer
            reference times an RTSP source attaches from its RTCP sender reports); None = nothing.
        flow_preset: OpenCV DIS preset of the optical-flow fallback ("ultrafast", "fast", "medium").
        flow_max_side: the optical flow runs on the analysis luma halved until its longer side is at most this
            many pixels, never coarser than one flow pixel per block (None, the decode layer's default: on the
            analysis luma itself). DIS then estimates at the same resolution as on the analysis luma and skips
            its full-size refinement: 160 and 80 kept area-matched PSNR within 0.2 dB of None on the HEVC/VP9/AV1
            clips measured, for 5-14% less flow time; ``flow_preset="ultrafast"`` makes the flow ~3x cheaper than
            "fast" at up to -1 dB. Only frames whose motion comes from flow are affected; patchification sets it
            from ``PatchifyConfig.flow_max_side`` (80 since 0.2, a recipe setting in the runs' fingerprint);
            ``benchmarks/flow_fallback.py`` measures the speed and fidelity of each setting.
        flow_every: the optical flow runs on every n-th frame (decoded frame index a multiple of n, and the first
            frame that has a predecessor of its size); the frames between take the last estimate again
            (constant velocity). 1 (default): every frame.
    """

    motion: MotionMode = "auto"
    block_size: int = 8
    block_motion: bool = True
    residual: ResidualMode = "mc"
    analysis_max_side: int = 320
    residual_stride: int = 1
    rgb: bool = False
    rgb_size: tuple[int, int] | None = None
    rgb_select: Callable[[int, str], bool] | None = None
    rgb_fit: Callable[[int, int], tuple[int, int]] | None = None
    keep_vectors: bool = True
    thread_type: ThreadType = "auto"
    threads: int = 1
    open_timeout: float = 10.0
    read_timeout: float = 10.0
    on_error: ErrorPolicy = "raise"
    input_format: str | None = None
    container_options: dict[str, str] = field(default_factory=dict)
    limits: DecodeLimits = NO_LIMITS
    on_packet: Callable[[Any], None] | None = None
    flow_preset: FlowPreset = "fast"
    flow_max_side: int | None = None
    flow_every: int = 1

    def __post_init__(self) -> None:
        _check_choice("motion", self.motion, MotionMode)
        _check_choice("residual", self.residual, ResidualMode)
        _check_choice("on_error", self.on_error, ErrorPolicy)
        _check_choice("thread_type", self.thread_type, ThreadType)
        if self.block_size not in (4, 8, 16):
            raise ValueError(f"block_size must be 4, 8 or 16, got {self.block_size}")
        if self.residual == "mc" and not self.block_motion:
            raise ValueError('residual="mc" needs block_motion=True (use residual="diff" or "none")')
        _check_choice("flow_preset", self.flow_preset, FlowPreset)
        if self.flow_max_side is not None and self.flow_max_side < MIN_FLOW_SIDE:
            raise ValueError(f"flow_max_side must be >= {MIN_FLOW_SIDE} (or None), got {self.flow_max_side}")
        if isinstance(self.flow_every, bool) or not isinstance(self.flow_every, int) or self.flow_every < 1:
            raise ValueError(f"flow_every must be an integer >= 1, got {self.flow_every!r}")
        if self.residual_stride not in RESIDUAL_STRIDES:
            raise ValueError(f"residual_stride must be 1, 2 or 4, got {self.residual_stride}")
        if self.analysis_max_side < 16:
            raise ValueError(f"analysis_max_side must be >= 16, got {self.analysis_max_side}")
        if self.rgb_size is not None and (len(self.rgb_size) != 2 or min(self.rgb_size) <= 0):
            raise ValueError(f"rgb_size must be (width, height) > 0, got {self.rgb_size}")
        if self.open_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("open_timeout and read_timeout must be > 0 seconds")


@dataclass(frozen=True)
class StreamInfo:
    """What the container says about the video stream. Header values can lie: trust decoded frames.

    Attributes:
        source: the path or URL.
        container: FFmpeg demuxer name.
        codec: FFmpeg decoder name ("h264", "hevc", ...).
        width, height: size in the header (0 when unknown).
        header_fps: average frame rate the header claims, or None.
        header_frames: frame count the header claims (0 when it does not say).
        time_base: seconds per pts tick, or None.
        exports_vectors: whether FFmpeg can export motion vectors for this codec.
    """

    source: str
    container: str
    codec: str
    width: int
    height: int
    header_fps: float | None
    header_frames: int
    time_base: float | None
    exports_vectors: bool


@dataclass(frozen=True)
class CodecFrame:
    """One decoded video frame with what the codec knows about it.

    Grids have shape (gh, gw) = (ceil(height / block_size), ceil(width / block_size)).

    Attributes:
        index: position in presentation (output) order, from 0.
        pts: presentation timestamp in stream time-base ticks, None when the stream has none.
        time: seconds from the stream start; ``index / fps`` when the stream has no usable timestamps.
        pict_type: "I", "P", "B" (or "S", "SI", "SP", "BI", "?" for rarer kinds).
        key_frame: the decoder flagged the frame as a key frame.
        width, height: decoded size in pixels (may change mid-stream).
        motion_source: "codec" (exported vectors), "flow" (estimated from pixels) or "none".
        n_vectors: number of codec motion vectors exported for this frame (0 for I-frames and non-codec).
        motion_vectors: (n_vectors,) structured array (``MOTION_VECTOR_DTYPE``) or None when not kept.
        block_motion: per-direction block motion, or None when motion is off.
        residual_energy: (gh, gw) float32 mean absolute luma residual (0..255) against the previous frame,
            or None for the first frame of a run of equal-sized frames or when residual is off.
        rgb: (H, W, 3) uint8 RGB when asked for, else None.
        concealed: the decoder flagged the frame corrupt: damaged data it filled in (``DecodeReport.corrupt_frames``
            counts these frames).
    """

    index: int
    pts: int | None
    time: float
    pict_type: str
    key_frame: bool
    width: int
    height: int
    motion_source: MotionSource
    n_vectors: int
    motion_vectors: np.ndarray | None
    block_motion: BlockMotion | None
    residual_energy: np.ndarray | None
    rgb: np.ndarray | None
    concealed: bool = False

    @property
    def motion_field(self) -> np.ndarray | None:
        """(gh, gw, 2) float32 displacement into the previous frame, pixels (see BlockMotion)."""
        return None if self.block_motion is None else self.block_motion.toward_previous()

    @property
    def motion_energy(self) -> float:
        """Mean block motion magnitude in pixels (0.0 when motion is off)."""
        field_ = self.motion_field
        return 0.0 if field_ is None else float(motion_magnitude(field_).mean())

    @property
    def mean_residual(self) -> float | None:
        """Mean residual energy in luma levels, or None when there was no previous frame."""
        return None if self.residual_energy is None else float(self.residual_energy.mean())


@dataclass
class DecodeReport:
    """How far decoding got. Filled in while iterating; final once the reader is exhausted or closed.

    Attributes:
        frames_decoded: frames yielded so far.
        complete: True once the stream was read to its end without a fatal error.
        packets_skipped: undecodable packets dropped under ``on_error="skip"``.
        corrupt_frames: frames the decoder returned but flagged as corrupt (concealed errors).
        errors: messages of the errors met (skipped packets, or the one that ended decoding).
        timestamps: "pts" when frame times come from the stream, "frame_index" when they are index / fps.
        warnings: oddities worth telling a user (header frame count disagreeing, size changes, ...).
        sizes_seen: distinct (width, height) decoded, in order of appearance.
        frames_expected: frames the source should hold: the larger of the header's count and the packets a
            demux pass found (0 when neither says); set by callers that know it (``expect_frames``).
        stopped_early: the caller stopped reading on purpose before the end (it had every frame it needed).
    """

    frames_decoded: int = 0
    complete: bool = False
    packets_skipped: int = 0
    corrupt_frames: int = 0
    errors: list[str] = field(default_factory=list)
    timestamps: Literal["pts", "frame_index"] = "pts"
    warnings: list[str] = field(default_factory=list)
    sizes_seen: list[tuple[int, int]] = field(default_factory=list)
    frames_expected: int = 0
    stopped_early: bool = False

    def expect_frames(self, *counts: int) -> None:
        """Raise ``frames_expected`` to the largest of ``counts`` (header frame count, demuxed packets)."""
        self.frames_expected = max(self.frames_expected, *counts)

    @property
    def partial(self) -> bool:
        """True when the decode is known to have lost something (see ``partial_reasons``)."""
        return bool(self.partial_reasons())

    def partial_reasons(self) -> list[str]:
        """Why the decode is partial, in words: empty when every expected frame was decoded cleanly."""
        reasons = []
        if not (self.complete or self.stopped_early):
            reasons.append("decoding stopped before the end of the stream")
        if self.packets_skipped:
            reasons.append(f"{self.packets_skipped} undecodable packets skipped")
        if self.corrupt_frames:
            reasons.append(f"{self.corrupt_frames} frames concealed by the decoder")
        if not self.stopped_early and self.frames_decoded < self.frames_expected:
            reasons.append(f"{self.frames_decoded} of {self.frames_expected} expected frames decoded")
        return reasons
