"""The frozen-encoder branch of one clip (recipe section ``[frozen]``, ``pipelines/frozen_encoder.toml``): no patch
selection; ``codecpatch.frozen``'s plan picks more evenly spaced whole frames, each is encoded alone with its
full context, and a per-frame compressor brings them to the output-token budget. Rows carry ``token_sizes``."""

from __future__ import annotations

import time

import numpy as np

from ..frozen import FrozenSettings, compress_frames, encode_frames, frame_merge, plan_frozen
from ..patchify import ClipSamples, PatchifyConfig, patches_of, timeline_slots
from ..shards import SampleRow
from ..tokens import TokenSet, encode_pixels
from ._recipe import Recipe


def frozen_settings(recipe: Recipe) -> FrozenSettings:
    f = recipe.frozen
    return FrozenSettings(budget=f.budget, factor=f.factor, compressor=f.compressor, seed=f.seed, merge_after=f.merge_after)


def frozen_tokens(samples: ClipSamples, recipe: Recipe, model=None) -> tuple[TokenSet, int, dict]:
    """Encode and compress one clip the frozen way. ``model``: the recipe's ViT (None: the pixel encoder).

    Returns the TokenSet (positions (t, h, w) with t the sampled-frame index, group = t), the dense patch count
    T x H x W, and {"encode", "compress"} -> seconds."""
    geometry = samples.geometry
    picture = geometry.patch_content_fraction() > 0
    patches = patches_of(samples.canvas_frames(), geometry.patch)
    settings = frozen_settings(recipe)
    plan = plan_frozen(samples.n_samples, int(picture.sum()), settings)
    started = time.perf_counter()
    if model is not None and settings.merge_after:  # compressed inside the ViT: nothing left to do after it
        tokens = encode_frames(model, patches, picture, plan.frames, merge=(settings.merge_after, frame_merge(settings, plan.counts)))
        return tokens, int(np.prod(patches.shape[:3])), {"encode": time.perf_counter() - started, "compress": 0.0}
    if model is not None:
        tokens = encode_frames(model, patches, picture, plan.frames)
    else:
        h, w = np.nonzero(picture)
        frames = np.repeat(plan.frames, len(h))
        positions = np.stack([frames, np.tile(h, len(plan.frames)), np.tile(w, len(plan.frames))], 1)
        tokens = encode_pixels(patches[frames, positions[:, 1], positions[:, 2]], positions, frames, dim=recipe.encoder.dim)
    encoded = time.perf_counter()
    tokens = compress_frames(tokens, plan, settings)
    return tokens, int(np.prod(patches.shape[:3])), {"encode": encoded - started, "compress": time.perf_counter() - encoded}


def frozen_row(samples: ClipSamples, recipe: Recipe, config: PatchifyConfig, tokens: TokenSet, n_dense: int, *,
               video_id: str, source: str, encoder: str, text: str | None = None) -> SampleRow:
    """The shard row: positions' t mapped to the 64-slot timeline as every other mode's rows; token_sizes set."""
    info = samples.info
    slots = timeline_slots(samples.n_samples, config.timeline_slots)
    positions = tokens.positions.numpy().copy()
    positions[:, 0] = slots[positions[:, 0]]
    f = recipe.frozen
    return SampleRow(
        video_id=video_id, source=source, clip_index=info.clip_index, clip_start=info.time_start, clip_end=info.time_end,
        fps=info.fps, width=info.width, height=info.height, codec=info.codec, mode="frozen",
        budget=f"{f.budget:g}", encoder=encoder, compressors=f"{f.compressor}:x{f.factor}" + (f"@{f.merge_after}" if f.merge_after else ""), n_dense=n_dense,
        n_selected=int(tokens.sizes.sum()), tokens=tokens.tokens.numpy().astype(np.float16), positions=positions,
        frame_types=samples.picture_types, text=text, times_estimated=info.times_estimated,
        sizes=tuple(f"{w}x{h}" for w, h in info.sizes), token_sizes=tokens.sizes.numpy().astype(np.int32),
    )


__all__ = ["frozen_row", "frozen_settings", "frozen_tokens"]
