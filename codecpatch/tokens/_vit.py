"""A compact ViT that encodes a *sparse* set of patches at their (t, h, w) positions, with EViT token
reorganisation (Xray) inside chosen blocks, and weight loading from Hugging Face CLIP / SigLIP / DINOv2
(with or without registers) vision towers, timm ViTs (DINOv2 included) and OpenCLIP.

Positions: learned 2-D embeddings of the checkpoint, bicubically interpolated to the canvas patch grid
(antialiased when shrinking, as DINOv2 does), plus a temporal embedding over the 64-slot timeline
(zero-initialised, so image weights are unchanged). DINOv2 extras: LayerScale (a learned per-channel gain on
each residual branch) and register tokens (extra learned tokens after [CLS], without a position).
Attention is ``torch.nn.functional.scaled_dot_product_attention`` over padded batches with a key mask; the
Xray blocks compute only the [CLS] query row of attention on the side, so every block keeps the fused kernel.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ._types import StageCount, TokenSet

log = logging.getLogger("codecpatch.tokens")

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
            mask = torch.log(sizes.clamp_min(1e-12)).to(q.dtype).masked_fill(~key_mask, float("-inf"))[:, None, None, :]
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
                x, valid, source = _reorganise(x, valid, source, row, offset, config.xray_keep, config.xray_threshold)
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


def _reorganise(x: torch.Tensor, valid: torch.Tensor, source: torch.Tensor, row: torch.Tensor, offset: int, keep: float,
                threshold: float | None = None):
    """EViT: keep the ceil(keep * N) most attended tokens (or, with ``threshold``, those attended at least
    threshold / N), fuse the rest into one token weighted by their attention. Loops over the batch (clips),
    never over tokens. Returns the new (x, valid, source)."""
    b = x.shape[0]
    outputs, sources = [], []
    for i in range(b):
        tokens = x[i, offset:][valid[i, offset:]]
        scores = row[i, offset:][valid[i, offset:]]
        n = tokens.shape[0]
        if threshold is None:
            count = min(n, math.ceil(keep * n))
        else:
            count = max(1, int((scores * n >= threshold).sum()))
        order = torch.argsort(scores, descending=True, stable=True)
        kept, rest = torch.sort(order[:count]).values, order[count:]
        new_index = torch.empty(n, dtype=torch.long, device=x.device)
        new_index[kept] = torch.arange(count, device=x.device)
        parts = [x[i, :offset], tokens[kept]]
        if len(rest):
            weights = scores[rest] / scores[rest].sum().clamp_min(1e-12)
            parts.append((weights[:, None] * tokens[rest]).sum(0, keepdim=True))
            new_index[rest] = count
        outputs.append(torch.cat(parts))
        old_slot = torch.full((valid.shape[1] - offset,), -1, dtype=torch.long, device=x.device)
        old_slot[valid[i, offset:]] = torch.arange(n, device=x.device)
        sources.append(new_index[old_slot[source[i]]])
    length = max(o.shape[0] for o in outputs)
    padded = x.new_zeros(b, length, x.shape[2])
    mask = torch.zeros(b, length, dtype=torch.bool, device=x.device)
    for i, out in enumerate(outputs):
        padded[i, : out.shape[0]] = out
        mask[i, : out.shape[0]] = True
    return padded, mask, torch.stack(sources)


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


# -- loading -------------------------------------------------------------------------------------------

_HF_PREFIXES = ("vision_model.", "model.vision_model.")


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a local safetensors or torch checkpoint (never a hub: there is no network)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    if path.is_dir():
        candidates = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin")) or sorted(path.glob("*.pt"))
        if not candidates:
            raise FileNotFoundError(f"{path}: no .safetensors, .bin or .pt file in the folder")
        path = candidates[0]
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _hf_vision_config(path: str | os.PathLike) -> dict:
    """The vision part of a Hugging Face ``config.json`` beside the weights, or {}."""
    import json

    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    config_file = folder / "config.json"
    if not config_file.exists():
        return {}
    config = json.loads(config_file.read_text())
    return config.get("vision_config", config)


def default_device_and_dtype() -> tuple[torch.device, torch.dtype]:
    """CUDA with bfloat16 when a GPU is there, else the CPU in float32."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), torch.float32


