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
