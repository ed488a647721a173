"""Codec patchification (OneVision-Encoder style): the codec decides which patches become tokens.

``patchify_video(path, PatchifyConfig(...))`` yields one PatchSet per clip. The pieces compose: the
collector (``iter_clip_samples``, ``window_samples``, ``decode_options``) is the only part that decodes;
``patchify_samples`` is pure. The collector is imported on first use, so ``import codecpatch.patchify`` for
the pure functions does not load PyAV.
"""

from __future__ import annotations

import os
from typing import Iterator

from ._config import Budget, PatchifyConfig
from ._geometry import CanvasGeometry, canvas_geometry, native_geometry, patches_of, square_geometry, sum_pool
from ._patchify import codec_selection, patch_scores, patchify_samples
from ._select import kept_area_fraction, random_patches, timeline_slots, uniform_frames
from ._types import ClipInfo, ClipSamples, PatchSet


def patchify_video(source: str | os.PathLike, config: PatchifyConfig | None = None) -> Iterator[PatchSet]:
    """Decode ``source`` once and yield the PatchSet of each of its clips."""
    from ._collect import iter_clip_samples

    config = config or PatchifyConfig()
    for samples in iter_clip_samples(source, config):
        yield patchify_samples(samples, config)


#: The decoding side, imported on first use (it loads PyAV).
_COLLECTOR = ("IMAGE_SUFFIXES", "content_size", "decode_options", "image_samples", "iter_clip_samples", "window_samples")


def __getattr__(name: str):
    if name in _COLLECTOR:
        from . import _collect

        return getattr(_collect, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "IMAGE_SUFFIXES",
    "Budget",
    "CanvasGeometry",
    "canvas_geometry",
    "content_size",
    "decode_options",
    "image_samples",
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
    "sum_pool",
    "timeline_slots",
    "uniform_frames",
    "window_samples",
]
