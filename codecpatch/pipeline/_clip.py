"""One clip through patchify -> encode -> compress -> a shard row, built once from a recipe.

``ClipPipeline(recipe)`` holds what every clip of a run shares: the parsed PatchifyConfig, the encoder (a
ViT loaded once per process), the parsed compressor chain, the token width, the decode settings and the
warm-up. The batch worker, the live stream, the ``patchify`` / ``encode`` commands and the Python API all
use it; nothing else builds these parts.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from ..decode import DecodeLimits, DecodeReport
from ..patchify import ClipSamples, PatchifyConfig, PatchSet, canvas_geometry, iter_clip_samples, patchify_samples

if TYPE_CHECKING:  # the token side loads torch, the shards pyarrow, the recipe pydantic: imported where they run, so that
    # patchifying loads none of them (ClipPipeline.whole_videos)
    from ..shards import SampleRow
    from ..tokens import TokenSet
    from ._recipe import Recipe

#: Loaded ViTs of this process: (path, xray) -> model. A worker loads its recipe's model once.
_MODELS: dict = {}
#: Token widths read from checkpoints on the CPU (the driver of a Ray run need not hold the model).
_WIDTHS: dict = {}
#: The overrides of ``ClipPipeline.whole_videos``'s recipe: the defaults with one clip per video.
WHOLE_VIDEOS = {"clips.seconds": 0}

#: An encode stage: a PatchSet -> (compressed TokenSet, {"encode", "compress"} -> seconds). Local by default;
#: a Ray run with ``execution.encode_gpus`` > 0 passes one that calls its GPU actors.
ClipEncoder = Callable[[PatchSet], "tuple[TokenSet, dict]"]


@dataclass
class ClipResult:
    """One clip after patchify, encode and compress.

    Attributes:
        row: the shard row.
        tokens: the compressed TokenSet (torch tensors, as a model would consume them).
        stage_seconds: {"patchify", "encode", "compress"} -> seconds.
        patches: the PatchSet the tokens came from.
        encoded: the encoder's TokenSet before compression (None when a remote encode stage ran).
    """

    row: SampleRow
    tokens: TokenSet
    stage_seconds: dict
    patches: PatchSet | None = None
    encoded: TokenSet | None = None


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


class ClipPipeline:
    """The stages of one recipe, built once: ``process(samples)`` turns one clip's samples into a row.

    Attributes:
        recipe: the recipe it was built from.
        config: its PatchifyConfig ([patchify] and [clips]).
        limits: its DecodeLimits ([limits]).
        chain: its compressor chain, parsed.
        encoder_spec: the encoder as rows name it (pixel, pixel:D, vit:PATH[+xray:...]).
        decoder_threads: FFmpeg decoder threads of every decode (one per declared decode CPU), the same
            in-process and in a Ray worker, so rows never depend on where a video ran.
    """

    def __init__(self, recipe: Recipe, *, encoder: ClipEncoder | None = None) -> None:
        self._recipe = recipe
        self.config = recipe.patchify_config
        self.limits = recipe.limits.decode_limits()
        self.decoder_threads = max(1, int(recipe.execution.decode_cpus))
        self._remote = encoder
        self._texts = None  # (text embeddings (Q, D), keep fraction, vision projection) for DUET T2V

    @classmethod
    def whole_videos(cls) -> "ClipPipeline":
        """The pipeline of the default recipe with one clip per video (``WHOLE_VIDEOS``: what ``codecpatch
        patchify VIDEO`` runs without a recipe or a recipe flag), built without validating that recipe: its
        config, limits and decoder threads are the library's defaults, PatchifyConfig(), DecodeLimits() and 1,
        which the recipe's defaults are defined as (tests/test_cli_flags.py checks that they agree). The
        recipe itself is built on first use of ``recipe``, so patchifying never imports the recipe model
        (pydantic: ~80 ms of a command's start-up)."""
        pipeline = cls.__new__(cls)
        pipeline._recipe = None
        pipeline.config = PatchifyConfig()
        pipeline.limits = DecodeLimits()
        pipeline.decoder_threads = 1
        pipeline._remote = None
        pipeline._texts = None
        return pipeline

    @property
    def recipe(self) -> Recipe:
        """The recipe this pipeline runs (``whole_videos``'s is validated here, on first use)."""
        if self._recipe is None:
            from ._recipe import load_recipe

            self._recipe = load_recipe(None, WHOLE_VIDEOS)
        return self._recipe

    @property
    def chain(self) -> list[tuple[str, float, str]]:
        """The recipe's compressor chain, parsed (see ``Recipe.chain``)."""
        return self.recipe.chain

    @property
    def encoder_spec(self) -> str:
        """The encoder as rows name it (``Encoder.spec``)."""
        return self.recipe.encoder.spec

    def with_texts(self, texts: list[str], keep: float, tower: str | None = None) -> "ClipPipeline":
        """Add DUET T2V after the compressor chain: keep the ``keep`` fraction of tokens most relevant to
        ``texts``, embedded by the text tower of the CLIP or SigLIP folder ``tower`` (default: the ViT's own
        folder). Raises ValueError (no ViT, no tower) or OSError (a tower that cannot be read)."""
        from ..tokens import TextTower

        if tower is None and self.recipe.encoder.name != "vit":
            raise ValueError("text queries need a text tower: --text-tower PATH (or --encoder vit:PATH of a CLIP or SigLIP folder)")
        if self.recipe.encoder.name != "vit":
            raise ValueError("text queries score ViT tokens: use --encoder vit:PATH")
        text_tower = TextTower(tower or self.recipe.encoder.path)
        self._texts = (text_tower.embed_texts(list(texts)), keep, text_tower.project_vision)
        return self

    # -- the encoder ------------------------------------------------------------------------------------

    @property
    def model(self):
        """The recipe's ViT (None for the pixel encoder), loaded on first use, once per process."""
        encoder = self.recipe.encoder
        if encoder.name != "vit":
            return None
        key = (encoder.path, encoder.xray)
        if key not in _MODELS:
            from ..tokens import load_vit

            _MODELS[key] = load_vit(encoder.path, **encoder.xray_overrides)
        return _MODELS[key]

    @property
    def token_dim(self) -> int:
        """Width of the tokens this recipe writes. For a ViT not loaded here it is read from the checkpoint
        on the CPU and the model is not kept."""
        encoder = self.recipe.encoder
        if encoder.name != "vit":
            return encoder.dim or 3 * self.config.patch ** 2
        key = (encoder.path, encoder.xray)
        if key in _MODELS:
            return _MODELS[key].config.dim
        if key not in _WIDTHS:
            from ..tokens import load_vit

            _WIDTHS[key] = load_vit(encoder.path, device="cpu", **encoder.xray_overrides).config.dim
        return _WIDTHS[key]

    def check_patch(self) -> None:
        """Raise ValueError when the ViT's patch size is not the recipe's (its tokens would be wrong)."""
        model = self.model
        if model is not None and model.config.patch != self.config.patch:
            raise ValueError(f"the ViT's patch is {model.config.patch} px but patchify.patch is {self.config.patch}: "
                             f"set patch = {model.config.patch} (--patch {model.config.patch})")

    def encode_only(self, pixels, positions, sample_index, grid) -> TokenSet:
        """The encoder alone: pixels (K, 3, P, P) uint8, positions (K, 3) (t, row, col), sample_index (K,)."""
        from ..tokens import encode_pixels, encode_with_vit

        model = self.model
        if model is not None:
            return encode_with_vit(model, pixels, positions, sample_index, grid)
        return encode_pixels(pixels, positions, sample_index, dim=self.recipe.encoder.dim)

    def encode(self, pixels, positions, sample_index, grid) -> tuple[TokenSet, dict]:
        """The encode stage: the encoder, then the compressor chain. Returns the compressed TokenSet and
        {"encode", "compress"} -> seconds."""
        tokens, _encoded, seconds = self._encode(pixels, positions, sample_index, grid)
        return tokens, seconds

    def _encode(self, pixels, positions, sample_index, grid) -> tuple[TokenSet, TokenSet, dict]:
        from ..tokens import compress, duet_t2v

        started = time.perf_counter()
        encoded = self.encode_only(pixels, positions, sample_index, grid)
        middle = time.perf_counter()
        tokens = compress(encoded, self.chain)
        if self._texts is not None:
            queries, keep, projection = self._texts
            tokens = duet_t2v(tokens, queries, keep, vision_projection=projection)
        return tokens, encoded, {"encode": middle - started, "compress": time.perf_counter() - middle}

    def warm_up(self) -> None:
        """Load the encoder and run it and the compressors once on a few blank patches, so that the first
        clip does not pay for model loading and first-call set-up (measured: ~0.3 s of a pixel encoder's
        first window; seconds for a ViT loaded from disk). Raises what fails (the caller may ignore it)."""
        config = self.config
        grid = canvas_geometry(1280, 720, config).grid
        count = min(16, grid[0] * grid[1])
        pixels = np.zeros((count, 3, config.patch, config.patch), np.uint8)
        positions = np.stack([np.zeros(count), np.arange(count) // grid[1], np.arange(count) % grid[1]], 1).astype(np.int32)
        self.encode(pixels, positions, np.zeros(count, np.int32), grid)

    # -- clips -------------------------------------------------------------------------------------------

    def clips(self, source: str | os.PathLike, *, report: DecodeReport | None = None,
              decoder_threads: int | None = None) -> Iterator[ClipSamples]:
        """Decode ``source`` once into the samples of each clip, with the recipe's decode settings (its
        limits; ``decoder_threads`` None = ``self.decoder_threads``). Raises VideoError for bad input."""
        threads = self.decoder_threads if decoder_threads is None else decoder_threads
        return iter_clip_samples(source, self.config, decoder_threads=threads, limits=self.limits, report=report)

    def patchify(self, samples: ClipSamples) -> PatchSet:
        """The patches the recipe keeps of one clip's samples (pure)."""
        return patchify_samples(samples, self.config)

    def process(self, samples: ClipSamples, *, video_id: str, source: str, text: str | None = None,
                stages: list[str] | None = None) -> ClipResult:
        """Patchify, encode and compress one clip's samples into a shard row. Raises on failure; the
        caller learns the stage it was in from ``stages`` (each stage's name is appended as it starts)."""
        stages = stages if stages is not None else []
        if self.recipe.frozen.enabled:  # whole frames through a frozen encoder: no patch selection (pipeline/_frozen.py)
            return self._process_frozen(samples, video_id=video_id, source=source, text=text, stages=stages)
        stages.append("patchify")
        started = time.perf_counter()
        patches = self.patchify(samples)
        seconds = {"patchify": time.perf_counter() - started}
        stages.append("encode+compress")
        encoded = None
        if self._remote is not None:
            tokens, encode_seconds = self._remote(patches)  # a separate encode stage (e.g. a GPU actor)
        else:
            tokens, encoded, encode_seconds = self._encode(patches.pixels, patches.positions, patches.sample_index,
                                                           patches.geometry.grid)
        seconds.update(encode_seconds)
        info = patches.info
        from ..shards import SampleRow

        row = SampleRow(
            video_id=video_id, source=source, clip_index=info.clip_index, clip_start=info.time_start,
            clip_end=info.time_end, fps=info.fps, width=info.width, height=info.height, codec=info.codec,
            mode=patches.mode, budget=patches.budget, encoder=self.encoder_spec, compressors=self.recipe.compress,
            n_dense=patches.n_dense, n_selected=patches.n_kept, tokens=tokens.tokens.numpy().astype(np.float16),
            positions=tokens.positions.numpy(), frame_types=samples.picture_types,
            pixels=patches.pixels if self.recipe.output.store_pixels else None,  # every selected patch
            text=text, times_estimated=info.times_estimated, sizes=tuple(f"{w}x{h}" for w, h in info.sizes),
            token_sizes=tokens.sizes.numpy().astype(np.int32),
        )
        return ClipResult(row, tokens, seconds, patches, encoded)

    def _process_frozen(self, samples: ClipSamples, *, video_id: str, source: str, text: str | None,
                        stages: list[str]) -> ClipResult:
        from ._frozen import frozen_row, frozen_tokens

        stages.append("encode+compress")
        tokens, n_dense, seconds = frozen_tokens(samples, self.recipe, self.model)
        row = frozen_row(samples, self.recipe, self.config, tokens, n_dense, video_id=video_id, source=source,
                         encoder=self.encoder_spec, text=text)
        return ClipResult(row, tokens, seconds)
