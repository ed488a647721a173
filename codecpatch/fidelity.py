"""Embedding-level fidelity: what a real (frozen, pretrained) ViT loses when a clip is reduced to a subset of
its patches, or its tokens are compressed.

For each clip the *reference* is the dense encoding of every sampled frame (each frame on its own, as the
image ViT was trained): the mean of its final picture-patch tokens ("patch") and the mean of its per-frame
[CLS] ("cls"). A reduction is scored by the cosine of its clip embedding to that reference, by clip
retrieval (recall@1: does its embedding find its own clip's reference among all clips given), by segment
retrieval (the same with each clip cut into ``segments`` time segments) and by frame localisation (each
frame's dense embedding is matched to the reduction's segment embeddings of its clip: is its own segment
the nearest?). Two variants separate *which* patches were chosen from *how they are encoded*:

- ``sparse``: each frame's kept patches are encoded alone, [CLS] + those tokens at their own positions through
  every block (with every patch kept this is the dense forward exactly); out-of-context tokens are out of
  distribution for a frozen encoder, which this variant pays for.
- ``pooled``: the kept positions' tokens are taken from the dense forward (full context), so only the choice
  of patches matters.

Selections are compared at equal numbers of *picture* patches (letterbox or rounding padding never counts):
``codec`` (patchify's codec mode with an absolute token budget), ``uniform`` (evenly spaced whole frames),
``random`` (seeded random picture patches). Compressors act on the codec selection's tokens: ApET, DUET V2V
(both contextual rules), random and strided pruning, on output tokens and also applied after an early block
with proportional attention in the remaining blocks (as these methods run inside a model: "apet@4:0.25"), and
Xray (EViT) inside the ViT.
A compressed clip's embedding is the plain mean of its surviving tokens (each counts once, as a downstream
model sees them). Every function here is pure apart from the ViT's forward; ``evaluate_clips`` is the driver.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from .patchify import Budget, ClipSamples, PatchifyConfig, patches_of, patchify_samples
from .tokens import SparseViT, TokenSet, apet, duet_v2v, random_prune, stride_prune

SELECTIONS = ("codec", "uniform", "random")
COMPRESSORS = ("apet", "duet", "duet_mean", "xray", "random", "stride")


@dataclass(frozen=True)
class FrameTokens:
    """A per-frame encoding of some patches of a clip.

    Attributes:
        tokens: (N, D) float32 output tokens of all frames, frame by frame.
        frame: (N,) int64 sampled-frame index of each token.
        cls: (T, D) float32 per-frame [CLS]; rows of frames with nothing kept are NaN.
        seconds: wall time of the encoding.
    """

    tokens: torch.Tensor
    frame: torch.Tensor
    cls: torch.Tensor
    seconds: float


@dataclass(frozen=True)
class DenseClip:
    """The dense reference of one clip: every picture patch of every sampled frame, encoded per frame.

    Attributes:
        name: "source#clip_index".
        picture: (H, W) bool, patches showing picture (not padding).
        grid_tokens: (T, H, W, D) float32 final tokens on the patch grid (zeros on padding).
        cls: (T, D) float32 per-frame [CLS].
        seconds: wall time of the dense encoding.
    """

    name: str
    picture: np.ndarray
    grid_tokens: torch.Tensor
    cls: torch.Tensor
    seconds: float

    @property
    def n_frames(self) -> int:
        return int(self.grid_tokens.shape[0])

    def patch_embedding(self, frames: np.ndarray | None = None) -> torch.Tensor:
        """(D,) mean picture-patch token over ``frames`` (default all)."""
        tokens = self.grid_tokens if frames is None else self.grid_tokens[torch.as_tensor(frames)]
        return tokens[:, torch.from_numpy(self.picture)].reshape(-1, tokens.shape[-1]).mean(0)


def _normalised_batch(model: SparseViT, patches: np.ndarray, kept: np.ndarray, frames: list[int]):
    """(pixels (B, K, 3, P, P) normalised, positions (B, K, 3), valid (B, K)) of ``frames``' kept patches."""
    parameter = next(model.parameters())
    counts = [int(kept[t].sum()) for t in frames]
    pixels = torch.zeros(len(frames), max(counts), 3, *patches.shape[-2:])
    positions = torch.zeros(len(frames), max(counts), 3, dtype=torch.int64)
    valid = torch.zeros(len(frames), max(counts), dtype=torch.bool)
    for i, t in enumerate(frames):
        h, w = np.nonzero(kept[t])
        pixels[i, : counts[i]] = torch.from_numpy(patches[t, h, w]).float() / 255.0
        positions[i, : counts[i], 1], positions[i, : counts[i], 2] = torch.from_numpy(h), torch.from_numpy(w)
        valid[i, : counts[i]] = True
    mean = torch.tensor(model.config.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.config.image_std).view(1, 3, 1, 1)
    normalised = ((pixels.flatten(0, 1) - mean) / std).view_as(pixels)
    return normalised.to(parameter.device, parameter.dtype), positions.to(parameter.device), valid.to(parameter.device)


