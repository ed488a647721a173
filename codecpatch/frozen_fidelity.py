"""Fidelity of the frozen-encoder path with a real pretrained ViT: at equal *output* tokens, what do evenly
spaced whole frames keep, against more frames compressed per frame (pooling, random merge, ApET, DUET V2V,
Xray inside the ViT, and ApET / DUET V2V / random merge inside the ViT after block L with proportional attention
in the remaining blocks), codec-driven frame choice / token allocation, and codec-sparse patches?

The reference of a clip is fidelity's dense encoding (every picture patch of every sampled frame, each frame
encoded alone). Whole frames encoded with context *are* rows of that reference (the per-frame forward is the
same), so whole-frame methods take them from it and are charged the reference's per-frame encoding time;
Xray, the in-model merges and codec-sparse patches are encoded for real.

Scores per method (clip averages, retrieval among all clips):
- ``cosine``: size-weighted mean output token vs the mean dense token (merged tokens weigh what they carry);
- ``segment_recall_at_1`` / ``segment_mean_rank``: each clip cut into ``segments`` time segments; the
  size-weighted mean output token of a segment must find that segment's dense mean among every clip's;
- ``detail``: for the dense tokens of every ``detail_stride``-th frame, the best cosine to an output token of
  the same segment, averaged (a mean-based score cannot see what merging loses; this can);
- ``tokens``: output tokens; ``seconds``: encoding + compression per clip.
"""

from __future__ import annotations

import fnmatch
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from .fidelity import DenseClip, codec_mask, encode_dense, encode_per_frame, segment_of
from .frozen import (FrozenSettings, activity, activity_counts, activity_frames, encode_frames, even_counts, even_frames, frame_merge,
                     output_budget)
from .patchify import ClipSamples, PatchifyConfig, patches_of
from .tokens import SparseViT, TokenSet, apet, duet_v2v, pool_frames, random_merge

BUDGETS = (0.03125, 0.0625, 0.125, 0.25)


@dataclass(frozen=True)
class Output:
    """One method's tokens for one clip: (K, D) ``tokens``, (K,) ``frame`` and (K,) ``sizes`` (patches each
    carries), and the wall time in seconds."""

    method: str
    tokens: torch.Tensor
    frame: torch.Tensor
    sizes: torch.Tensor
    seconds: float


def _output(method: str, tokens: TokenSet, seconds: float) -> Output:
    return Output(method, tokens.tokens.float(), tokens.group.clone(), tokens.sizes.float(), seconds)


def weighted_segments(output: Output, n_frames: int, segments: int) -> torch.Tensor:
    """(S, D) size-weighted mean output token per time segment (zeros where a segment has none)."""
    segment = torch.from_numpy(segment_of(n_frames, segments))[output.frame]
    sums = torch.zeros(segments, output.tokens.shape[1]).index_add_(0, segment, output.tokens * output.sizes[:, None])
    weight = torch.zeros(segments).index_add_(0, segment, output.sizes).clamp_min(1e-12)
    return sums / weight[:, None]


def detail(reference: DenseClip, output: Output, segments: int, stride: int) -> float:
    """Mean over the dense picture tokens of every ``stride``-th frame of the best cosine to an output token of
    the same time segment (0 for a segment with no output token)."""
    seg_of = segment_of(reference.n_frames, segments)
    out_segment = torch.from_numpy(seg_of)[output.frame]
    normalised = F.normalize(output.tokens, dim=1)
    picture = torch.from_numpy(reference.picture)
    best = []
    for t in range(0, reference.n_frames, stride):  # a loop over frames, vectorised inside
        dense = F.normalize(reference.grid_tokens[t][picture], dim=1)
        mine = normalised[out_segment == int(seg_of[t])]
        best.append((dense @ mine.T).max(dim=1).values if len(mine) else torch.zeros(len(dense)))
    return float(torch.cat(best).mean())


