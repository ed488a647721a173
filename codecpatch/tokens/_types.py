"""TokenSet: what encoders make from a PatchSet and what compressors shrink."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class StageCount:
    """One stage of the token pipeline: its name, tokens in and out, and wall time in seconds."""

    name: str
    n_in: int
    n_out: int
    seconds: float


@dataclass(frozen=True)
class TokenSet:
    """Tokens with their 3-D positions and where they came from.

    Attributes:
        tokens: (K, D) float tensor.
        positions: (K, 3) int64 (t, h, w) of each token (a merged token keeps its representative's position).
        group: (K,) int64 sampled-frame index of each token (used by per-frame compressors).
        absorbed_into: (N,) int64, for each of the N original patches, the index of the output token that now
            carries it (identity for an encoder's output).
        cls: (D,) class token, or None.
        stages: counts and timings of every stage so far.
    """

    tokens: torch.Tensor
    positions: torch.Tensor
    group: torch.Tensor
    absorbed_into: torch.Tensor
    cls: torch.Tensor | None = None
    stages: tuple[StageCount, ...] = ()

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def dim(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def sizes(self) -> torch.Tensor:
        """(K,) int64: how many original patches each token carries (1 for an encoder's output; a merged
        token's size is the number of patches absorbed into it). What a size-weighted mean or proportional
        attention weights each token by."""
        return torch.bincount(self.absorbed_into, minlength=self.n_tokens)

    def absorbed_by(self, token: int) -> torch.Tensor:
        """Indices of the original patches output token ``token`` carries."""
        return torch.nonzero(self.absorbed_into == token).flatten()

    def select(self, keep: torch.Tensor, tokens: torch.Tensor, assignment: torch.Tensor, stage: StageCount) -> "TokenSet":
        """A new TokenSet made of rows ``keep`` (sorted ascending) with values ``tokens``.

        Args:
            keep: (K',) int64 indices of the tokens that survive, ascending (original order is kept).
            tokens: (K', D) their new values (e.g. after merging).
            assignment: (K,) int64, for every current token, the index *into keep* of the surviving token
                that absorbed it.
            stage: the counts to append.
        """
        return replace(
            self,
            tokens=tokens,
            positions=self.positions[keep],
            group=self.group[keep],
            absorbed_into=assignment[self.absorbed_into],
            stages=(*self.stages, stage),
        )
