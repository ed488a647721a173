"""Codec patchification (OneVision-Encoder style): the codec decides which patches become tokens.

``patchify_video(path, PatchifyConfig(...))`` yields one PatchSet per clip. The pieces compose: the
collector (``iter_clip_samples``) is the only part that decodes; ``patchify_samples`` is pure.
"""

from __future__ import annotations

import os
from typing import Iterator

from ._collect import iter_clip_samples, window_samples
from ._config import Budget, PatchifyConfig
from ._geometry import CanvasGeometry, native_geometry, square_geometry
from ._patchify import codec_selection, patch_scores, patchify_samples
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
    "native_geometry",
    "patch_scores",
    "patchify_samples",
    "patchify_video",
    "square_geometry",
    "window_samples",
]