def encode_per_frame(model: SparseViT, patches: np.ndarray, kept: np.ndarray, batch: int = 16) -> FrameTokens:
    """Encode each frame's kept patches alone ([CLS] + kept tokens at their positions).

    Args:
        patches: (T, H, W, 3, P, P) uint8 canvas patches.
        kept: (T, H, W) bool.
    """
    started = time.perf_counter()
    frames, rows, cols = kept.shape
    tokens, frame_of, cls = [], [], torch.full((frames, model.config.dim), float("nan"))
    busy = [t for t in range(frames) if kept[t].any()]
    for start in range(0, len(busy), batch):
        chunk = busy[start : start + batch]
        pixels, positions, valid = _normalised_batch(model, patches, kept, chunk)
        with torch.inference_mode():
            out, out_valid, out_cls, _ = model(pixels, positions, valid, (rows, cols))
        for i, t in enumerate(chunk):
            kept_tokens = out[i][out_valid[i]].float().cpu()
            tokens.append(kept_tokens)
            frame_of.append(torch.full((len(kept_tokens),), t, dtype=torch.int64))
            if out_cls is not None:
                cls[t] = out_cls[i].float().cpu()
    dim = model.config.dim
    return FrameTokens(torch.cat(tokens) if tokens else torch.zeros(0, dim), torch.cat(frame_of) if frame_of else torch.zeros(0, dtype=torch.int64),
                       cls, time.perf_counter() - started)


def picture_mask(samples: ClipSamples) -> np.ndarray:
    """(H, W) bool: patches that show any picture (padding-only patches are never counted or kept)."""
    return samples.geometry.patch_content_fraction() > 0


def encode_dense(model: SparseViT, samples: ClipSamples, name: str) -> DenseClip:
    """The dense reference of a clip: every picture patch of every sampled frame, per frame (letterbox padding
    is left out of the encoder's input too, so that keeping every picture patch reproduces it exactly)."""
    patches = patches_of(samples.canvas_frames(), samples.geometry.patch)
    t, h, w = patches.shape[:3]
    picture = picture_mask(samples)
    encoded = encode_per_frame(model, patches, np.broadcast_to(picture, (t, h, w)))
    grid = torch.zeros(t, h, w, model.config.dim)
    grid[:, torch.from_numpy(picture)] = encoded.tokens.view(t, int(picture.sum()), -1)
    return DenseClip(name, picture, grid, encoded.cls, encoded.seconds)


# -- selections at equal picture-patch counts ----------------------------------------------------------------


def codec_mask(samples: ClipSamples, config: PatchifyConfig, n_picture: int) -> np.ndarray:
    """(T, H, W) bool: patchify's codec selection with an absolute budget of ``n_picture`` tokens, restricted
    to picture patches."""
    patches = patchify_samples(samples, replace(config, mode="codec", budget=Budget(max(1, n_picture), "tokens")))
    return patches.kept & picture_mask(samples)[None]


def uniform_mask(shape: tuple[int, int, int], picture: np.ndarray, n_picture: int) -> np.ndarray:
    """Evenly spaced whole frames holding about ``n_picture`` picture patches (at least one frame)."""
    frames = shape[0]
    count = min(frames, max(1, round(n_picture / max(1, int(picture.sum())))))
    mask = np.zeros(shape, bool)
    mask[np.unique(np.linspace(0, frames - 1, count).round().astype(int))] = picture
    return mask


