"""Merging inside a ViT: after block L, each frame's patch tokens are merged (ApET, DUET V2V, random merge,
pooling: any TokenSet -> TokenSet compressor), and the remaining blocks run with *proportional attention*
(ToMe): a token that stands for ``s`` patches gets ``log s`` added to its attention logits as a key, so it
draws the attention ``s`` identical tokens of size 1 would. Pure torch; the model hook is
``SparseViT.forward_merging``, which calls ``merge_hidden`` between its two ``run_blocks``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ._types import TokenSet

#: One frame's merge: (its patch tokens after block L as a TokenSet, the frame's row in the batch) -> the
#: compressed TokenSet (``absorbed_into`` says which output token carries each input token).
FrameMerge = Callable[[TokenSet, int], TokenSet]


def size_bias(sizes: torch.Tensor, key_mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, 1, 1, L) additive attention mask: log(size) of each valid key, -inf on padding.

    ``sizes`` (B, L) float, how many tokens each key stands for (1 for an unmerged token: bias 0);
    ``key_mask`` (B, L) bool, False on padding."""
    bias = torch.log(sizes.to(torch.float32).clamp_min(1e-12)).masked_fill(~key_mask, float("-inf"))
    return bias.to(dtype)[:, None, None, :]


def proportional_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sizes: torch.Tensor,
                           key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + log sizes) v: (B, H, L, d) queries, keys, values; ``sizes`` (B, L) per key.

    A key of size 2 weighs exactly as two identical keys of size 1 (its exp(logit) is counted twice)."""
    mask = key_mask if key_mask is not None else torch.ones(sizes.shape, dtype=torch.bool, device=sizes.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=size_bias(sizes, mask, q.dtype))


def merge_hidden(x: torch.Tensor, valid: torch.Tensor, prefix: int, positions: torch.Tensor, merge: FrameMerge
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge each row's patch tokens with ``merge`` and re-pad the batch.

    Args:
        x: (B, prefix + K, D) hidden states after some block; ``valid`` (B, prefix + K) bool.
        prefix: [CLS] + register tokens in front (kept as they are; the row's [CLS] hidden state is the
            TokenSet's ``cls``, the query DUET V2V scores with).
        positions: (B, K, 3) int64 (t, h, w) of the patch tokens (what pooling cells need).
        merge: the per-frame compressor.
    Returns:
        x' (B, prefix + K', D), valid' (B, prefix + K'), sizes (B, prefix + K') float (prefix and padding 1),
        source (B, K) int64: for each input patch, the index of the output patch token (after the prefix)
        that carries it (0 for padding).
    """
    b, _, dim = x.shape
    parts = []
    for i in range(b):  # one iteration per frame
        index = torch.nonzero(valid[i, prefix:]).flatten()
        hidden = x[i, prefix:][index].float().cpu()
        group = torch.zeros(len(index), dtype=torch.int64)
        cls = x[i, 0].float().cpu() if prefix else None
        frame = TokenSet(hidden, positions[i][index].cpu(), group, torch.arange(len(index)), cls, ())
        parts.append((index, merge(frame, i)))
    width = prefix + max((out.n_tokens for _, out in parts), default=0)
    merged = x.new_zeros(b, width, dim)
    merged[:, :prefix] = x[:, :prefix]
    new_valid = torch.zeros(b, width, dtype=torch.bool, device=x.device)
    new_valid[:, :prefix] = True
    sizes = torch.ones(b, width, device=x.device)
    source = torch.zeros(valid.shape[0], valid.shape[1] - prefix, dtype=torch.int64, device=x.device)
    for i, (index, out) in enumerate(parts):  # one iteration per frame
        k = out.n_tokens
        merged[i, prefix : prefix + k] = out.tokens.to(x.device, x.dtype)
        new_valid[i, prefix : prefix + k] = True
        sizes[i, prefix : prefix + k] = out.sizes.to(x.device, torch.float32)
        source[i, index.to(x.device)] = out.absorbed_into.to(x.device)
    return merged, new_valid, sizes, source


__all__ = ["FrameMerge", "merge_hidden", "proportional_attention", "size_bias"]
