"""A cheap look ahead at a file before decoding it: count its video packets without decoding them.

Samplers need the number of frames to spread T samples over a clip, and headers lie about it. Demuxing
alone reads the packet index at a small fraction of decode time; one coded packet is one frame for the
codecs we handle. Decoding stays the ground truth: the collector reconciles any difference.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import av

from ._source import open_container
from ._types import plausible_fps



@dataclass(frozen=True)
class PacketPlan:
    """What demuxing a file says about its video stream.

    Attributes:
        packets: non-empty video packets (frames, for the codecs we handle).
        fps: frame rate from the packet timestamps' span, else the header's, else None.
        complete: False when demuxing stopped on an error (the count is then a lower bound).
    """

    packets: int
    fps: float | None
    complete: bool


def plan_packets(source: str | os.PathLike, timeout: float = 10.0) -> PacketPlan:
    """Demux (without decoding) the first video stream of ``source`` and count its packets.

    Opens ``source`` for this alone; ``VideoReader.plan_packets`` does the same on the reader's own container.
    """
    container = open_container(source, input_format=None, open_timeout=timeout, read_timeout=timeout, options={})
    try:
        return count_packets(container, container.streams.video[0])[0]
    finally:
        container.close()


PacketKey = tuple  # (pos, pts, dts, size) of a demuxed packet: where it lies in the file and what it is


def packet_key(packet: av.Packet) -> PacketKey:
    """What identifies a demuxed packet (to check that a rewound container starts where a fresh one does)."""
    return (packet.pos, packet.pts, packet.dts, packet.size)


def count_packets(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> tuple[PacketPlan, PacketKey | None]:
    """Demux ``stream`` of an open ``container`` to its end without decoding: (the PacketPlan, the key of the
    first packet demuxed, None when there was none). The container is left at its end."""
    count, complete = 0, True
    first: PacketKey | None = None
    timestamps: list[int] = []
    try:
        for packet in container.demux(stream):
            if first is None:
                first = packet_key(packet)
            if packet.size:
                count += 1
                if packet.pts is not None:
                    timestamps.append(packet.pts)
    except av.error.FFmpegError:
        complete = False
    fps = None
    if len(timestamps) >= 2 and stream.time_base:
        span = (max(timestamps) - min(timestamps)) * float(stream.time_base)
        distinct = len(set(timestamps))
        if span > 0 and distinct == len(timestamps):
            fps = (len(timestamps) - 1) / span
    if fps is None and stream.average_rate:
        fps = float(stream.average_rate)
    return PacketPlan(count, plausible_fps(fps), complete), first
