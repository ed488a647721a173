"""Checkpoint loading for SparseViT: Hugging Face CLIP / SigLIP / DINOv2 (with or without registers), timm ViTs
(DINOv2 included) and OpenCLIP layouts mapped onto our parameter names. Local files only (no hub).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch

from ._vit import IMAGENET_MEAN, IMAGENET_STD, SparseViT, ViTConfig

log = logging.getLogger("codecpatch.tokens")

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