def random_mask(shape: tuple[int, int, int], picture: np.ndarray, n_picture: int, seed: int = 0) -> np.ndarray:
    """``n_picture`` seeded random picture patches."""
    candidates = np.flatnonzero(np.broadcast_to(picture, shape).ravel())
    chosen = np.random.default_rng(seed).choice(candidates, size=min(n_picture, len(candidates)), replace=False)
    mask = np.zeros(int(np.prod(shape)), bool)
    mask[chosen] = True
    return mask.reshape(shape)


# -- embeddings and scores -----------------------------------------------------------------------------------


def segment_of(frames: int, segments: int) -> np.ndarray:
    """(T,) segment index of each sampled frame: ``segments`` contiguous, near-equal time segments."""
    return np.minimum((np.arange(frames) * segments) // frames, segments - 1)


def segment_embeddings(tokens: torch.Tensor, frame: torch.Tensor, frames: int, segments: int) -> torch.Tensor:
    """(S, D) mean token per time segment (zeros where a segment has no token)."""
    segment = torch.from_numpy(segment_of(frames, segments))[frame]
    sums = torch.zeros(segments, tokens.shape[1]).index_add_(0, segment, tokens)
    counts = torch.bincount(segment, minlength=segments).clamp_min(1)[:, None]
    return sums / counts


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a[None], b[None]).item())


def recall_at_1(queries: torch.Tensor, references: torch.Tensor) -> float:
    """Fraction of rows i of (N, D) ``queries`` whose most cosine-similar row of ``references`` is row i."""
    similarity = F.normalize(queries, dim=1) @ F.normalize(references, dim=1).T
    return float((similarity.argmax(dim=1) == torch.arange(len(queries))).float().mean())


@dataclass(frozen=True)
class Reduction:
    """One method's reduction of one clip: the tokens it keeps and their sampled frames.

    Attributes:
        method: e.g. "codec@0.125/sparse", "apet:0.25".
        tokens: (N, D) float32 kept/compressed tokens; frame: (N,) int64 their sampled frames.
        cls: (D,) clip [CLS] embedding (mean of per-frame [CLS] over frames with tokens), or None.
        n_picture: picture patches the selection kept (before any compressor).
        seconds: wall time (selection + encoding + compression).
    """

    method: str
    tokens: torch.Tensor
    frame: torch.Tensor
    cls: torch.Tensor | None
    n_picture: int
    seconds: float


def score_reductions(dense: list[DenseClip], reductions: list[list[Reduction]], segments: int = 4) -> dict[str, dict]:
    """Per method: mean and per-clip cosine to the reference, clip/segment recall@1, frame localisation, time.

    ``reductions[i]`` are clip ``i``'s reductions, the same methods in the same order for every clip.
    """
    references = torch.stack([clip.patch_embedding() for clip in dense])
    cls_references = torch.stack([clip.cls.mean(0) for clip in dense])
    segment_refs = torch.cat([torch.stack([clip.patch_embedding(np.flatnonzero(segment_of(clip.n_frames, segments) == s))
                                           for s in range(segments)]) for clip in dense])
    results = {}
    for m, method in enumerate(r.method for r in reductions[0]):
        mine = [clip_reductions[m] for clip_reductions in reductions]
        embeddings = torch.stack([r.tokens.mean(0) if len(r.tokens) else torch.zeros(references.shape[1]) for r in mine])
        segment_embs = [segment_embeddings(r.tokens, r.frame, clip.n_frames, segments) for r, clip in zip(mine, dense)]
        localised = []
        for clip, segs in zip(dense, segment_embs):
            frame_embs = torch.stack([clip.patch_embedding(np.array([t])) for t in range(clip.n_frames)])
            nearest = (F.normalize(frame_embs, dim=1) @ F.normalize(segs, dim=1).T).argmax(dim=1).numpy()
            localised.append(float((nearest == segment_of(clip.n_frames, segments)).mean()))
        cosines = [cosine(e, ref) for e, ref in zip(embeddings, references)]
        result = {
            "cosine": float(np.mean(cosines)), "per_clip_cosine": [round(c, 5) for c in cosines],
            "recall_at_1": recall_at_1(embeddings, references),
            "segment_recall_at_1": recall_at_1(torch.cat(segment_embs), segment_refs),
            "frame_localisation": float(np.mean(localised)),
            "tokens": float(np.mean([len(r.tokens) for r in mine])),
            "picture_patches": float(np.mean([r.n_picture for r in mine])),
            "seconds": float(np.mean([r.seconds for r in mine])),
        }
        if all(r.cls is not None for r in mine):
            cls_embeddings = torch.stack([r.cls for r in mine])
            result["cls_cosine"] = float(np.mean([cosine(e, ref) for e, ref in zip(cls_embeddings, cls_references)]))
            result["cls_recall_at_1"] = recall_at_1(cls_embeddings, cls_references)
        results[method] = result
    return results