def load_vit(path: str | os.PathLike, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
             **overrides) -> SparseViT:
    """Build a SparseViT from a local checkpoint (safetensors or torch file, or a folder holding one).

    Layouts: Hugging Face CLIP and SigLIP vision towers and ``Dinov2Model`` / ``Dinov2WithRegistersModel`` (a
    ``config.json`` beside the weights supplies heads, epsilon and activation), timm ViTs (``blocks.N.attn.qkv``;
    DINOv2's LayerScale ``ls1.gamma`` and ``reg_token`` included) and OpenCLIP visual towers
    (``visual.transformer.resblocks``). ``overrides`` set ViTConfig fields a checkpoint cannot tell (e.g.
    ``heads`` when the head width is not 64, ``activation="quick_gelu"`` for OpenAI-trained timm/OpenCLIP
    weights, ``xray_blocks=(4, 8, 11)``). ``device``/``dtype`` default to CUDA + bfloat16 when a GPU is
    available, else CPU + float32.
    """
    state = load_state_dict(path)
    dinov2_prefix = next((prefix for prefix in _DINOV2_PREFIXES if f"{prefix}embeddings.patch_embeddings.projection.weight" in state), None)
    if dinov2_prefix is not None:
        layout = "Hugging Face DINOv2"
        read = _ReadTracker({key[len(dinov2_prefix):]: value for key, value in state.items() if key.startswith(dinov2_prefix)})
        settings, mapped = _mapped_or_error(lambda tracked: _from_hf_dinov2(tracked, _hf_vision_config(path)), read, path, layout)
        _reject_unmapped(read, path, layout, ignorable=("embeddings.mask_token",))
    elif any(key.startswith("blocks.") and ".attn.qkv." in key for key in state):
        layout, read = "timm", _ReadTracker(state)
        settings, mapped = _mapped_or_error(_from_timm, read, path, layout)
        _reject_unmapped(read, path, layout, ignorable=("head.", "fc_norm.", "attn_pool."))
    elif any(key.startswith("visual.transformer.resblocks.") for key in state):
        layout, read = "OpenCLIP", _ReadTracker(state)
        settings, mapped = _mapped_or_error(_from_open_clip, read, path, layout)
        _reject_unmapped(read, path, layout, ignorable=("visual.proj", "text", "token_embedding", "positional_embedding",
                                                        "transformer.", "ln_final.", "logit_scale", "text_projection",
                                                        "attn_mask", "logit_bias"))
    else:
        layout = "Hugging Face"
        settings, mapped = _from_hugging_face(state, path)
    if not layout.startswith("Hugging Face") and "heads" not in overrides:
        log.warning("%s: %s checkpoints do not record the attention head count; assuming 64-wide heads (%d heads for "
                    "width %d). Pass heads=... if the model uses another head width (e.g. ViT-H/14: 16 heads of 80).",
                    path, layout, settings["heads"], settings["dim"])
    settings.update(overrides)
    model = SparseViT(ViTConfig(**settings))
    mapped["time_embed"] = model.time_embed.detach().clone()
    model.load_state_dict(mapped, strict=True)
    default_device, default_dtype = default_device_and_dtype()
    return model.to(device=device or default_device, dtype=dtype or (default_dtype if device is None else torch.float32)).eval()


class _ReadTracker(dict):
    """A state dict that remembers which keys were read, to find weights a layout mapping did not use."""

    def __init__(self, state: dict) -> None:
        super().__init__(state)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> torch.Tensor:
        self.read.add(key)
        return super().__getitem__(key)


def _mapped_or_error(mapping, state: _ReadTracker, path, layout: str) -> tuple[dict, dict]:
    try:
        return mapping(state)
    except KeyError as missing:
        raise ValueError(f"{path}: a {layout} ViT without {missing}: a variant this loader does not support "
                         "(e.g. no qkv/projection bias, no position embedding)") from None


