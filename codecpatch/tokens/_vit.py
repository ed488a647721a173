"""A compact ViT that encodes a *sparse* set of patches at their (t, h, w) positions, with EViT token
reorganisation (Xray) inside chosen blocks (its pure functions are in ``_evit``); ``_checkpoints.load_vit`` loads weights.

Positions: learned 2-D embeddings of the checkpoint, bicubically interpolated to the canvas patch grid
(antialiased when shrinking, as DINOv2 does), plus a temporal embedding over the 64-slot timeline
(zero-initialised, so image weights are unchanged). DINOv2 extras: LayerScale (a learned per-channel gain on
each residual branch) and register tokens (extra learned tokens after [CLS], without a position).
Attention is ``torch.nn.functional.scaled_dot_product_attention`` over padded batches with a key mask; the
Xray blocks compute only the [CLS] query row of attention on the side, so every block keeps the fused kernel.
``forward_merging`` merges each frame's tokens after block L (ApET, DUET, ...) and runs the remaining blocks with
proportional attention (``_proportional``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ._evit import reorganise
from ._proportional import FrameMerge, merge_hidden, size_bias
from ._types import StageCount, TokenSet

Activation = Literal["quick_gelu", "gelu", "gelu_tanh"]

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ViTConfig:
    """Shape of the ViT.

    Attributes:
        dim, depth, heads, mlp_dim: transformer width, blocks, attention heads, MLP hidden width.
        patch: patch side in pixels.
        patch_bias: the patch embedding has a bias (timm, SigLIP) or not (CLIP, OpenCLIP).
        pos_grid: side of the checkpoint's square 2-D position-embedding grid.
        cls: the model has a [CLS] token.
        pre_norm: LayerNorm after the embeddings (CLIP's ``pre_layrnorm``).
        final_norm: LayerNorm at the end, on every token ("all", SigLIP) or only on [CLS] ("cls", CLIP's pooled
            output; tokens are returned before it).
        activation: MLP activation.
        eps: LayerNorm epsilon.
        layer_scale: each block scales its attention and MLP outputs by learned per-channel gains (DINOv2).
        registers: register tokens after [CLS] (DINOv2 with registers); they have no position embedding and
            are not returned.
        pos_antialias: antialias the bicubic position resize when the grid shrinks (timm; transformers'
            DINOv2 with registers); plain bicubic otherwise (CLIP, SigLIP, transformers' Dinov2Model).
        image_mean, image_std: per-channel normalisation of [0, 1] pixels the checkpoint was trained with.
        timeline_slots: length of the temporal-embedding table.
        xray_blocks: one-indexed blocks after whose attention EViT reorganises tokens (empty = plain ViT).
        xray_keep: fraction of (non-[CLS]) tokens kept at each of those blocks (EViT's fixed rate).
        xray_threshold: instead of a rate, keep the tokens whose query attention is at least this multiple of
            uniform attention (1/N), the brief's rule; the count that results is reported.
    """

    dim: int = 192
    depth: int = 12
    heads: int = 3
    mlp_dim: int = 768
    patch: int = 16
    patch_bias: bool = False
    pos_grid: int = 14
    cls: bool = True
    pre_norm: bool = True
    final_norm: Literal["all", "cls", "none"] = "cls"
    activation: Activation = "quick_gelu"
    eps: float = 1e-5
    layer_scale: bool = False
    registers: int = 0
    pos_antialias: bool = False
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    timeline_slots: int = 64
    xray_blocks: tuple[int, ...] = field(default_factory=tuple)
    xray_keep: float = 0.7
    xray_threshold: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.xray_keep <= 1.0:
            raise ValueError(f"xray_keep must be in (0, 1], got {self.xray_keep}")
        if any(not 1 <= block <= self.depth for block in self.xray_blocks):
            raise ValueError(f"xray_blocks are one-indexed blocks 1..{self.depth}, got {self.xray_blocks}")
        if self.registers and not self.cls:
            raise ValueError("register tokens need a [CLS] token (DINOv2 layout)")

    @property
    def prefix_tokens(self) -> int:
        """Tokens before the patches: [CLS] and the registers."""
        return int(self.cls) + self.registers


class _LayerScale(nn.Module):
    """DINOv2's per-channel gain on a residual branch: (..., D) -> (..., D)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _Block(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.norm1 = nn.LayerNorm(config.dim, eps=config.eps)
        self.q, self.k, self.v = (nn.Linear(config.dim, config.dim) for _ in range(3))
        self.proj = nn.Linear(config.dim, config.dim)
        self.norm2 = nn.LayerNorm(config.dim, eps=config.eps)
        self.fc1 = nn.Linear(config.dim, config.mlp_dim)
        self.fc2 = nn.Linear(config.mlp_dim, config.dim)
        self.ls1 = _LayerScale(config.dim) if config.layer_scale else nn.Identity()
        self.ls2 = _LayerScale(config.dim) if config.layer_scale else nn.Identity()
        self.activation = config.activation

    def attention(self, x: torch.Tensor, key_mask: torch.Tensor, cls_row: bool, row_query: torch.Tensor | None = None,
                  sizes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, L, D) -> (attention output (B, L, D), query-row attention (B, L) averaged over heads).

        The row is the first token's ([CLS]) unless ``row_query`` (B, 1, D) gives another query token
        (which does not take part in the attention itself). ``sizes`` (B, L): proportional attention (ToMe):
        a token that stands for n merged tokens gets log(n) added to its attention logits as a key."""
        b, length, dim = x.shape
        h = self.norm1(x)
        q, k, v = (proj(h).view(b, length, self.heads, dim // self.heads).transpose(1, 2) for proj in (self.q, self.k, self.v))
        mask = key_mask[:, None, None, :]
        if sizes is not None:
            mask = size_bias(sizes, key_mask, q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        row = None
        if cls_row:  # only the first query's row, computed on the side: the fused kernel above stays fused
            query = q[:, :, :1]
            if row_query is not None:
                query = self.q(self.norm1(row_query)).view(b, 1, self.heads, dim // self.heads).transpose(1, 2)
            logits = (query @ k.transpose(-1, -2)) / math.sqrt(dim // self.heads)
            logits = logits + mask if mask.dtype != torch.bool else logits.masked_fill(~mask, float("-inf"))
            row = torch.softmax(logits, dim=-1)[:, :, 0].mean(dim=1)
        return self.ls1(self.proj(out.transpose(1, 2).reshape(b, length, dim))), row

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(self.norm2(x))
        if self.activation == "quick_gelu":
            h = h * torch.sigmoid(1.702 * h)
        else:
            h = F.gelu(h, approximate="tanh" if self.activation == "gelu_tanh" else "none")
        return self.ls2(self.fc2(h))


class SparseViT(nn.Module):
    """ViT over sparse patches. See the module docstring; build with ``load_vit`` or ``SparseViT(ViTConfig())``."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = nn.Conv2d(3, config.dim, config.patch, config.patch, bias=config.patch_bias)
        self.cls_token = nn.Parameter(torch.zeros(config.dim)) if config.cls else None
        self.cls_pos = nn.Parameter(torch.zeros(config.dim)) if config.cls else None
        self.register_tokens = nn.Parameter(torch.zeros(config.registers, config.dim)) if config.registers else None
        self.pos_embed = nn.Parameter(torch.zeros(config.pos_grid, config.pos_grid, config.dim))
        self.time_embed = nn.Parameter(torch.zeros(config.timeline_slots, config.dim))
        self.pre_norm = nn.LayerNorm(config.dim, eps=config.eps) if config.pre_norm else nn.Identity()
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.depth))
        self.final_norm = nn.LayerNorm(config.dim, eps=config.eps) if config.final_norm != "none" else nn.Identity()

    def position_grid(self, rows: int, cols: int) -> torch.Tensor:
        """(rows, cols, D) 2-D position embeddings, bicubically resized from the checkpoint's grid."""
        table = self.pos_embed
        if table.shape[:2] == (rows, cols):
            return table
        resized = F.interpolate(table.float().permute(2, 0, 1)[None], size=(rows, cols), mode="bicubic", align_corners=False,
                                antialias=self.config.pos_antialias)
        return resized[0].permute(1, 2, 0).to(table.dtype)

    def forward(self, pixels: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor, grid: tuple[int, int]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Encode a padded batch of sparse patch sets.

        Args:
            pixels: (B, K, 3, P, P) float, normalised.
            positions: (B, K, 3) int64 (t, h, w).
            valid: (B, K) bool, False on padding.
            grid: (rows, cols) of the canvas patch grid.
        Returns:
            tokens (B, K', D), token_valid (B, K'), cls (B, D) or None, and ``source`` (B, K) int64: for
            every input patch, the output token index that carries it (K' < K after Xray blocks).
        """
        x, valid = self.embed(pixels, positions, valid, grid)
        b, k = pixels.shape[:2]
        source = torch.arange(k, device=x.device).expand(b, k).clone()
        x, valid, source = self.run_blocks(x, valid, source, 0, self.config.depth)
        return (*self.head(x, valid), source)

    def forward_merging(self, pixels: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor, grid: tuple[int, int],
                        after: int, merge: FrameMerge) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``forward`` with each frame's patch tokens merged by ``merge`` after block ``after`` (one-indexed,
        1 .. depth - 1) and the remaining blocks run with proportional attention (``_proportional``): ApET or
        DUET inside the model. Arguments and returns as ``forward``; ``source`` says which output token carries
        each input patch, so the output sizes are its bincount. Not with Xray blocks."""
        if not 1 <= after < self.config.depth:
            raise ValueError(f"merge after block {after}: expected 1..{self.config.depth - 1} (the ViT has {self.config.depth} blocks)")
        if self.config.xray_blocks:
            raise ValueError("merging inside the ViT and Xray blocks do not combine (proportional attention needs sizes)")
        x, valid = self.embed(pixels, positions, valid, grid)
        b, k = pixels.shape[:2]
        source = torch.arange(k, device=x.device).expand(b, k).clone()
        x, valid, source = self.run_blocks(x, valid, source, 0, after)
        x, valid, sizes, source = merge_hidden(x, valid, self.config.prefix_tokens, positions, merge)
        x, valid, source = self.run_blocks(x, valid, source, after, self.config.depth, sizes=sizes)
        return (*self.head(x, valid), source)

    def embed(self, pixels: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor, grid: tuple[int, int]
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch + position embeddings with the prefix ([CLS], registers) in front: (B, prefix + K, D) and its
        validity (B, prefix + K). Arguments as ``forward``."""
        b, k = pixels.shape[:2]
        config = self.config
        x = self.patch_embed(pixels.flatten(0, 1)).flatten(1).view(b, k, config.dim)
        pos = self.position_grid(*grid)
        x = x + pos[positions[..., 1], positions[..., 2]] + self.time_embed[positions[..., 0].clamp(0, config.timeline_slots - 1)]
        prefix = []
        if self.cls_token is not None:
            prefix.append((self.cls_token + self.cls_pos).expand(b, 1, config.dim))
        if self.register_tokens is not None:
            prefix.append(self.register_tokens.expand(b, config.registers, config.dim))
        offset = config.prefix_tokens
        if offset:
            x = torch.cat([*prefix, x], dim=1)
            valid = torch.cat([torch.ones(b, offset, dtype=torch.bool, device=valid.device), valid], dim=1)
        return self.pre_norm(x), valid

    def run_blocks(self, x: torch.Tensor, valid: torch.Tensor, source: torch.Tensor, start: int, stop: int,
                   sizes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Blocks ``start`` .. ``stop - 1`` (zero-indexed) on the hidden states ``x`` (B, prefix + K, D).

        ``sizes`` (B, prefix + K): how many tokens each one stands for, for proportional attention after a
        merge (not with Xray blocks in the range). Returns the new (x, valid, source)."""
        config = self.config
        offset = config.prefix_tokens
        for number in range(start + 1, stop + 1):
            block = self.blocks[number - 1]
            xray = number in config.xray_blocks
            if xray and sizes is not None:
                raise ValueError("proportional attention (sizes) cannot run through Xray blocks")
            if xray and self.cls_token is None:
                # No [CLS]: the mean token is the query of the side row (EViT needs one).
                mean = (x * valid[..., None]).sum(1, keepdim=True) / valid.sum(1, keepdim=True)[..., None]
                attended, row = block.attention(x, valid, True, row_query=mean)
            else:
                attended, row = block.attention(x, valid, xray, sizes=sizes)
            x = x + attended
            if xray:
                x, valid, source = reorganise(x, valid, source, row, offset, config.xray_keep, config.xray_threshold)
            x = x + block.mlp(x)
        return x, valid, source

    def head(self, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Final norm; drop the prefix: (tokens (B, K', D), valid (B, K'), cls (B, D) or None)."""
        config = self.config
        cls = None
        if self.cls_token is not None:
            cls = self.final_norm(x[:, 0]) if config.final_norm != "none" else x[:, 0]
            x, valid = x[:, config.prefix_tokens :], valid[:, config.prefix_tokens :]
        if config.final_norm == "all":
            x = self.final_norm(x)
        return x, valid, cls


def encode_with_vit(model: SparseViT, pixels, positions, group, grid: tuple[int, int], mean=None, std=None) -> TokenSet:
    """Encode one clip's kept patches ((K, 3, P, P) uint8) into a TokenSet, normalised with ``mean``/``std``
    (default: the checkpoint's, ``model.config.image_mean``/``image_std``).

    Xray's fused token takes the position and frame of the most attended token it absorbed.
    """
    started = time.perf_counter()
    parameter = next(model.parameters())
    mean = model.config.image_mean if mean is None else mean
    std = model.config.image_std if std is None else std
    pixels = torch.as_tensor(pixels).to(parameter.device)
    positions = torch.as_tensor(positions, dtype=torch.int64).to(parameter.device)
    group = torch.as_tensor(group, dtype=torch.int64).to(parameter.device)
    normalised = (pixels.to(torch.float32) / 255.0 - torch.tensor(mean, device=parameter.device).view(1, 3, 1, 1)) \
        / torch.tensor(std, device=parameter.device).view(1, 3, 1, 1)
    with torch.inference_mode():
        tokens, valid, cls, source = model(normalised[None].to(parameter.dtype), positions[None],
                                           torch.ones(1, len(positions), dtype=torch.bool, device=parameter.device), grid)
    tokens, source = tokens[0][valid[0]], source[0]
    representative = torch.full((tokens.shape[0],), -1, dtype=torch.long, device=tokens.device)
    representative.scatter_reduce_(0, source, torch.arange(len(source), device=tokens.device), reduce="amin", include_self=False)
    n = len(positions)
    name = "vit"
    if model.config.xray_blocks and (model.config.xray_keep < 1 or model.config.xray_threshold is not None):
        name += "+xray" + ("" if model.config.cls else "(query=mean)")  # no [CLS]: say which query scored
    stage = StageCount(name, n, tokens.shape[0], time.perf_counter() - started)
    return TokenSet(tokens.float().cpu(), positions[representative].cpu(), group[representative].cpu(), source.cpu(),
                    None if cls is None else cls[0].float().cpu(), (stage,))


def parse_xray(spec: str) -> dict:
    """ViTConfig overrides from an Xray spec: "" (off), "default" (blocks 4, 8, 11 keeping 0.7),
    "4,8,11@0.7" (blocks @ keep rate) or "4,8,11@threshold=1.0". Raises ValueError naming the spec."""
    if not spec:
        return {}
    blocks, _, rule = ("4,8,11@0.7" if spec == "default" else spec).partition("@")
    try:
        overrides: dict = {"xray_blocks": tuple(int(b) for b in blocks.split(",") if b)}
        if rule.startswith("threshold="):
            overrides["xray_threshold"] = float(rule.removeprefix("threshold="))
        else:
            overrides["xray_keep"] = float(rule or 0.7)
    except ValueError:
        raise ValueError(f"xray {spec!r}: expected default, 4,8,11@0.7 or 4,8,11@threshold=1.0") from None
    return overrides
