"""Decoding side of patchification: walk a video once and gather, per clip, what the patchifier needs.

Only sampled frames are converted to RGB (at the canvas content size); every other frame contributes only
its block-level motion and residual, accumulated into the next sample. Memory is bounded by one clip's
T samples, whatever the video's length.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from ..decode import NO_LIMITS, CodecFrame, DecodeLimits, DecodeOptions, DecodeReport, VideoReader
from ..errors import InvalidVideoError, VideoNotFoundError
from ..motion import grid_shape_for
from ._config import PatchifyConfig
from ._energy import compose_fields, object_motion_magnitude
from ._geometry import CanvasGeometry, canvas_geometry
from ._sampling import chunk_bounds, plan_clips, uniform_samples
from ._types import ClipInfo, ClipSamples

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def decode_options(config: PatchifyConfig, **settings) -> DecodeOptions:
    """The DecodeOptions patchification needs under ``config`` (RGB frames; in codec mode block motion and
    residual on its ``block_size`` grid, none otherwise; damaged packets skipped), plus the caller's
    ``settings`` (timeouts, threads, limits, RGB size or selection, container options). Files (here) and
    live streams (codecpatch.stream) decode with these same options."""
    codec_mode = config.mode == "codec"
    return DecodeOptions(block_size=config.block_size, residual_stride=config.residual_stride, flow_max_side=config.flow_max_side or None,
                         rgb=True, keep_vectors=False, on_error="skip",
                         motion="auto" if codec_mode else "none", residual="mc" if codec_mode else "none", **settings)


def content_size(width: int, height: int, config: PatchifyConfig) -> tuple[int, int]:
    """(width, height) of a ``width`` x ``height`` frame's picture on the canvas (its RGB is converted to this)."""
    geometry = canvas_geometry(width, height, config)
    return geometry.content_width, geometry.content_height


def iter_clip_samples(
    source: str | os.PathLike, config: PatchifyConfig, *, timeout: float = 10.0, frame_indices: Sequence[int] | None = None,
    decoder_threads: int = 1, limits: DecodeLimits = NO_LIMITS, report: DecodeReport | None = None,
) -> Iterator[ClipSamples]:
    """Decode ``source`` once and yield one ClipSamples per clip, in order.

    ``frame_indices`` (codec mode) replaces the uniform sampling with explicit decoded frame indices and
    makes the whole video one clip (e.g. to score another tool's frame choice on the same frames).
    ``decoder_threads``: FFmpeg's decoder threads, 1 as `codecpatch patchify` and the default recipe decode (a
    damaged file's frames depend on it: ``DecodeOptions.threads``; 0 = one per CPU, which the machine decides).

    Raises the decode layer's VideoError subclasses for unreadable input (LimitExceededError for a source
    over ``limits``, checked before decoding). Undecodable packets are skipped (and reported in the samples'
    warnings); a stream that ends early yields the clips it reached. ``report``, when given, is filled with
    the decode's DecodeReport once decoding ends (how complete it was; ``frames_expected`` from the header
    and the packet count).
    """
    source = os.fspath(source)
    if Path(source).suffix.lower() in IMAGE_SUFFIXES:
        yield image_samples(source, config)
        return
    # One open: the reader's header is the probe (limits refuse before the demux pass), its look ahead the
    # packet plan (it rewinds, or reopens where a rewind is not exact: see VideoReader.plan_packets).
    options = decode_options(config, open_timeout=timeout, read_timeout=timeout, threads=decoder_threads, limits=limits)
    with VideoReader(source, options) as reader:
        header = reader.info
        plan = reader.plan_packets()
        if config.mode == "image":
            clips = [(config.image_frame, config.image_frame + 1)]
        else:
            clips = plan_clips(plan.packets, plan.fps, config)
        collector = _Collector(source, config, clips, plan.fps)
        if frame_indices is not None:
            if config.mode != "codec":
                raise ValueError("frame_indices applies to codec mode only")
            collector.clips = clips = [(0, max(plan.packets, max(frame_indices) + 1))]
            collector.set_samples(frame_indices)
        # Sampled frames are converted straight to the canvas content size (swscale); a frame of another size
        # (the header was wrong, or the size changes) is resized again on arrival.
        reader.choose_rgb(content_size(header.width, header.height, config) if header.width and header.height else None,
                          collector.wants_rgb)
        collector.codec = reader.info.codec
        for frame in reader:
            collector.times_estimated = reader.report.timestamps != "pts"
            yield from collector.add(frame)
            if collector.done:
                reader.report.stopped_early = True
                break
        collector.report_problems(reader.report.errors, reader.report.warnings)
        if report is not None:
            reader.report.expect_frames(header.header_frames, plan.packets)
            if not plan.complete:
                reader.report.errors.append("demuxing stopped on an error: the file is damaged or cut")
                reader.report.complete = False
            report.__dict__.update(reader.report.__dict__)
    yield from collector.finish()