def _reject_unmapped(state: _ReadTracker, path, layout: str, ignorable: tuple[str, ...]) -> None:
    """Weights the mapping did not use would change the model's output: loading without them would give
    wrong tokens silently, so refuse and name them (classifier heads and pooling are fine to leave out)."""
    unused = sorted(k for k in state if k not in state.read and not k.startswith(ignorable))
    if unused:
        examples = ", ".join(unused[:6]) + (f" and {len(unused) - 6} more" if len(unused) > 6 else "")
        raise ValueError(f"{path}: this {layout} ViT has weights the loader does not support ({examples}): e.g. "
                         "qk-norm, distillation tokens, extra norms, a SwiGLU MLP; loading it would give wrong tokens")


_BLOCK_PARTS = ("norm1", "q", "k", "v", "proj", "norm2", "fc1", "fc2")


def _blocks(depth: int, name_of, split_qkv=None) -> dict[str, torch.Tensor]:
    """Our block tensors from ``name_of(layer, part, kind)`` -> tensor (or ``split_qkv(layer, kind)`` for fused q/k/v)."""
    mapped = {}
    for layer in range(depth):
        for part in _BLOCK_PARTS:
            for kind in ("weight", "bias"):
                if part in ("q", "k", "v") and split_qkv is not None:
                    mapped[f"blocks.{layer}.{part}.{kind}"] = split_qkv(layer, kind)["qkv".index(part)]
                else:
                    mapped[f"blocks.{layer}.{part}.{kind}"] = name_of(layer, part, kind)
    return mapped


def _depth(state: dict, prefix: str, index: int) -> int:
    return 1 + max(int(key.split(".")[index]) for key in state if key.startswith(prefix))


