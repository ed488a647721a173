"""Codec patchification (OneVision-Encoder style): the codec decides which patches become tokens.

``patchify_video(path, PatchifyConfig(...))`` yields one PatchSet per clip. The pieces compose: the
collector (``iter_clip_samples``) is the only part that decodes; ``patchify_samples`` is pure.
"""

from __future__ import annotations

import os
from typing import Iterator

from ._collect import iter_clip_samples, window_samples
from ._config import Budget, PatchifyConfig
from ._geometry import CanvasGeometry, native_geometry, patches_of, square_geometry
from ._patchify import codec_selection, patch_scores, patchify_samples
from ._select import kept_area_fraction, random_patches, timeline_slots, uniform_frames
from ._types import ClipInfo, ClipSamples, PatchSet


def patchify_video(source: str | os.PathLike, config: PatchifyConfig | None = None) -> Iterator[PatchSet]:
    """Decode ``source`` once and yield the PatchSet of each of its clips."""
    config = config or PatchifyConfig()
    for samples in iter_clip_samples(source, config):
        yield patchify_samples(samples, config)


__all__ = [
    "Budget",
    "CanvasGeometry",
    "ClipInfo",
    "ClipSamples",
    "PatchSet",
    "PatchifyConfig",
    "codec_selection",
    "iter_clip_samples",
    "kept_area_fraction",
    "native_geometry",
    "patch_scores",
    "patches_of",
    "patchify_samples",
    "patchify_video",
    "random_patches",
    "square_geometry",
    "timeline_slots",
    "uniform_frames",
    "window_samples",
]
