"""One video through the whole pipeline: patchify -> encode -> compress -> shard rows. Runs in a worker
(or in-process); returns rows or a recorded failure, never raises for bad input."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field

import numpy as np

from ..errors import VideoError
from ..patchify import Budget, PatchifyConfig, iter_clip_samples, patchify_samples
from ..shards import SampleRow
from ..tokens import compress, encode_pixels, encode_with_vit, load_vit, parse_xray
from ._inputs import InputVideo
from ._recipe import Recipe

_MODELS: dict = {}


@dataclass
class VideoResult:
    """What processing one input produced.

    Attributes:
        video_id: the input's id.
        rows: one SampleRow per clip.
        error: (stage, kind, message) when the input failed.
        stage_seconds: time per stage, summed over clips.
        frames: decoded frames; n_dense / n_patches / n_tokens: token counts summed over clips.
    """

    video_id: str
    rows: list[SampleRow] = field(default_factory=list)
    error: tuple[str, str, str] | None = None
    stage_seconds: dict = field(default_factory=dict)
    frames: int = 0
    n_dense: int = 0
    n_patches: int = 0
    n_tokens: int = 0


def patchify_config(recipe: Recipe) -> PatchifyConfig:
    p = recipe.patchify
    return PatchifyConfig(mode=p.mode, budget=Budget.parse(p.budget), frames=p.frames, size=p.size, max_side=p.max_side,
                          patch=p.patch, energy=p.energy, normalise=p.normalise, camera=p.camera, keep_i_frames=p.keep_i_frames,
                          refresh=p.refresh, clip_seconds=recipe.clips.seconds, clip_frames=recipe.clips.frames)


def _vit(recipe: Recipe):
    """The ViT of a recipe, loaded once per worker process."""
    key = (recipe.encoder.path, recipe.encoder.xray)
    if key not in _MODELS:
        _MODELS[key] = load_vit(recipe.encoder.path, **parse_xray(recipe.encoder.xray))
    return _MODELS[key]


def token_dim(recipe: Recipe) -> int:
    """Width of the tokens this recipe writes."""
    if recipe.encoder.name == "vit":
        return _vit(recipe).config.dim
    return recipe.encoder.dim or 3 * recipe.patchify.patch ** 2


def encoder_name(recipe: Recipe) -> str:
    if recipe.encoder.name == "vit":
        return f"vit:{recipe.encoder.path}" + (f"+xray:{recipe.encoder.xray}" if recipe.encoder.xray else "")
    return f"pixel:{recipe.encoder.dim}" if recipe.encoder.dim else "pixel"


def process_video(item: InputVideo, recipe: Recipe, decoder_threads: int = 0) -> VideoResult:
    """Patchify, encode and compress every clip of one video. Bad input becomes ``result.error``.

    ``decoder_threads`` caps FFmpeg's decoder threads (0 = FFmpeg decides; 1 in a one-CPU worker)."""
    result = VideoResult(item.video_id)
    config = patchify_config(recipe)
    stage = "decode"
    timer = time.perf_counter()

    def spent(name: str) -> None:
        nonlocal timer
        now = time.perf_counter()
        result.stage_seconds[name] = result.stage_seconds.get(name, 0.0) + now - timer
        timer = now

    try:
        for samples in iter_clip_samples(item.path, config, decoder_threads=decoder_threads):
            spent("decode+select")
            stage = "patchify"
            patches = patchify_samples(samples, config)
            spent("patchify")
            stage = "encode"
            if recipe.encoder.name == "vit":
                tokens = encode_with_vit(_vit(recipe), patches.pixels, patches.positions, patches.sample_index, patches.geometry.grid)
            else:
                tokens = encode_pixels(patches.pixels, patches.positions, patches.sample_index, dim=recipe.encoder.dim)
            spent("encode")
            stage = "compress"
            tokens = compress(tokens, recipe.compress)
            spent("compress")
            info = patches.info
            result.rows.append(SampleRow(
                video_id=item.video_id, source=item.path, clip_index=info.clip_index, clip_start=info.time_start,
                clip_end=info.time_end, fps=info.fps, width=info.width, height=info.height, codec=info.codec,
                mode=patches.mode, budget=patches.budget, encoder=encoder_name(recipe), compressors=recipe.compress,
                n_dense=patches.n_dense, n_selected=patches.n_kept, tokens=tokens.tokens.numpy().astype(np.float16),
                positions=tokens.positions.numpy(), frame_types=samples.picture_types,
                pixels=patches.pixels if recipe.output.store_pixels else None,  # every selected patch
                text=item.text,
            ))
            result.frames += samples.n_frames
            result.n_dense += patches.n_dense
            result.n_patches += patches.n_kept
            result.n_tokens += tokens.n_tokens
            stage = "decode"
        if not result.rows:
            result.error = ("decode", "no_frames", f"{item.path}: no frame could be decoded")
    except VideoError as error:
        result.rows, result.error = [], (stage, error.kind, str(error))
    except Exception as error:  # a bug or an unexpected library error: record it, do not kill the run
        result.rows = []
        result.error = (stage, type(error).__name__, f"{item.path}: {error} | {traceback.format_exc(limit=3)[-500:]}")
    return result