def _from_hugging_face(state: dict, path) -> tuple[dict, dict]:
    hf_config = _hf_vision_config(path)
    for prefix in _HF_PREFIXES:
        if any(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
            break
    if "embeddings.patch_embedding.weight" not in state:
        raise ValueError(f"{path}: not a Hugging Face CLIP/SigLIP, timm or OpenCLIP vision tower")
    is_clip = "embeddings.class_embedding" in state
    dim, _, patch, _ = state["embeddings.patch_embedding.weight"].shape
    positions = state["embeddings.position_embedding.weight"]
    grid = math.isqrt(positions.shape[0] - (1 if is_clip else 0))
    depth = _depth(state, "encoder.layers.", 2)
    settings = dict(dim=dim, depth=depth, heads=max(1, dim // 64), mlp_dim=state["encoder.layers.0.mlp.fc1.weight"].shape[0],
                    patch=patch, patch_bias=not is_clip, pos_grid=grid, cls=is_clip, pre_norm=is_clip,
                    final_norm="cls" if is_clip else "all", activation="quick_gelu" if is_clip else "gelu_tanh",
                    eps=1e-5 if is_clip else 1e-6)
    if hf_config:
        settings["heads"] = hf_config.get("num_attention_heads", settings["heads"])
        settings["eps"] = hf_config.get("layer_norm_eps", settings["eps"])
        activation = hf_config.get("hidden_act")
        if activation in ("quick_gelu", "gelu"):
            settings["activation"] = activation
        elif activation in ("gelu_pytorch_tanh", "gelu_new"):
            settings["activation"] = "gelu_tanh"
    mapped = {"patch_embed.weight": state["embeddings.patch_embedding.weight"],
              "pos_embed": (positions[1:] if is_clip else positions).reshape(grid, grid, dim),
              "final_norm.weight": state["post_layernorm.weight"], "final_norm.bias": state["post_layernorm.bias"]}
    if is_clip:
        mapped.update({"cls_token": state["embeddings.class_embedding"], "cls_pos": positions[0],
                       "pre_norm.weight": state["pre_layrnorm.weight"], "pre_norm.bias": state["pre_layrnorm.bias"]})
    else:
        mapped["patch_embed.bias"] = state["embeddings.patch_embedding.bias"]
    names = {"norm1": "layer_norm1", "norm2": "layer_norm2", "q": "self_attn.q_proj", "k": "self_attn.k_proj",
             "v": "self_attn.v_proj", "proj": "self_attn.out_proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
    mapped.update(_blocks(depth, lambda layer, part, kind: state[f"encoder.layers.{layer}.{names[part]}.{kind}"]))
    return settings, mapped


_DINOV2_PREFIXES = ("", "dinov2.", "backbone.", "model.")


def _from_hf_dinov2(state: dict, hf_config: dict) -> tuple[dict, dict]:
    """Hugging Face ``Dinov2Model`` / ``Dinov2WithRegistersModel``: [CLS] (+ registers) + patches, LayerScale,
    one final LayerNorm on every token, ImageNet normalisation. transformers resizes the position table
    bicubically, antialiased for ``Dinov2WithRegistersModel`` only (as DINOv2's own code for those), so do we."""
    if "encoder.layer.0.mlp.weights_in.weight" in state:
        raise KeyError("mlp.fc1 (this checkpoint uses a SwiGLU MLP, as DINOv2-g does)")
    dim, _, patch, _ = state["embeddings.patch_embeddings.projection.weight"].shape
    positions = state["embeddings.position_embeddings"].reshape(-1, dim)
    grid = math.isqrt(positions.shape[0] - 1)
    registers = state["embeddings.register_tokens"].reshape(-1, dim) if "embeddings.register_tokens" in state else None
    depth = _depth(state, "encoder.layer.", 2)
    activation = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "quick_gelu": "quick_gelu"}
    settings = dict(dim=dim, depth=depth, heads=hf_config.get("num_attention_heads", max(1, dim // 64)),
                    mlp_dim=state["encoder.layer.0.mlp.fc1.weight"].shape[0], patch=patch, patch_bias=True, pos_grid=grid,
                    cls=True, pre_norm=False, final_norm="all", activation=activation[hf_config.get("hidden_act", "gelu")],
                    eps=hf_config.get("layer_norm_eps", 1e-6), layer_scale=True,
                    registers=0 if registers is None else registers.shape[0],
                    pos_antialias=hf_config.get("model_type", "dinov2_with_registers" if registers is not None else "dinov2")
                    == "dinov2_with_registers",
                    image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    mapped = {"patch_embed.weight": state["embeddings.patch_embeddings.projection.weight"],
              "patch_embed.bias": state["embeddings.patch_embeddings.projection.bias"],
              "cls_token": state["embeddings.cls_token"].reshape(dim), "cls_pos": positions[0],
              "pos_embed": positions[1:].reshape(grid, grid, dim),
              "final_norm.weight": state["layernorm.weight"], "final_norm.bias": state["layernorm.bias"]}
    if registers is not None:
        mapped["register_tokens"] = registers
    names = {"norm1": "norm1", "norm2": "norm2", "q": "attention.attention.query", "k": "attention.attention.key",
             "v": "attention.attention.value", "proj": "attention.output.dense", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
    if "encoder.layer.0.attention.q_proj.weight" in state:  # transformers 5's in-memory names (checkpoints keep the above)
        names.update(q="attention.q_proj", k="attention.k_proj", v="attention.v_proj", proj="attention.o_proj")
    mapped.update(_blocks(depth, lambda layer, part, kind: state[f"encoder.layer.{layer}.{names[part]}.{kind}"]))
    for layer in range(depth):
        for ours, theirs in (("ls1", "layer_scale1"), ("ls2", "layer_scale2")):
            mapped[f"blocks.{layer}.{ours}.gamma"] = state[f"encoder.layer.{layer}.{theirs}.lambda1"]
    return settings, mapped


def _from_timm(state: dict) -> tuple[dict, dict]:
    dim, _, patch, _ = state["patch_embed.proj.weight"].shape
    has_cls = "cls_token" in state
    registers = state["reg_token"].reshape(-1, dim) if "reg_token" in state else None
    n_registers = 0 if registers is None else registers.shape[0]
    positions = state["pos_embed"].reshape(-1, dim)
    prefix = int(has_cls) + n_registers
    if prefix and positions.shape[0] == math.isqrt(positions.shape[0] - prefix) ** 2 + prefix:
        cls_pos = positions[0] if has_cls else None
        if registers is not None:  # registers with a position: a constant either way, fold it in
            registers = registers + positions[int(has_cls):prefix]
        grid_positions = positions[prefix:]
    else:  # no_embed_class models keep the prefix tokens out of the position table
        cls_pos, grid_positions = torch.zeros(dim), positions
    grid = math.isqrt(grid_positions.shape[0])
    depth = _depth(state, "blocks.", 1)
    layer_scale = "blocks.0.ls1.gamma" in state
    settings = dict(dim=dim, depth=depth, heads=max(1, dim // 64), mlp_dim=state["blocks.0.mlp.fc1.weight"].shape[0],
                    patch=patch, patch_bias="patch_embed.proj.bias" in state, pos_grid=grid, cls=has_cls,
                    pre_norm="norm_pre.weight" in state, final_norm="all" if "norm.weight" in state else "none",
                    activation="gelu", eps=1e-6, layer_scale=layer_scale, registers=n_registers, pos_antialias=True)
    if layer_scale:  # DINOv2 and DeiT III, the timm families with LayerScale, are ImageNet-normalised
        settings.update(image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    mapped = {"patch_embed.weight": state["patch_embed.proj.weight"], "pos_embed": grid_positions.reshape(grid, grid, dim)}
    if registers is not None:
        mapped["register_tokens"] = registers
    if layer_scale:
        for layer in range(depth):
            mapped[f"blocks.{layer}.ls1.gamma"] = state[f"blocks.{layer}.ls1.gamma"]
            mapped[f"blocks.{layer}.ls2.gamma"] = state[f"blocks.{layer}.ls2.gamma"]
    if "norm.weight" in state:
        mapped.update({"final_norm.weight": state["norm.weight"], "final_norm.bias": state["norm.bias"]})
    # else: an average-pooling timm ViT (use_fc_norm): its token features are not normalised; ``fc_norm``
    # applies to the pooled vector only, which is the caller's business
    if settings["patch_bias"]:
        mapped["patch_embed.bias"] = state["patch_embed.proj.bias"]
    if has_cls:
        mapped.update({"cls_token": state["cls_token"].reshape(dim), "cls_pos": cls_pos})
    if settings["pre_norm"]:
        mapped.update({"pre_norm.weight": state["norm_pre.weight"], "pre_norm.bias": state["norm_pre.bias"]})
    names = {"norm1": "norm1", "norm2": "norm2", "proj": "attn.proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
    mapped.update(_blocks(depth, lambda layer, part, kind: state[f"blocks.{layer}.{names[part]}.{kind}"],
                          lambda layer, kind: state[f"blocks.{layer}.attn.qkv.{kind}"].chunk(3, dim=0)))
    return settings, mapped


def _from_open_clip(state: dict) -> tuple[dict, dict]:
    prefix = "visual."
    dim, _, patch, _ = state[f"{prefix}conv1.weight"].shape
    positions = state[f"{prefix}positional_embedding"]
    grid = math.isqrt(positions.shape[0] - 1)
    blocks = f"{prefix}transformer.resblocks."
    depth = _depth(state, blocks, 3)
    settings = dict(dim=dim, depth=depth, heads=max(1, dim // 64), mlp_dim=state[f"{blocks}0.mlp.c_fc.weight"].shape[0],
                    patch=patch, patch_bias=False, pos_grid=grid, cls=True, pre_norm=True, final_norm="cls",
                    activation="gelu", eps=1e-5)
    mapped = {"patch_embed.weight": state[f"{prefix}conv1.weight"], "pos_embed": positions[1:].reshape(grid, grid, dim),
              "cls_token": state[f"{prefix}class_embedding"], "cls_pos": positions[0],
              "pre_norm.weight": state[f"{prefix}ln_pre.weight"], "pre_norm.bias": state[f"{prefix}ln_pre.bias"],
              "final_norm.weight": state[f"{prefix}ln_post.weight"], "final_norm.bias": state[f"{prefix}ln_post.bias"]}
    names = {"norm1": "ln_1", "norm2": "ln_2", "proj": "attn.out_proj", "fc1": "mlp.c_fc", "fc2": "mlp.c_proj"}
    in_proj = {"weight": "attn.in_proj_weight", "bias": "attn.in_proj_bias"}
    mapped.update(_blocks(depth, lambda layer, part, kind: state[f"{blocks}{layer}.{names[part]}.{kind}"],
                          lambda layer, kind: state[f"{blocks}{layer}.{in_proj[kind]}"].chunk(3, dim=0)))
    return settings, mapped
