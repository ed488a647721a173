"""One video through the whole pipeline: patchify -> encode -> compress -> shard rows. Runs in a worker
(or in-process); returns rows or a recorded failure, never raises for bad input."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Callable

import numpy as np

from ..decode import DecodeReport, redact_text
from ..errors import VideoError
from ..patchify import ClipSamples, PatchifyConfig, PatchSet, iter_clip_samples, patchify_samples
from ..shards import SampleRow
from ..tokens import TokenSet, compress, encode_pixels, encode_with_vit, load_vit
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
        partial: why the decode was partial (empty when it was complete); the rows say so too
            (``complete`` = False) unless the recipe's ``limits.partial`` rejected them.
        flagged: the input is to be listed as partial in the run's stats (``limits.partial = "flag"``).
    """

    video_id: str
    rows: list[SampleRow] = field(default_factory=list)
    error: tuple[str, str, str] | None = None
    stage_seconds: dict = field(default_factory=dict)
    frames: int = 0
    n_dense: int = 0
    n_patches: int = 0
    n_tokens: int = 0
    partial: list[str] = field(default_factory=list)
    flagged: bool = False


def recipe_decoder_threads(recipe: Recipe) -> int:
    """FFmpeg decoder threads of every decode of a recipe, in-process or in a Ray worker alike (one per
    declared decode CPU): the same settings everywhere, so rows never depend on where a video ran."""
    return max(1, int(recipe.execution.decode_cpus))


def patchify_config(recipe: Recipe) -> PatchifyConfig:
    """The recipe's PatchifyConfig ([patchify] and [clips])."""
    return recipe.patchify_config


def _vit(recipe: Recipe):
    """The ViT of a recipe, loaded once per worker process."""
    key = (recipe.encoder.path, recipe.encoder.xray)
    if key not in _MODELS:
        _MODELS[key] = load_vit(recipe.encoder.path, **recipe.encoder.xray_overrides)
    return _MODELS[key]


_WIDTHS: dict = {}


def limit_threads(count: int) -> None:
    """Hold torch and OpenCV to ``count`` threads (0 leaves them alone). Their default, one per core, makes
    concurrent work contend: two Ray workers on two cores, or a stream's windows against its decode thread
    (on 2 cores, ApET took 97 ms per 720p window instead of 22 ms, and seconds while other work ran)."""
    if count <= 0:
        return
    import cv2
    import torch

    cv2.setNumThreads(count)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)


def token_dim(recipe: Recipe) -> int:
    """Width of the tokens this recipe writes. For a ViT it is read from the checkpoint on the CPU and the
    model is not kept: the process asking (e.g. the driver of a Ray run) need not hold it on a GPU."""
    if recipe.encoder.name == "vit":
        key = (recipe.encoder.path, recipe.encoder.xray)
        if key in _MODELS:
            return _MODELS[key].config.dim
        if key not in _WIDTHS:
            _WIDTHS[key] = load_vit(recipe.encoder.path, device="cpu", **recipe.encoder.xray_overrides).config.dim
        return _WIDTHS[key]
    return recipe.encoder.dim or 3 * recipe.patchify.patch ** 2


def encoder_name(recipe: Recipe) -> str:
    return recipe.encoder.spec


@dataclass
class ClipResult:
    """One clip after patchify, encode and compress.

    Attributes:
        row: the shard row.
        tokens: the compressed TokenSet (torch tensors, as a model would consume them).
        stage_seconds: {"patchify", "encode", "compress"} -> seconds.
    """

    row: SampleRow
    tokens: TokenSet
    stage_seconds: dict


def process_clip(samples: ClipSamples, recipe: Recipe, config: PatchifyConfig, *, video_id: str, source: str,
                 text: str | None = None, stages: list[str] | None = None, encoder: "ClipEncoder | None" = None) -> ClipResult:
    """Patchify, encode and compress one clip's samples into a shard row. Raises on failure; the caller
    learns the stage it was in from ``stages`` (each stage's name is appended as it starts)."""
    stages = stages if stages is not None else []
    stages.append("patchify")
    started = time.perf_counter()
    patches = patchify_samples(samples, config)
    seconds = {"patchify": time.perf_counter() - started}
    stages.append("encode+compress")
    if encoder is None:
        encoder = partial(_encode_patches, recipe)
    tokens, encode_seconds = encoder(patches)  # local, or a separate encode stage (e.g. a GPU actor)
    seconds.update(encode_seconds)
    info = patches.info
    row = SampleRow(
        video_id=video_id, source=source, clip_index=info.clip_index, clip_start=info.time_start,
        clip_end=info.time_end, fps=info.fps, width=info.width, height=info.height, codec=info.codec,
        mode=patches.mode, budget=patches.budget, encoder=encoder_name(recipe), compressors=recipe.compress,
        n_dense=patches.n_dense, n_selected=patches.n_kept, tokens=tokens.tokens.numpy().astype(np.float16),
        positions=tokens.positions.numpy(), frame_types=samples.picture_types,
        pixels=patches.pixels if recipe.output.store_pixels else None,  # every selected patch
        text=text, times_estimated=info.times_estimated, sizes=tuple(f"{w}x{h}" for w, h in info.sizes),
    )
    return ClipResult(row, tokens, seconds)