def image_samples(path: str, config: PatchifyConfig) -> ClipSamples:
    """A still image as a one-frame clip (t = 0, no motion)."""
    if not Path(path).exists():
        raise VideoNotFoundError(path, "no such file")
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise InvalidVideoError(path, "not a readable image")
    height, width = bgr.shape[:2]
    geometry = canvas_geometry(width, height, config)
    rgb = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (geometry.content_width, geometry.content_height), interpolation=cv2.INTER_AREA)
    grid = grid_shape_for(height, width, config.block_size)
    zeros = np.zeros((1, *grid), np.float32)
    return ClipSamples(
        info=ClipInfo(path, 0, 0, 1, 0.0, 0.0, None, width, height, "image"), geometry=geometry,
        frame_indices=np.zeros(1, np.int64), times=np.zeros(1), picture_types=("I",), rgb=rgb[None],
        motion_instant=zeros, residual_instant=zeros, motion_accumulated=zeros, residual_accumulated=zeros,
        field_from_previous=np.zeros((1, *grid, 2), np.float32), motion_sources=("none",), block_size=config.block_size,
        n_frames=1,
    )


@dataclass
class _Sample:
    index: int
    time: float
    pict_type: str
    rgb: np.ndarray
    motion_instant: np.ndarray
    residual_instant: np.ndarray
    motion_accumulated: np.ndarray
    residual_accumulated: np.ndarray
    field_from_previous: np.ndarray
    motion_source: str


@dataclass
class _ClipState:
    start: int
    end: int
    geometry: CanvasGeometry
    grid: tuple[int, int]
    first_time: float
    last_time: float = 0.0
    frames: int = 0
    concealed: int = 0  # frames the decoder filled in (damaged data)
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (width, height) at the start and after each change
    samples: list[_Sample] = field(default_factory=list)
    chunk_choice: dict[int, _Sample] = field(default_factory=dict)  # chunk -> chosen frame (chunk mode)


