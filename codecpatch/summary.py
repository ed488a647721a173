"""Stream summaries built from decoded frames (what ``codecpatch inspect`` prints).

Pure: consumes CodecFrames (or their per-frame records) and the reader's StreamInfo/DecodeReport; holds
one small record per frame, never pixels, so a long video summarises in constant memory per frame.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Iterable

from .decode import CodecFrame, DecodeReport, StreamInfo


@dataclass(frozen=True)
class FrameRecord:
    """The per-frame line of ``inspect --json``.

    Attributes:
        index: presentation-order index from 0.
        time: seconds (frame-indexed when the stream has no usable timestamps).
        type: picture type ("I", "P", "B", ...).
        key: key-frame flag.
        n_mvs: codec motion vectors exported for the frame.
        motion_source: "codec", "flow" or "none".
        motion_energy: mean block motion magnitude, pixels.
        residual_energy: mean residual, luma levels 0..255 (None without a previous frame).
        width, height: decoded size in pixels.
    """

    index: int
    time: float
    type: str
    key: bool
    n_mvs: int
    motion_source: str
    motion_energy: float
    residual_energy: float | None
    width: int
    height: int

    @staticmethod
    def from_frame(frame: CodecFrame) -> "FrameRecord":
        residual = frame.mean_residual
        return FrameRecord(
            index=frame.index,
            time=round(frame.time, 6),
            type=frame.pict_type,
            key=frame.key_frame,
            n_mvs=frame.n_vectors,
            motion_source=frame.motion_source,
            motion_energy=round(frame.motion_energy, 4),
            residual_energy=None if residual is None else round(residual, 4),
            width=frame.width,
            height=frame.height,
        )


@dataclass(frozen=True)
class StreamSummary:
    """What a user wants to know about a video before processing it.

    Attributes:
        source, container, codec: as opened.
        width, height: size of the first decoded frame; ``sizes`` lists every size seen.
        header_fps: the container's claim; ``fps`` is measured from decoded timestamps when they exist.
        frames: frames actually decoded (``header_frames`` is the container's claim).
        duration_s: frames / fps.
        gop_lengths: frames from each I-frame to the next (the last one up to the end).
        type_counts: decoded frames per picture type.
        motion_sources: frames per motion source.
        mean_motion_energy: mean over frames of the mean block motion magnitude (pixels).
        mean_residual_energy: mean over frames that have one (luma levels), or None.
        timestamps: "pts" or "frame_index".
        complete, packets_skipped, corrupt_frames, errors, warnings: from the DecodeReport.
    """

    source: str
    container: str
    codec: str
    width: int
    height: int
    sizes: list[tuple[int, int]]
    header_fps: float | None
    fps: float | None
    frames: int
    header_frames: int
    duration_s: float | None
    gop_lengths: list[int]
    type_counts: dict[str, int]
    motion_sources: dict[str, int]
    mean_motion_energy: float
    mean_residual_energy: float | None
    timestamps: str
    complete: bool
    packets_skipped: int
    corrupt_frames: int
    errors: list[str]
    warnings: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def gop_lengths(types: Iterable[str]) -> list[int]:
    """Lengths of the runs that start at each I-frame (frames before the first I-frame form a run too)."""
    lengths: list[int] = []
    for picture_type in types:
        if picture_type == "I" or not lengths:
            lengths.append(0)
        lengths[-1] += 1
    return lengths


def measured_fps(records: list[FrameRecord], fallback: float | None) -> float | None:
    """Frames per second from decoded times (robust to a missing last timestamp), else ``fallback``."""
    if len(records) >= 2:
        span = records[-1].time - records[0].time
        if span > 0:
            return (len(records) - 1) / span
    return fallback


def summarize(info: StreamInfo, report: DecodeReport, records: list[FrameRecord]) -> StreamSummary:
    """Build the StreamSummary of a fully (or partially) decoded stream."""
    fps = measured_fps(records, info.header_fps) if report.timestamps == "pts" else info.header_fps
    residuals = [r.residual_energy for r in records if r.residual_energy is not None]
    first = records[0] if records else None
    return StreamSummary(
        source=info.source,
        container=info.container,
        codec=info.codec,
        width=first.width if first else info.width,
        height=first.height if first else info.height,
        sizes=list(report.sizes_seen),
        header_fps=info.header_fps,
        fps=round(fps, 4) if fps else None,
        frames=len(records),
        header_frames=info.header_frames,
        duration_s=round(len(records) / fps, 4) if fps else None,
        gop_lengths=gop_lengths(r.type for r in records),
        type_counts=dict(Counter(r.type for r in records)),
        motion_sources=dict(Counter(r.motion_source for r in records)),
        mean_motion_energy=round(sum(r.motion_energy for r in records) / len(records), 4) if records else 0.0,
        mean_residual_energy=round(sum(residuals) / len(residuals), 4) if residuals else None,
        timestamps=report.timestamps,
        complete=report.complete,
        packets_skipped=report.packets_skipped,
        corrupt_frames=report.corrupt_frames,
        errors=list(report.errors),
        warnings=list(report.warnings),
    )
