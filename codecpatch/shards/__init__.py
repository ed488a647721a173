"""Token shards: the Parquet format codecpatch writes (schema v1), its writer, and readers for training."""

from ._reader import open_shard, shard_paths, to_hf_dataset, to_ray_dataset
from ._row import StoredRow, read_row
from ._schema import COLUMNS, DECODE_COLUMNS, SCHEMA_VERSION, TOKEN_VALUES_PATH, SampleRow, rows_to_table, token_schema
from ._writer import ERRORS, MANIFEST, ErrorLog, FolderInUseError, Manifest, RecipeMismatchError, ShardWriter, signals_deferred
from ._writer import _lock_folder as lock_folder
from ._verify import VerifyReport, verify
from ._store import S3_ENDPOINT_ENV, Store, is_object_store, is_remote, remote_filesystem
from ._units import (ERRORS_DIR, UNITS, UnitRecord, UnitWriter, check_ledger, iter_unit_records, open_ledger, read_errors, read_unit_errors, read_unit_record, read_unit_records,
                     unit_shard_name, write_summary)

__all__ = [
    "ERRORS_DIR",
    "S3_ENDPOINT_ENV",
    "UNITS",
    "Store",
    "UnitRecord",
    "UnitWriter",
    "is_remote",
    "lock_folder",
    "open_ledger",
    "check_ledger",
    "read_errors",
    "read_unit_errors",
    "read_unit_record",
    "read_unit_records",
    "unit_shard_name",
    "write_summary",
    "open_shard",
    "is_object_store",
    "iter_unit_records",
    "remote_filesystem",
    "to_hf_dataset",
    "VerifyReport",
    "verify",
    "COLUMNS",
    "DECODE_COLUMNS",
    "ERRORS",
    "MANIFEST",
    "SCHEMA_VERSION",
    "TOKEN_VALUES_PATH",
    "ErrorLog",
    "FolderInUseError",
    "Manifest",
    "RecipeMismatchError",
    "SampleRow",
    "ShardWriter",
    "StoredRow",
    "TokenShardDataset",
    "collate_tokens",
    "read_row",
    "signals_deferred",
    "rows_to_table",
    "shard_paths",
    "to_ray_dataset",
    "token_schema",
]


#: The PyTorch side (it loads torch), imported on first use: ``import codecpatch.shards`` stays torch-free.
_TORCH = ("TokenShardDataset", "collate_tokens")


def __getattr__(name: str):
    if name in _TORCH:
        from . import _torch

        return getattr(_torch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
