"""ApET: approximate each token from a farthest-point basis by ridge regression; keep what the basis cannot
explain. Pure torch.

Per group: farthest-point sampling picks ``n_basis`` basis tokens (seeded start); every token is rebuilt from
the basis by ridge regression (lambda 1e-5, fp32); the tokens with the highest reconstruction error are kept
(a fixed budget, the official code's rule; ``threshold`` gives the brief's rule instead: drop tokens whose
relative error is below it). The basis is always kept (in the slots of the lowest-error kept tokens); every
dropped token is averaged into its most cosine-similar kept token; original order is preserved.
"""

from __future__ import annotations

import torch

from ._merge import Scope, apply_by_group, assign_to_nearest, average_into
from ._types import TokenSet


def farthest_point_basis(tokens: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """(count,) indices chosen by farthest-point sampling in Euclidean distance from a seeded start.

    ``tokens`` is (n, D); a loop over the ``count`` basis picks (10 by default), never over tokens."""
    n = tokens.shape[0]
    count = min(count, n)
    start = int(torch.randint(n, (1,), generator=torch.Generator().manual_seed(seed)))
    chosen = [start]
    distance = torch.linalg.vector_norm(tokens - tokens[start], dim=1)
    for _ in range(count - 1):
        nxt = int(torch.argmax(distance))
        chosen.append(nxt)
        distance = torch.minimum(distance, torch.linalg.vector_norm(tokens - tokens[nxt], dim=1))
    return torch.tensor(chosen, dtype=torch.int64)


def reconstruction_error(tokens: torch.Tensor, basis: torch.Tensor, ridge: float = 1e-5) -> torch.Tensor:
    """(n,) ||x - x_hat|| where x_hat is the ridge-regression reconstruction of x from the (m, D) basis (fp32)."""
    tokens, basis = tokens.to(torch.float32), basis.to(torch.float32)
    gram = basis @ basis.T + ridge * torch.eye(basis.shape[0])
    coefficients = torch.linalg.solve(gram, basis @ tokens.T).T  # (n, m)
    return torch.linalg.vector_norm(tokens - coefficients @ basis, dim=1)


def apet(tokens: TokenSet, keep_ratio: float = 0.25, *, scope: Scope = "frame", n_basis: int = 10, ridge: float = 1e-5,
         threshold: float | None = None, seed: int = 0) -> TokenSet:
    """Compress ``tokens`` with ApET.

    Args:
        keep_ratio: fraction of each group's tokens kept (fixed budget).
        scope: "frame" runs per sampled frame (the paper's per-image rule), "clip" over all tokens.
        n_basis: farthest-point basis size M.
        ridge: ridge lambda.
        threshold: if given, keep instead every token whose relative error ||x - x_hat|| / ||x|| is at least
            this (plus the basis); the resulting count is reported in the stage.
        seed: FPS start seed.
    """
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")

    def rule(x: torch.Tensor, budget: int):
        n = x.shape[0]
        basis = farthest_point_basis(x, min(n_basis, budget), seed)
        error = reconstruction_error(x, x[basis], ridge)
        is_basis = torch.zeros(n, dtype=torch.bool)
        is_basis[basis] = True
        if threshold is not None:
            relative = error / torch.linalg.vector_norm(x, dim=1).clamp_min(1e-8)
            keep_mask = is_basis | (relative >= threshold)
        else:
            ranked = torch.argsort(torch.where(is_basis, torch.tensor(-1.0), error), descending=True, stable=True)
            keep_mask = is_basis.clone()
            keep_mask[ranked[: max(0, budget - int(is_basis.sum()))]] = True
        kept = torch.nonzero(keep_mask).flatten()
        assignment = assign_to_nearest(x, kept)
        return kept, average_into(x, assignment, len(kept)), assignment

    name = f"apet:{keep_ratio:g}" if threshold is None else f"apet:threshold={threshold:g}"
    return apply_by_group(tokens, rule, keep_ratio, scope, name)