def ranks(queries: torch.Tensor, references: torch.Tensor) -> np.ndarray:
    """(N,) one-based rank of reference i among all rows of ``references`` by cosine to query i; ties count
    against the query (a segment with no token, a zero query, ties with everything and ranks last)."""
    similarity = F.normalize(queries, dim=1) @ F.normalize(references, dim=1).T
    own = similarity.diagonal()[:, None]
    return ((similarity >= own).sum(dim=1)).numpy()


def _whole_frames(reference: DenseClip, frames: np.ndarray) -> TokenSet:
    """The dense reference's tokens of ``frames`` as a TokenSet (frame, then raster order)."""
    h, w = np.nonzero(reference.picture)
    frames_t = torch.from_numpy(np.asarray(frames, np.int64))
    tokens = reference.grid_tokens[frames_t][:, torch.from_numpy(h), torch.from_numpy(w)].reshape(-1, reference.grid_tokens.shape[-1])
    positions = torch.stack([frames_t.repeat_interleave(len(h)), torch.from_numpy(h).long().repeat(len(frames)),
                             torch.from_numpy(w).long().repeat(len(frames))], 1)
    return TokenSet(tokens, positions, positions[:, 0].clone(), torch.arange(len(tokens)), None, ())


def _per_frame_duet(whole: TokenSet, reference: DenseClip, count: float) -> TokenSet:
    """DUET V2V on each frame with that frame's own [CLS] as the query, about ``count`` tokens each."""
    parts = []
    for t in torch.unique(whole.group):  # one iteration per frame
        rows = torch.nonzero(whole.group == t).flatten()
        frame = TokenSet(whole.tokens[rows], whole.positions[rows], whole.group[rows], torch.arange(len(rows)), reference.cls[int(t)], ())
        parts.append(duet_v2v(frame, count / len(rows)))
    return TokenSet(torch.cat([p.tokens for p in parts]), torch.cat([p.positions for p in parts]), torch.cat([p.group for p in parts]),
                    torch.cat([p.absorbed_into + sum(q.n_tokens for q in parts[:i]) for i, p in enumerate(parts)]), None, ())


def _xray_model(model: SparseViT, keep: float, blocks: tuple[int, ...]) -> SparseViT:
    """The same weights with EViT at ``blocks``, each keeping keep ** (1 / len(blocks))."""
    xray = SparseViT(replace(model.config, xray_blocks=blocks, xray_keep=keep ** (1.0 / len(blocks)), xray_threshold=None))
    xray.load_state_dict(model.state_dict())
    return xray.eval()


def wanted(method: str, methods: tuple[str, ...] | None) -> bool:
    """Whether ``method`` ("0.0625/4x/apet@4") is asked for: ``methods`` None (all) or shell patterns on the
    name without its budget ("uniform", "4x/pool2x2", "4x/*@*")."""
    return methods is None or any(fnmatch.fnmatchcase(method.split("/", 1)[1], pattern) for pattern in methods)


