"""The shards as a PyTorch dataset: ``TokenShardDataset`` and its ``collate_tokens``. Kept apart from the rest of
the reader so that only code that trains (or reads tensors) loads torch: ``import codecpatch.shards`` does not."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ._reader import _ARRAY_COLUMNS, _nested_to_numpy, open_shard, shard_paths
from ._schema import DECODE_COLUMNS, V3_COLUMNS
from ._store import Store


class TokenShardDataset(IterableDataset):
    """Iterate the samples of a shard directory as dicts of tensors.

    Each sample: ``tokens`` (K, D) float16, ``positions`` (K, 3) int32, ``pixels`` (K, 3*P*P) uint8 when
    stored, ``token_sizes`` (K,) int32 (patches per token; None in shards before version 3), and the scalar columns (sample_id, video_id, n_tokens, ...) as Python values.

    Args:
        directory: the shard folder, or a URI (``s3://bucket/prefix``, ``gs://...``).
        shuffle_buffer: 0 for file order; otherwise samples pass through a buffer of this size and leave
            it in random order (seeded by ``seed`` + epoch via ``set_epoch``).
        rank, world_size: distributed split; default from torch.distributed when initialised.
        columns: columns to read (default all).
    """

    def __init__(self, directory: str | os.PathLike, *, shuffle_buffer: int = 0, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, columns: list[str] | None = None) -> None:
        super().__init__()
        self.store = Store.at(directory)
        self.paths = shard_paths(self.store)
        self.shuffle_buffer, self.seed, self.epoch = shuffle_buffer, seed, 0
        if rank is None or world_size is None:
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank = torch.distributed.get_rank() if distributed else 0
            world_size = torch.distributed.get_world_size() if distributed else 1
        self.rank, self.world_size, self.columns = rank, world_size, columns

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def my_shards(self) -> list[Path]:
        """The shards this rank and DataLoader worker read."""
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker is not None else (1, 0)
        mine = self.paths[self.rank :: self.world_size]
        return mine[worker_id::workers]

    def __iter__(self) -> Iterator[dict]:
        samples = self._samples()
        if self.shuffle_buffer <= 0:
            yield from samples
            return
        rng = random.Random(f"{self.seed}-{self.epoch}-{self.rank}-{get_worker_info().id if get_worker_info() else 0}")
        buffer: list[dict] = []
        for sample in samples:
            buffer.append(sample)
            if len(buffer) >= self.shuffle_buffer:
                yield buffer.pop(rng.randrange(len(buffer)))
        rng.shuffle(buffer)
        yield from buffer

    def _samples(self) -> Iterator[dict]:
        for path in self.my_shards():
            shard = open_shard(path, self.store)
            present = set(shard.schema_arrow.names)
            # Shards written before the decode (v2) or token_sizes (v3) columns existed lack them: they read as None.
            missing = [c for c in (*DECODE_COLUMNS, *V3_COLUMNS) if c not in present and (self.columns is None or c in self.columns)]
            columns = None if self.columns is None else [c for c in self.columns if c not in missing]
            for batch in shard.iter_batches(columns=columns, batch_size=64):
                arrays = {name: batch.column(name) for name in batch.schema.names if name in _ARRAY_COLUMNS}
                scalars = {name: batch.column(name).to_pylist() for name in batch.schema.names if name not in _ARRAY_COLUMNS}
                for row in range(batch.num_rows):
                    sample = {name: values[row] for name, values in scalars.items()}
                    sample.update(dict.fromkeys(missing))
                    for name, column in arrays.items():
                        sample[name] = torch.from_numpy(np.array(_nested_to_numpy(column, row)))
                    if sample.get("token_sizes") is not None:
                        sample["token_sizes"] = torch.tensor(sample["token_sizes"], dtype=torch.int32)
                    yield sample


def collate_tokens(samples: list[dict]) -> dict:
    """Pad a list of samples to the longest one.

    Returns ``tokens`` (B, K_max, D), ``positions`` (B, K_max, 3) int64, ``attention_mask`` (B, K_max) bool
    (True on real tokens), ``pixels`` (B, K_max, 3*P*P) when present, ``token_sizes`` (B, K_max) int32 (0 on
    padding) when every sample has them (else a list with Nones), and every scalar column as a list.
    """
    lengths = [len(s["tokens"]) for s in samples]
    batch, longest = len(samples), max(lengths) if lengths else 0
    out: dict = {"attention_mask": torch.zeros(batch, longest, dtype=torch.bool)}
    for name in _ARRAY_COLUMNS:
        if name in samples[0]:
            first = samples[0][name]
            padded = torch.zeros(batch, longest, first.shape[1], dtype=torch.int64 if name == "positions" else first.dtype)
            for i, sample in enumerate(samples):  # a loop over the batch, not over tokens
                padded[i, : lengths[i]] = sample[name]
            out[name] = padded
    for i, length in enumerate(lengths):
        out["attention_mask"][i, :length] = True
    if all(s.get("token_sizes") is not None for s in samples) and "token_sizes" in samples[0]:
        out["token_sizes"] = torch.zeros(batch, longest, dtype=torch.int32)  # 0 on padding
        for i, sample in enumerate(samples):
            out["token_sizes"][i, : lengths[i]] = sample["token_sizes"]
    for name in samples[0]:
        if name not in _ARRAY_COLUMNS and name not in out:
            out[name] = [s[name] for s in samples]
    return out