# -- the reductions of one clip ------------------------------------------------------------------------------


def _frame_mean_cls(encoded: FrameTokens) -> torch.Tensor | None:
    rows = encoded.cls[~torch.isnan(encoded.cls).any(dim=1)]
    return rows.mean(0) if len(rows) else None


def _token_set(tokens: torch.Tensor, mask: np.ndarray, cls: torch.Tensor | None) -> TokenSet:
    """The TokenSet of a per-frame encoding of ``mask`` ((T, H, W); tokens in (t, h, w) order), grouped by frame."""
    positions = torch.from_numpy(np.stack(np.nonzero(mask), axis=1)).long()
    return TokenSet(tokens, positions, positions[:, 0].clone(), torch.arange(len(tokens)), cls, ())


def selection_reductions(model: SparseViT, samples: ClipSamples, reference: DenseClip, config: PatchifyConfig,
                         budgets: tuple[float, ...], seed: int = 0) -> tuple[list[Reduction], dict[float, tuple[np.ndarray, FrameTokens]]]:
    """codec / uniform / random selections at each budget (a fraction of the clip's picture patches), each
    ``sparse`` and ``pooled``. Also returns the codec selections' masks and sparse encodings, for compressors."""
    patches = patches_of(samples.canvas_frames(), samples.geometry.patch)
    picture = reference.picture
    shape = reference.grid_tokens.shape[:3]
    n_all = int(picture.sum()) * shape[0]
    out, codec = [], {}
    for budget in budgets:
        target = max(1, round(budget * n_all))
        for selection in SELECTIONS:
            started = time.perf_counter()
            if selection == "codec":
                mask = codec_mask(samples, config, target)
            elif selection == "uniform":
                mask = uniform_mask(shape, picture, target)
            else:
                mask = random_mask(shape, picture, target, seed)
            chosen = time.perf_counter() - started
            encoded = encode_per_frame(model, patches, mask)
            n_picture = int(mask.sum())
            out.append(Reduction(f"{selection}@{budget:g}/sparse", encoded.tokens, encoded.frame, _frame_mean_cls(encoded), n_picture,
                                 chosen + encoded.seconds))
            t, h, w = np.nonzero(mask)
            frames_kept = np.unique(t)
            out.append(Reduction(f"{selection}@{budget:g}/pooled", reference.grid_tokens[t, h, w], torch.from_numpy(t).long(),
                                 reference.cls[torch.from_numpy(frames_kept)].mean(0), n_picture, chosen + reference.seconds))
            if selection == "codec":
                codec[budget] = (mask, encoded)
    return out, codec


def _xray_model(model: SparseViT, keep: float, blocks: tuple[int, ...]) -> SparseViT:
    """The same weights with EViT at ``blocks``, each keeping keep**(1/len(blocks)) so the product is ``keep``."""
    config = replace(model.config, xray_blocks=blocks, xray_keep=keep ** (1.0 / len(blocks)), xray_threshold=None)
    xray = SparseViT(config)
    xray.load_state_dict(model.state_dict())
    parameter = next(model.parameters())
    return xray.to(device=parameter.device, dtype=parameter.dtype).eval()