class _Collector:
    """Streaming accumulator: fed frames in order, emits ClipSamples as clips complete."""

    def __init__(self, source: str, config: PatchifyConfig, clips: list[tuple[int, int]], fps: float | None) -> None:
        self.source, self.config, self.clips, self.fps = source, config, clips, fps
        self.times_estimated = False  # frame times counted from frame indices (no usable timestamps)
        self.codec = ""
        self.done = not clips
        self.warnings: list[str] = []
        self._clip_number = 0
        self.first_clip_index = 0  # reported clip_index = first_clip_index + position in self.clips
        self._clip: _ClipState | None = None
        self._sample_set = self._plan_samples(0)
        self._chunks = self._plan_chunks(0)
        self._chunk_has_i: set[int] = set()
        self._extra_frames = 0
        self._reset_gap(None)

    # -- planning ---------------------------------------------------------------------------------

    def set_samples(self, frame_indices: Sequence[int]) -> None:
        self._sample_set = set(int(i) for i in frame_indices)
        self.done = False

    def _plan_samples(self, clip_number: int) -> set[int]:
        if not self.clips or self.config.mode != "codec":
            return set(range(*self.clips[clip_number])) if self.clips and self.config.mode == "image" else set()
        start, end = self.clips[clip_number]
        return set(uniform_samples(start, end, self.config.frames).tolist())

    def _plan_chunks(self, clip_number: int) -> np.ndarray | None:
        if not self.clips or self.config.mode != "chunk":
            return None
        return chunk_bounds(*self.clips[clip_number], self.config.frames)

    def _chunk_of(self, index: int) -> int:
        return int(np.searchsorted(self._chunks, index, side="right")) - 1

    def _chunk_middle(self, chunk: int) -> int:
        return int((self._chunks[chunk] + self._chunks[chunk + 1] - 1) // 2)

    def wants_rgb(self, index: int, pict_type: str) -> bool:
        """Decode-time predicate: convert this frame to RGB? Only for frames that may become samples."""
        if self.done or index >= self.clips[-1][1]:
            return False
        clip_number = self._clip_number + (1 if index >= self.clips[self._clip_number][1] else 0)
        if self.config.mode == "chunk":
            chunks = self._chunks if clip_number == self._clip_number else self._plan_chunks(clip_number)
            chunk = int(np.searchsorted(chunks, index, side="right")) - 1
            middle = int((chunks[chunk] + chunks[chunk + 1] - 1) // 2)
            has_i = (clip_number, chunk) in self._chunk_has_i
            return index == middle or (pict_type == "I" and not has_i)
        samples = self._sample_set if clip_number == self._clip_number else self._plan_samples(clip_number)
        return index in samples

    # -- streaming ----------------------------------------------------------------------------------

    def add(self, frame: CodecFrame) -> Iterator[ClipSamples]:
        if frame.index >= self.clips[-1][1]:
            self._extra_frames += 1
            return
        if frame.index >= self.clips[self._clip_number][1]:
            yield from self._finish_clip()
            self._clip_number += 1
            self._sample_set = self._plan_samples(self._clip_number)
            self._chunks = self._plan_chunks(self._clip_number)
        if frame.index < self.clips[self._clip_number][0]:
            return  # before the clip (image mode on a later frame): decode only
        clip = self._clip
        if clip is None:
            start, end = self.clips[self._clip_number]
            geometry = canvas_geometry(frame.width, frame.height, self.config)
            clip = self._clip = _ClipState(start, end, geometry, grid_shape_for(frame.height, frame.width, self.config.block_size), frame.time)
        clip.frames += 1
        clip.concealed += frame.concealed
        clip.last_time = frame.time
        if not clip.sizes or clip.sizes[-1] != (frame.width, frame.height):
            clip.sizes.append((frame.width, frame.height))
        if self.config.mode == "codec":
            self._accumulate(frame, clip)
        elif self.config.mode == "chunk":
            self._consider_for_chunk(frame, clip)
        elif frame.rgb is not None:
            clip.samples.append(self._sample(frame, clip, *(np.zeros(clip.grid, np.float32),) * 4, np.zeros((*clip.grid, 2), np.float32)))
            self.done = True

    def _reset_gap(self, grid: tuple[int, int] | None) -> None:
        self._gap_motion = None if grid is None else np.zeros(grid, np.float32)
        self._gap_residual = None if grid is None else np.zeros(grid, np.float32)
        self._gap_field = None if grid is None else np.zeros((*grid, 2), np.float32)
        self._gap_size: tuple[int, int] | None = None

    def _accumulate(self, frame: CodecFrame, clip: _ClipState) -> None:
        grid = clip.grid
        if self._gap_motion is None or self._gap_motion.shape != grid:
            self._reset_gap(grid)
        field_now = frame.motion_field
        if field_now is None:
            field_now, valid = np.zeros((*grid, 2), np.float32), np.zeros(grid, bool)
        elif frame.motion_source == "codec":
            valid = frame.block_motion.has_past | frame.block_motion.has_future
        else:
            valid = np.ones(field_now.shape[:2], bool)
        residual = frame.residual_energy if frame.residual_energy is not None else np.zeros(field_now.shape[:2], np.float32)
        size = (frame.width, frame.height)
        # The size changed inside the clip: resample onto the clip's grid (each map on its own: without motion
        # the field is already zeros on the clip's grid while the residual is on the frame's).
        if field_now.shape[:2] != grid:
            ratio = np.float32(clip.geometry.source_width / frame.width)
            field_now = cv2.resize(field_now, grid[::-1], interpolation=cv2.INTER_LINEAR) * ratio
            valid = cv2.resize(valid.astype(np.uint8), grid[::-1], interpolation=cv2.INTER_NEAREST).astype(bool)
        if residual.shape != grid:
            residual = cv2.resize(residual, grid[::-1], interpolation=cv2.INTER_LINEAR)
        if self._gap_size is not None and self._gap_size != size:
            self._gap_field[:] = 0.0  # no motion chain across a size change
        self._gap_size = size
        motion = object_motion_magnitude(field_now, valid, self.config.camera)
        self._gap_motion += motion
        self._gap_residual += residual
        self._gap_field = compose_fields(field_now, self._gap_field, self.config.block_size)
        if frame.index in self._sample_set and frame.rgb is not None:
            clip.samples.append(self._sample(frame, clip, motion, residual, self._gap_motion, self._gap_residual, self._gap_field))
            self._reset_gap(grid)
            self._gap_size = size

    def _consider_for_chunk(self, frame: CodecFrame, clip: _ClipState) -> None:
        if frame.rgb is None:
            return
        chunk = self._chunk_of(frame.index)
        key = (self._clip_number, chunk)
        zeros = np.zeros(clip.grid, np.float32)
        sample = self._sample(frame, clip, zeros, zeros, zeros, zeros, np.zeros((*clip.grid, 2), np.float32))
        if frame.pict_type == "I" and key not in self._chunk_has_i:
            self._chunk_has_i.add(key)
            clip.chunk_choice[chunk] = sample  # the chunk's I-frame wins over its middle
        elif chunk not in clip.chunk_choice:
            clip.chunk_choice[chunk] = sample

    def _sample(self, frame: CodecFrame, clip: _ClipState, motion, residual, gap_motion, gap_residual, gap_field) -> _Sample:
        g = clip.geometry
        rgb = frame.rgb
        if rgb.shape[:2] != (g.content_height, g.content_width):
            rgb = cv2.resize(rgb, (g.content_width, g.content_height), interpolation=cv2.INTER_AREA)
        return _Sample(frame.index, frame.time, frame.pict_type, rgb, motion.copy(), residual.copy(), gap_motion.copy(),
                       gap_residual.copy(), np.asarray(gap_field, np.float32).copy(), frame.motion_source)

    # -- ending ---------------------------------------------------------------------------------------

    def report_problems(self, errors: list[str], warnings: list[str]) -> None:
        self.warnings += [f"decode: {e}" for e in errors[:5]] + [f"decode: {w}" for w in warnings if "header announces" not in w]

    def finish(self) -> Iterator[ClipSamples]:
        if self._extra_frames:
            self.warnings.append(f"{self._extra_frames} decoded frames beyond the {self.clips[-1][1]} packets planned were not sampled")
        yield from self._finish_clip()

    def _finish_clip(self) -> Iterator[ClipSamples]:
        clip, self._clip = self._clip, None
        if clip is None:
            return
        samples = clip.samples if self.config.mode != "chunk" else [clip.chunk_choice[c] for c in sorted(clip.chunk_choice)]
        warnings = list(self.warnings)
        planned = len(self._sample_set) if self.config.mode == "codec" else (len(self._chunks) - 1 if self._chunks is not None else 1)
        if len(samples) < planned:
            warnings.append(f"clip {self._clip_number}: {len(samples)} of {planned} planned samples decoded (the stream ended early)")
        if clip.concealed:  # no decode error, but not the source's picture: said clip by clip, as the clips are yielded
            warnings.append(f"decode: {clip.concealed} of the clip's {clip.frames} frames concealed by the decoder (damaged data)")
        if not samples:
            return
        info = ClipInfo(self.source, self.first_clip_index + self._clip_number, clip.start, clip.start + clip.frames, clip.first_time, clip.last_time,
                        self.fps, clip.geometry.source_width, clip.geometry.source_height, self.codec,
                        times_estimated=self.times_estimated, sizes=tuple(clip.sizes))
        yield ClipSamples(
            info=info, geometry=clip.geometry,
            frame_indices=np.array([s.index for s in samples], np.int64),
            times=np.array([s.time for s in samples]),
            picture_types=tuple(s.pict_type for s in samples),
            rgb=np.stack([s.rgb for s in samples]),
            motion_instant=np.stack([s.motion_instant for s in samples]),
            residual_instant=np.stack([s.residual_instant for s in samples]),
            motion_accumulated=np.stack([s.motion_accumulated for s in samples]),
            residual_accumulated=np.stack([s.residual_accumulated for s in samples]),
            field_from_previous=np.stack([np.zeros_like(samples[0].field_from_previous)] + [s.field_from_previous for s in samples[1:]]),
            motion_sources=tuple(s.motion_source for s in samples),
            block_size=self.config.block_size, n_frames=clip.frames, warnings=tuple(warnings),
        )


def window_samples(frames: Sequence[CodecFrame], config: PatchifyConfig, *, source: str, codec: str, fps: float | None,
                   clip_index: int, times_estimated: bool = False) -> ClipSamples | None:
    """The ClipSamples of one window of consecutive decoded frames (a live stream's GOP or N seconds), or None
    when the window has no frame.

    The frames must carry RGB (any size: it is resized to the canvas content) and, in codec mode, their
    block motion and residual; indices stay the stream's own, so the clip reports where it lies in the stream.
    Sampling is the same as for a file clip of those frames: ``config.frames`` uniform samples (codec mode),
    one per chunk (chunk mode), or the window's first frame (image mode). ``times_estimated`` says the frames'
    times are indices over a frame rate (the source had no usable timestamps); it is carried to the row.
    """
    if not frames:
        return None
    start, end = frames[0].index, frames[-1].index + 1
    if config.mode == "image":
        config = replace(config, image_frame=start)
    collector = _Collector(source, config, [(start, end)], fps)
    collector.codec = codec
    collector.first_clip_index = clip_index
    collector.times_estimated = times_estimated
    for frame in frames:
        for _ in collector.add(frame):  # one clip only: nothing is emitted before finish()
            pass
        if collector.done:
            break
    return next(iter(collector.finish()), None)
