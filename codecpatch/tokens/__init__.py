"""Tokens: encoders turn a PatchSet into a TokenSet; compressors (ApET, DUET, Xray, pooling, random merge) shrink it.
Pure torch."""

from ._apet import apet, farthest_point_basis, reconstruction_error
from ._baselines import random_prune, stride_prune
from ._chain import compress, parse_chain
from ._duet import duet_t2v, duet_v2v, prune_hidden_states, text_guided_scores
from ._merge import relative_rebuild_error
from ._proportional import FrameMerge, merge_hidden, proportional_attention, size_bias
from ._pool import pool_frames, random_merge, weighted_merge
from ._pixel import encode_pixels, orthonormal_projection
from ._text import ClipTextTower, TextTower
from ._types import StageCount, TokenSet
from ._checkpoints import default_device_and_dtype, load_state_dict, load_vit
from ._evit import evit_keep, reorganise
from ._vit import IMAGENET_MEAN, IMAGENET_STD, SparseViT, ViTConfig, encode_with_vit, parse_xray

__all__ = [
    "FrameMerge",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "default_device_and_dtype",
    "evit_keep",
    "reorganise",
    "ClipTextTower",
    "TextTower",
    "SparseViT",
    "StageCount",
    "TokenSet",
    "ViTConfig",
    "apet",
    "compress",
    "duet_t2v",
    "duet_v2v",
    "encode_pixels",
    "encode_with_vit",
    "farthest_point_basis",
    "load_state_dict",
    "load_vit",
    "merge_hidden",
    "orthonormal_projection",
    "parse_chain",
    "parse_xray",
    "proportional_attention",
    "prune_hidden_states",
    "pool_frames",
    "random_merge",
    "random_prune",
    "weighted_merge",
    "reconstruction_error",
    "relative_rebuild_error",
    "size_bias",
    "stride_prune",
    "text_guided_scores",
]