def encode_merging_inside(model: SparseViT, patches: np.ndarray, kept: np.ndarray, compressor, after: int
                          ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Per-frame sparse encoding that compresses the patch tokens after block ``after`` (one-indexed) with
    ``compressor`` (TokenSet -> TokenSet, per frame; the query [CLS] is the clip's mean hidden [CLS]) and runs
    the remaining blocks with proportional attention (each merged token weighted by how many it stands for).

    Returns (tokens (N, D), frame (N,), seconds)."""
    started = time.perf_counter()
    frames = [t for t in range(kept.shape[0]) if kept[t].any()]
    offset = model.config.prefix_tokens
    pixels, positions, valid = _normalised_batch(model, patches, kept, frames)
    with torch.inference_mode():
        x, full_valid = model.embed(pixels, positions, valid, kept.shape[1:])
        source = torch.arange(valid.shape[1], device=x.device).expand_as(valid).clone()
        x, full_valid, _ = model.run_blocks(x, full_valid, source, 0, after)
        hidden = x[:, offset:][full_valid[:, offset:]].float().cpu()
        group = torch.repeat_interleave(torch.arange(len(frames)), full_valid[:, offset:].sum(1).cpu())
        cls = x[:, 0].float().mean(0).cpu() if model.config.cls else None
        merged = compressor(TokenSet(hidden, torch.stack([group, group, group], 1), group, torch.arange(len(hidden)), cls, ()))
        sizes = torch.bincount(merged.absorbed_into, minlength=merged.n_tokens).float()
        counts = torch.bincount(merged.group, minlength=len(frames))
        width = offset + int(counts.max())
        rebuilt = x.new_zeros(len(frames), width, x.shape[2])
        weights = torch.ones(len(frames), width, device=x.device)
        new_valid = torch.zeros(len(frames), width, dtype=torch.bool, device=x.device)
        rebuilt[:, :offset], new_valid[:, :offset] = x[:, :offset], True
        for i in range(len(frames)):
            rows = merged.group == i
            rebuilt[i, offset : offset + int(counts[i])] = merged.tokens[rows].to(x.device, x.dtype)
            weights[i, offset : offset + int(counts[i])] = sizes[rows].to(x.device)
            new_valid[i, offset : offset + int(counts[i])] = True
        source = torch.zeros(len(frames), 1, dtype=torch.int64, device=x.device)
        x, new_valid, _ = model.run_blocks(rebuilt, new_valid, source, after, model.config.depth, sizes=weights)
        tokens, token_valid, _ = model.head(x, new_valid)
    frame_of = torch.tensor(frames)[:, None].expand(token_valid.shape)[token_valid.cpu()]
    return tokens[token_valid].float().cpu(), frame_of, time.perf_counter() - started


def compressor_reductions(model: SparseViT, samples: ClipSamples, mask: np.ndarray, encoded: FrameTokens,
                          keeps: tuple[float, ...], xray_blocks: tuple[int, ...] | None = None,
                          merge_after: int | None = None) -> list[Reduction]:
    """Compressors on a selection's per-frame sparse tokens, at each keep ratio (per frame, as in a VLM):
    on the output tokens ("apet:0.25"), Xray inside the ViT ("xray:0.25"), and the output-token compressors
    applied after block ``merge_after`` (default depth // 3) with proportional attention in the remaining
    blocks ("apet@4:0.25")."""
    depth = model.config.depth
    after = merge_after or max(1, depth // 3)
    blocks = xray_blocks or tuple(sorted({max(1, round(depth * f)) for f in (1 / 3, 2 / 3, 11 / 12)}))
    cls = _frame_mean_cls(encoded)
    base = _token_set(encoded.tokens, mask, cls)
    n_picture = int(mask.sum())
    functions = {"apet": lambda k: apet(base, k), "duet": lambda k: duet_v2v(base, k),
                 "duet_mean": lambda k: duet_v2v(base, k, contextual="mean"),
                 "random": lambda k: random_prune(base, k), "stride": lambda k: stride_prune(base, k)}
    out = []
    patches = patches_of(samples.canvas_frames(), samples.geometry.patch)
    for keep in keeps:
        xray = _xray_model(model, keep, blocks)
        for name in COMPRESSORS:
            started = time.perf_counter()
            if name == "xray":
                inside = encode_per_frame(xray, patches, mask)
                tokens, frame, seconds = inside.tokens, inside.frame, inside.seconds
            else:
                compressed = functions[name](keep)
                tokens, frame = compressed.tokens, compressed.group
                seconds = encoded.seconds + time.perf_counter() - started
            out.append(Reduction(f"{name}:{keep:g}", tokens, frame, None, n_picture, seconds))
        for name in ("apet", "duet", "duet_mean", "random", "stride"):
            rule = {"apet": lambda t, k=keep: apet(t, k), "duet": lambda t, k=keep: duet_v2v(t, k),
                    "duet_mean": lambda t, k=keep: duet_v2v(t, k, contextual="mean"),
                    "random": lambda t, k=keep: random_prune(t, k), "stride": lambda t, k=keep: stride_prune(t, k)}[name]
            tokens, frame, seconds = encode_merging_inside(model, patches, mask, rule, after)
            out.append(Reduction(f"{name}@{after}:{keep:g}", tokens, frame, None, n_picture, seconds))
    return out


@dataclass(frozen=True)
class FidelitySettings:
    """What ``evaluate_clips`` measures.

    Attributes:
        budgets: selection budgets, fractions of each clip's picture patches.
        compress_budget: the codec selection (one of ``budgets``) whose tokens the compressors shrink.
        keeps: compressor keep ratios.
        segments: time segments per clip for segment retrieval and frame localisation.
        seed: seed of the random selections.
    """

    budgets: tuple[float, ...] = (0.03125, 0.0625, 0.125, 0.25)
    compress_budget: float | None = 0.25
    keeps: tuple[float, ...] = (0.5, 0.25, 0.125)
    segments: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if any(not 0 < b <= 1 for b in self.budgets) or any(not 0 < k <= 1 for k in self.keeps):
            raise ValueError("budgets and keeps must be fractions in (0, 1]")
        if self.compress_budget is not None and self.compress_budget not in self.budgets:
            raise ValueError(f"compress_budget {self.compress_budget} must be one of the budgets {self.budgets}")
        if self.segments < 1:
            raise ValueError("segments must be >= 1")


def evaluate_clips(model: SparseViT, clips: list[ClipSamples], config: PatchifyConfig, settings: FidelitySettings) -> dict:
    """Score every method on ``clips`` (retrieval is among all of them). Returns {"clips": [...names],
    "methods": {method: scores}, "dense_seconds": mean dense-encoding time per clip}."""
    if model.config.patch != config.patch:
        raise ValueError(f"the ViT's patch is {model.config.patch} px but patchify's is {config.patch} px")
    dense, reductions = [], []
    for samples in clips:
        reference = encode_dense(model, samples, f"{samples.info.source}#{samples.info.clip_index}")
        selected, codec = selection_reductions(model, samples, reference, config, settings.budgets, settings.seed)
        if settings.compress_budget is not None:
            mask, encoded = codec[settings.compress_budget]
            selected += compressor_reductions(model, samples, mask, encoded, settings.keeps)
        dense.append(reference)
        reductions.append(selected)
    if not dense:
        raise ValueError("no clips to score")
    return {"clips": [clip.name for clip in dense], "methods": score_reductions(dense, reductions, settings.segments),
            "dense_seconds": float(np.mean([clip.seconds for clip in dense]))}


__all__ = ["DenseClip", "FidelitySettings", "FrameTokens", "Reduction", "codec_mask", "encode_dense", "encode_per_frame",
           "evaluate_clips", "random_mask", "recall_at_1", "score_reductions", "segment_of", "uniform_mask"]


def format_table(methods: dict[str, dict]) -> str:
    """A plain-text table of ``evaluate_clips(...)["methods"]``, one method per row."""
    header = f"{'method':24} {'tokens':>7} {'picture':>7} {'cosine':>7} {'cls_cos':>7} {'R@1':>5} {'segR@1':>6} {'locate':>6} {'ms':>8}"
    lines = [header, "-" * len(header)]
    for method, r in methods.items():
        cls = f"{r['cls_cosine']:7.4f}" if "cls_cosine" in r else f"{'':7}"
        lines.append(f"{method:24} {r['tokens']:7.0f} {r['picture_patches']:7.0f} {r['cosine']:7.4f} {cls} {r['recall_at_1']:5.2f} "
                     f"{r['segment_recall_at_1']:6.2f} {r['frame_localisation']:6.2f} {1000 * r['seconds']:8.1f}")
    return "\n".join(lines)
