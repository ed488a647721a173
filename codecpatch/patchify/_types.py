"""Data types of patchification: what the decoder collected for a clip, and the PatchSet it becomes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._geometry import CanvasGeometry
from ._select import kept_area_fraction


@dataclass(frozen=True)
class ClipInfo:
    """Where a clip sits in its video.

    Attributes:
        source: path of the video (or image).
        clip_index: position of the clip in the video, from 0.
        frame_start, frame_end: decoded frame indices [start, end) the clip spans.
        time_start, time_end: seconds of its first and last decoded frame.
        fps: frames per second used to plan the clips (measured, else header), None if unknown.
        width, height: size of the clip's first decoded frame.
        codec: decoder name.
        times_estimated: the stream has no usable timestamps: times are frame indices over the header's
            or container's frame rate, else over an assumed 25 fps (the decode report's warning says which).
        sizes: (width, height) of the clip's first frame and after each size change, in order (more than one:
            the size changes).
    """

    source: str
    clip_index: int
    frame_start: int
    frame_end: int
    time_start: float
    time_end: float
    fps: float | None
    width: int
    height: int
    codec: str
    times_estimated: bool = False
    sizes: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class ClipSamples:
    """What decoding a clip yields for patchification: the T sampled frames and the codec's energies.

    Block maps are on the grid of the clip's first frame: (gh, gw) = ceil(height, width / block_size).

    Attributes:
        info: the clip.
        geometry: canvas layout of the clip's frames.
        frame_indices: (T,) decoded index of each sampled frame.
        times: (T,) seconds.
        picture_types: T picture types ("I", "P", "B", ...).
        rgb: (T, content_h, content_w, 3) uint8, sampled frames resized to the canvas content box.
        motion_instant: (T, gh, gw) float32 camera-compensated motion magnitude at the sampled frame, px.
        residual_instant: (T, gh, gw) float32 residual at the sampled frame, luma levels.
        motion_accumulated: (T, gh, gw) float32 motion magnitude summed over every decoded frame after the
            previous sample up to and including this one, px.
        residual_accumulated: (T, gh, gw) float32 residual summed the same way, luma levels.
        field_from_previous: (T, gh, gw, 2) float32 displacement composed over those frames, from the sampled
            frame back to the previous sample (source px); zeros for t = 0.
        motion_sources: T motion sources ("codec", "flow", "none").
        block_size: grid cell side, source px.
        n_frames: decoded frames in the clip.
        warnings: anything odd met while collecting.
    """

    info: ClipInfo
    geometry: CanvasGeometry
    frame_indices: np.ndarray
    times: np.ndarray
    picture_types: tuple[str, ...]
    rgb: np.ndarray
    motion_instant: np.ndarray
    residual_instant: np.ndarray
    motion_accumulated: np.ndarray
    residual_accumulated: np.ndarray
    field_from_previous: np.ndarray
    motion_sources: tuple[str, ...]
    block_size: int
    n_frames: int
    warnings: tuple[str, ...] = ()

    @property
    def n_samples(self) -> int:
        return len(self.frame_indices)

    def canvas_frames(self) -> np.ndarray:
        """(T, canvas_h, canvas_w, 3) uint8 sampled frames on the canvas (padding black)."""
        g = self.geometry
        frames = np.zeros((self.n_samples, g.canvas_height, g.canvas_width, 3), np.uint8)
        frames[(slice(None), *g.content_slices)] = self.rgb
        return frames


@dataclass(frozen=True)
class PatchSet:
    """The patches one clip becomes, with their 3-D positions.

    Attributes:
        pixels: (K, 3, P, P) uint8 RGB patches, ordered by (t, h, w).
        positions: (K, 3) int32 (t, h, w): t on the ``timeline_slots`` timeline, h/w patch row/column.
        sample_index: (K,) int32 index into the T sampled frames.
        frame_index: (K,) int64 decoded frame index each patch comes from.
        picture_type: (K,) str picture type of that frame.
        saliency: (K,) float32 fused energy score of the patch (whole-frame keeps included).
        grid: (T, H, W) sampled frames x patch rows x patch columns (the dense token grid).
        timeline: (T,) int32 timeline slot of each sampled frame.
        frame_indices: (T,) decoded frame index of each sampled frame.
        kept: (T, H, W) bool selection mask.
        whole_frames: ((t, reason), ...) sampled frames kept whole and why ("first", "I-frame", "drift" (adaptive),
            "static fallback", "chunk", "image").
        static_fallback: the clip was static and the budget went to uniformly spaced whole frames.
        mode: "codec", "chunk" or "image".
        budget: the budget as given (e.g. "0.125", "8f"): fractions and frames' worth count the patches that
            hold picture (``n_picture``), not the canvas's padding.
        n_budget: the token count the budget allowed.
        info, geometry: the clip and its canvas layout.
    """

    pixels: np.ndarray
    positions: np.ndarray
    sample_index: np.ndarray
    frame_index: np.ndarray
    picture_type: np.ndarray
    saliency: np.ndarray
    grid: tuple[int, int, int]
    timeline: np.ndarray
    frame_indices: np.ndarray
    kept: np.ndarray
    whole_frames: tuple[tuple[int, str], ...]
    static_fallback: bool
    mode: str
    budget: str
    n_budget: int
    info: ClipInfo
    geometry: CanvasGeometry

    @property
    def n_kept(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_dense(self) -> int:
        t, h, w = self.grid
        return t * h * w

    @property
    def n_picture(self) -> int:
        """Patches of the dense grid that hold some picture (letterbox-only patches excluded): what a
        fractional budget is a fraction of."""
        return self.grid[0] * int((self.geometry.patch_content_fraction() > 0).sum())

    @property
    def area_fraction(self) -> float:
        """Share of the clip's picture area (all T sampled frames) the kept patches cover, in [0, 1]."""
        return kept_area_fraction(self.kept, self.geometry.patch_content_fraction())

    @property
    def kept_per_frame(self) -> np.ndarray:
        """(T,) patches kept per sampled frame."""
        return self.kept.sum(axis=(1, 2))
