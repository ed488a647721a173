"""Reading token shards back for training: a PyTorch IterableDataset, a collate function, a Ray Dataset.

Only finished shards (listed in the manifest) are read. Shards are split across distributed ranks and then
across DataLoader workers, so every sample is read exactly once per epoch.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ._schema import DECODE_COLUMNS, V3_COLUMNS
from ._store import Store, is_remote, remote_filesystem
from ._writer import Manifest

_ARRAY_COLUMNS = ("tokens", "positions", "pixels")


def shard_paths(directory) -> list:
    """Finished shards of a location, in manifest order: Paths for a folder, URIs (str) for a remote location
    (``s3://bucket/prefix``; ``$CODECPATCH_S3_ENDPOINT`` points s3:// at an S3-compatible store)."""
    store = Store.at(directory)
    manifest = Manifest.read(store)
    if manifest is None:
        raise FileNotFoundError(f"{store.location}: no _manifest.json (not a codecpatch shard directory)")
    if store.remote:
        return [store.uri(shard["file"]) for shard in manifest.shards]
    return [Path(store.root) / shard["file"] for shard in manifest.shards]


def open_shard(path, store: "Store | None" = None) -> pq.ParquetFile:
    """A shard (a Path, or a URI from ``shard_paths``) as a ParquetFile."""
    if isinstance(path, str) and is_remote(path):
        filesystem, inner = remote_filesystem(path, store.endpoint if store is not None else None)
        return pq.ParquetFile(filesystem.open_input_file(inner))
    return pq.ParquetFile(path)


def _nested_to_numpy(column: pa.ListArray, row: int) -> np.ndarray:
    """Row ``row`` of a list<fixed_size_list<T, W>> column as a (K, W) array (zero-copy slice of the values)."""
    start, end = column.offsets[row].as_py(), column.offsets[row + 1].as_py()
    inner = column.values
    width = inner.type.list_size
    values = inner.values.to_numpy(zero_copy_only=False)
    base = inner.offset * width
    return values[base + start * width : base + end * width].reshape(-1, width)


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


def to_ray_dataset(directory):
    """The finished shards of a folder or URI as a Ray Dataset (``ray.data.read_parquet``); needs ``ray[data]``."""
    import ray.data

    store = Store.at(directory)
    if store.remote:
        return ray.data.read_parquet([f"{store.root}/{name}" for name in _names(store)], filesystem=store.fs)
    return ray.data.read_parquet([str(p) for p in shard_paths(store)])


def to_hf_dataset(directory):
    """The finished shards of a folder or URI as a Hugging Face ``datasets.Dataset`` (same columns and
    values; tokens as nested lists of float16). A folder is memory-mapped through ``datasets``' Parquet
    loader; a remote location is read through pyarrow into memory (use it for what fits in RAM)."""
    import datasets

    store = Store.at(directory)
    if not store.remote:
        return datasets.Dataset.from_parquet([str(p) for p in shard_paths(store)])
    tables = [open_shard(path, store).read() for path in shard_paths(store)]
    return datasets.Dataset(pa.concat_tables(tables)) if tables else datasets.Dataset(pa.table({}))


def _names(store) -> list[str]:
    return [shard["file"] for shard in Manifest.read(store).shards]
