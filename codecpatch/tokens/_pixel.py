"""The `pixel` encoder: no weights, the normalised flattened patch, optionally projected to a smaller D by
a fixed, seeded orthonormal matrix (so the whole pipeline runs anywhere, deterministically)."""

from __future__ import annotations

import time

import numpy as np
import torch

from ._types import StageCount, TokenSet

#: ImageNet channel statistics, the usual normalisation of ViT inputs.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def orthonormal_projection(in_dim: int, out_dim: int, seed: int = 0) -> torch.Tensor:
    """(in_dim, out_dim) float32 matrix with orthonormal columns, the same for the same seed everywhere."""
    if not 0 < out_dim <= in_dim:
        raise ValueError(f"projection dim must be in 1..{in_dim}, got {out_dim}")
    generator = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(in_dim, out_dim, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r))  # unique up to nothing: fix the column signs
    return q.to(torch.float32)


def encode_pixels(pixels: np.ndarray | torch.Tensor, positions: np.ndarray | torch.Tensor, group: np.ndarray | torch.Tensor,
                  dim: int | None = None, seed: int = 0) -> TokenSet:
    """Encode (K, 3, P, P) uint8 patches as (K, D) tokens.

    Args:
        pixels: (K, 3, P, P) uint8 RGB.
        positions: (K, 3) (t, h, w).
        group: (K,) sampled-frame index of each patch.
        dim: project to this many dimensions (None keeps 3 * P * P).
        seed: seed of the projection.
    """
    started = time.perf_counter()
    pixels = torch.as_tensor(np.asarray(pixels))
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    tokens = ((pixels.to(torch.float32) / 255.0 - mean) / std).flatten(1)
    if dim is not None and dim != tokens.shape[1]:
        tokens = tokens @ orthonormal_projection(tokens.shape[1], dim, seed)
    count = tokens.shape[0]
    return TokenSet(
        tokens=tokens,
        positions=torch.as_tensor(np.asarray(positions), dtype=torch.int64),
        group=torch.as_tensor(np.asarray(group), dtype=torch.int64),
        absorbed_into=torch.arange(count),
        stages=(StageCount("pixel" if dim is None else f"pixel:{dim}", count, count, time.perf_counter() - started),),
    )