def frozen_outputs(model: SparseViT, samples: ClipSamples, reference: DenseClip, config: PatchifyConfig,
                   budgets: tuple[float, ...] = BUDGETS, seed: int = 0, sparse_budgets: tuple[float, ...] = (0.0625, 0.25),
                   methods: tuple[str, ...] | None = None, merge_after: int | None = None) -> list[Output]:
    """Every method's output for one clip at every budget (see the module docstring for the list), or those
    ``methods`` asks for (see ``wanted``); codec-sparse patches (a reference from the real-encoder issue, and
    the slowest to make) only at ``sparse_budgets``. In-model merges run after block ``merge_after`` (default
    depth // 3, 4 of DINOv2-S's 12)."""
    frames_total = reference.n_frames
    per_frame = int(reference.picture.sum())
    frame_seconds = reference.seconds / frames_total
    patches = patches_of(samples.canvas_frames(), samples.geometry.patch)
    score = activity(samples.motion_accumulated, samples.residual_accumulated)
    depth = model.config.depth
    xray_blocks = tuple(sorted({max(1, round(depth * f)) for f in (1 / 3, 2 / 3, 11 / 12)}))
    after = merge_after or max(1, depth // 3)
    outputs = []

    def add(method: str, make) -> None:  # make() -> (TokenSet, seconds), run only when the method is wanted
        if wanted(method, methods):
            tokens, seconds = make()
            outputs.append(_output(method, tokens, seconds))

    def timed(function, base: float = 0.0):
        def make():
            started = time.perf_counter()
            tokens = function()
            return tokens, base + time.perf_counter() - started
        return make

    for budget in budgets:
        total = output_budget(frames_total, per_frame, budget)
        baseline = max(1, round(total / per_frame))
        tag = f"{budget:g}"

        def whole(frames: np.ndarray) -> tuple[TokenSet, float]:
            return _whole_frames(reference, frames), frame_seconds * len(frames)

        add(f"{tag}/uniform", lambda: whole(even_frames(frames_total, baseline)))
        for factor in (2, 4):
            frames = even_frames(frames_total, baseline * factor)
            tokens, seconds = whole(frames)
            window = (2, 2) if factor == 4 else (1, 2)
            add(f"{tag}/{factor}x/pool{window[0]}x{window[1]}", timed(lambda: pool_frames(tokens, window), seconds))
            # the other compressors get the plan's per-frame share of the budget (what uniform whole frames hold,
            # never more; pooling's edge cells give it a few more tokens than that)
            counts = torch.from_numpy(even_counts(total, len(frames), per_frame))
            add(f"{tag}/{factor}x/random_merge", timed(lambda: random_merge(tokens, counts=counts, seed=seed), seconds))
            if factor != 4:
                continue
            keep = float(counts.float().mean()) / per_frame
            add(f"{tag}/4x/apet", timed(lambda: apet(tokens, keep), seconds))
            add(f"{tag}/4x/duet_v2v", timed(lambda: _per_frame_duet(tokens, reference, float(counts.float().mean())), seconds))
            add(f"{tag}/4x/xray_in_model", timed(lambda: encode_frames(_xray_model(model, keep, xray_blocks), patches, reference.picture, frames)))
            # inside the ViT: each frame merged after block L, the remaining blocks with proportional attention
            share = counts.numpy()
            inside = {"apet": frame_merge(FrozenSettings(compressor="apet"), share),
                      "random_merge": frame_merge(FrozenSettings(compressor="random_merge", seed=seed), share),
                      "duet_v2v": lambda frame, j: duet_v2v(frame, min(1.0, int(share[j]) / frame.n_tokens))}
            for name, rule in inside.items():
                add(f"{tag}/4x/{name}@{after}", timed(lambda rule=rule: encode_frames(model, patches, reference.picture, frames, merge=(after, rule))))
            # codec rules, with random merge: frames by activity, or even frames with tokens by activity
            chosen = activity_frames(score, len(frames))
            add(f"{tag}/4x/codec_frames+random_merge", timed(
                lambda: random_merge(_whole_frames(reference, chosen), counts=torch.from_numpy(even_counts(total, len(chosen), per_frame)), seed=seed),
                frame_seconds * len(chosen)))
            span = np.add.reduceat(score, frames)  # activity since each chosen frame up to the next
            add(f"{tag}/4x/codec_alloc+random_merge", timed(
                lambda: random_merge(tokens, counts=torch.from_numpy(activity_counts(span, int(counts.sum()), per_frame)), seed=seed), seconds))
        if budget not in sparse_budgets or not wanted(f"{tag}/codec_sparse_patches", methods):
            continue
        started = time.perf_counter()
        mask = codec_mask(samples, config, total)
        encoded = encode_per_frame(model, patches, mask)
        sparse = TokenSet(encoded.tokens, torch.zeros(len(encoded.tokens), 3, dtype=torch.int64), encoded.frame,
                          torch.arange(len(encoded.tokens)))
        outputs.append(_output(f"{tag}/codec_sparse_patches", sparse, time.perf_counter() - started))
    return outputs


def score_outputs(dense: list[DenseClip], outputs: list[list[Output]], segments: int = 4, detail_stride: int = 4) -> dict[str, dict]:
    """Per method: clip averages and per-clip values of cosine, detail; segment recall@1 and mean rank."""
    references = torch.stack([clip.patch_embedding() for clip in dense])
    segment_refs = torch.cat([torch.stack([clip.patch_embedding(np.flatnonzero(segment_of(clip.n_frames, segments) == s))
                                           for s in range(segments)]) for clip in dense])
    results = {}
    for m, method in enumerate(o.method for o in outputs[0]):
        mine = [clip_outputs[m] for clip_outputs in outputs]
        embeddings = torch.stack([(o.tokens * o.sizes[:, None]).sum(0) / o.sizes.sum() for o in mine])
        cosines = F.cosine_similarity(embeddings, references).tolist()
        segment_rank = ranks(torch.cat([weighted_segments(o, clip.n_frames, segments) for o, clip in zip(mine, dense)]), segment_refs)
        details = [detail(clip, o, segments, detail_stride) for clip, o in zip(dense, mine)]
        results[method] = {
            "cosine": float(np.mean(cosines)), "per_clip_cosine": [round(c, 5) for c in cosines],
            "detail": float(np.mean(details)), "per_clip_detail": [round(d, 5) for d in details],
            "segment_recall_at_1": float((segment_rank == 1).mean()), "segment_mean_rank": float(segment_rank.mean()),
            "per_clip_segment_recall_at_1": [float((r == 1).mean()) for r in segment_rank.reshape(len(dense), segments)],
            "tokens": float(np.mean([len(o.tokens) for o in mine])), "seconds": float(np.mean([o.seconds for o in mine])),
        }
    return results


def evaluate_frozen(model: SparseViT, clips: list[ClipSamples], config: PatchifyConfig, budgets: tuple[float, ...] = BUDGETS,
                    segments: int = 4, detail_stride: int = 4, progress=None, methods: tuple[str, ...] | None = None) -> dict:
    """Score every method (or those ``methods`` asks for, see ``wanted``) on ``clips``. Returns {"clips": names,
    "methods": {...}, "dense_seconds": mean}."""
    if model.config.patch != config.patch:
        raise ValueError(f"the ViT's patch is {model.config.patch} px but patchify's is {config.patch} px")
    dense, outputs = [], []
    for samples in clips:
        reference = encode_dense(model, samples, f"{samples.info.source}#{samples.info.clip_index}")
        outputs.append(frozen_outputs(model, samples, reference, config, budgets, methods=methods))
        dense.append(reference)
        if progress is not None:
            progress(reference.name)
    if not dense:
        raise ValueError("no clips to score")
    return {"clips": [clip.name for clip in dense], "methods": score_outputs(dense, outputs, segments, detail_stride),
            "dense_seconds": float(np.mean([clip.seconds for clip in dense]))}


def format_frozen_table(methods: dict[str, dict]) -> str:
    """A plain-text table, one method per row."""
    header = f"{'method':36} {'tokens':>7} {'cosine':>7} {'detail':>7} {'segR@1':>6} {'rank':>5} {'ms/clip':>8}"
    lines = [header, "-" * len(header)]
    for method, r in methods.items():
        lines.append(f"{method:36} {r['tokens']:7.0f} {r['cosine']:7.4f} {r['detail']:7.4f} {r['segment_recall_at_1']:6.2f} "
                     f"{r['segment_mean_rank']:5.2f} {1000 * r['seconds']:8.0f}")
    return "\n".join(lines)