ClipEncoder = Callable[[PatchSet], "tuple[TokenSet, dict]"]


def encode_and_compress(recipe: Recipe, pixels, positions, sample_index, grid) -> tuple[TokenSet, dict]:
    """The encode stage: the recipe's encoder, then its compressor chain. Returns the TokenSet and
    {"encode", "compress"} -> seconds. Inputs as in PatchSet: pixels (K, 3, P, P) uint8, positions (K, 3)."""
    started = time.perf_counter()
    if recipe.encoder.name == "vit":
        tokens = encode_with_vit(_vit(recipe), pixels, positions, sample_index, grid)
    else:
        tokens = encode_pixels(pixels, positions, sample_index, dim=recipe.encoder.dim)
    encoded = time.perf_counter()
    tokens = compress(tokens, recipe.chain)
    return tokens, {"encode": encoded - started, "compress": time.perf_counter() - encoded}


def _encode_patches(recipe: Recipe, patches: PatchSet) -> tuple[TokenSet, dict]:
    return encode_and_compress(recipe, patches.pixels, patches.positions, patches.sample_index, patches.geometry.grid)


def process_video(item: InputVideo, recipe: Recipe, decoder_threads: int | None = None, encoder: ClipEncoder | None = None) -> VideoResult:
    """Patchify, encode and compress every clip of one video. Bad input becomes ``result.error``.

    ``decoder_threads`` caps FFmpeg's decoder threads (None = the recipe's, ``recipe_decoder_threads(recipe)``;
    give another value only to study its effect: rows of damaged files may then differ); ``encoder``
    replaces the local encode + compress (a separate encode stage). Rows and messages name the source
    with its credentials redacted; a partial decode is marked on every row (``complete`` = False) and in
    ``result.partial``, or rejected, as ``recipe.limits.partial`` says."""
    result = VideoResult(item.video_id)
    config = patchify_config(recipe)
    threads = recipe_decoder_threads(recipe) if decoder_threads is None else decoder_threads
    source = item.public_path
    report = DecodeReport()
    stages = ["decode"]
    timer = time.perf_counter()
    try:
        for samples in iter_clip_samples(item.path, config, decoder_threads=threads, limits=recipe.limits.decode_limits(),
                                         report=report):
            result.stage_seconds["decode+select"] = result.stage_seconds.get("decode+select", 0.0) + time.perf_counter() - timer
            clip = process_clip(samples, recipe, config, video_id=item.video_id, source=source, text=item.text, stages=stages,
                                encoder=encoder)
            for name, seconds in clip.stage_seconds.items():
                result.stage_seconds[name] = result.stage_seconds.get(name, 0.0) + seconds
            result.rows.append(replace(clip.row, frames_decoded=samples.n_frames))
            result.frames += samples.n_frames
            result.n_dense += clip.row.n_dense
            result.n_patches += clip.row.n_selected
            result.n_tokens += clip.tokens.n_tokens
            stages.append("decode")
            timer = time.perf_counter()
        if not result.rows:
            result.error = ("decode", "no_frames", f"{source}: no frame could be decoded")
        else:
            _mark_completeness(result, report, recipe.limits.partial, source)
    except VideoError as error:
        result.rows, result.error = [], (stages[-1], error.kind, redact_text(str(error), item.path))
    except Exception as error:  # a bug or an unexpected library error: record it, do not kill the run
        result.rows = []
        message = f"{item.path}: {error} | {traceback.format_exc(limit=3)[-500:]}"
        result.error = (stages[-1], type(error).__name__, redact_text(message, item.path))
    return result


def _mark_completeness(result: VideoResult, report: DecodeReport, policy: str, source: str) -> None:
    """Write the decode's completeness on every row; apply the recipe's policy to a partial decode."""
    result.partial = report.partial_reasons()
    complete = not result.partial
    result.rows = [replace(row, packets_skipped=report.packets_skipped, complete=complete) for row in result.rows]
    result.flagged = bool(result.partial) and policy == "flag"
    if result.partial and policy == "reject":
        result.rows = []
        result.error = ("decode", "partial_decode", f"{source}: partial decode rejected (limits.partial = reject): "
                                                    + "; ".join(result.partial))
