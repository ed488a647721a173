"""The token-shard schema (version 1): one Parquet row per clip sample.

Columns (D = token width, fixed per dataset):
    sample_id (string, "<video_id>#<clip_index>"), video_id, source, clip_index (int32), clip_start /
    clip_end (float64, seconds), fps (float32, null when unknown), width / height (int32), codec, mode,
    budget, encoder, compressors (string), n_dense / n_selected / n_tokens (int32),
    tokens (list<fixed_size_list<float16, D>>), positions (list<fixed_size_list<int32, 3>>: t, h, w),
    frame_types (list<string>: picture type of each sampled frame), pixels (optional,
    list<fixed_size_list<uint8, 3*P*P>>: the kept patches, with --store pixels), text (optional string),
    wallclock_start / wallclock_end (timestamp[us, UTC]: when a live window's first and last frames were
    captured or received; null for batch rows and in shards written before these columns existed),
    wallclock_source (string: "capture" when the source's own clock says, e.g. RTCP sender reports, else
    "receive").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = 1
#: Parquet column path of the token values: the key ``column_encoding`` needs (a bare "tokens" is ignored
#: silently) for byte-stream-split.
TOKEN_VALUES_PATH = "tokens.list.element.list.element"
#: Wall-clock columns: UTC instants, microseconds.
WALLCLOCK_TYPE = pa.timestamp("us", tz="UTC")


def token_schema(dim: int, patch_pixels: int | None = None, with_text: bool = False) -> pa.Schema:
    """The Arrow schema of a shard with tokens ``dim`` wide (and pixel patches of ``patch_pixels`` bytes)."""
    fields = [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("clip_index", pa.int32()),
        pa.field("clip_start", pa.float64()),
        pa.field("clip_end", pa.float64()),
        pa.field("fps", pa.float32()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("codec", pa.string()),
        pa.field("mode", pa.string()),
        pa.field("budget", pa.string()),
        pa.field("encoder", pa.string()),
        pa.field("compressors", pa.string()),
        pa.field("n_dense", pa.int32()),
        pa.field("n_selected", pa.int32()),
        pa.field("n_tokens", pa.int32()),
        pa.field("tokens", pa.list_(pa.list_(pa.float16(), dim))),
        pa.field("positions", pa.list_(pa.list_(pa.int32(), 3))),
        pa.field("frame_types", pa.list_(pa.string())),
        pa.field("wallclock_start", WALLCLOCK_TYPE),
        pa.field("wallclock_end", WALLCLOCK_TYPE),
        pa.field("wallclock_source", pa.string()),
    ]
    if patch_pixels is not None:
        fields.append(pa.field("pixels", pa.list_(pa.list_(pa.uint8(), patch_pixels))))
    if with_text:
        fields.append(pa.field("text", pa.string()))
    return pa.schema(fields, metadata={b"codecpatch.schema_version": str(SCHEMA_VERSION).encode()})


@dataclass(frozen=True)
class SampleRow:
    """One clip sample, ready to write.

    Attributes:
        tokens: (K, D) array (written as float16).
        positions: (K, 3) int (t, h, w).
        pixels: (K, 3, P, P) uint8 or None.
        wallclock_start, wallclock_end: aware UTC datetimes (live windows) or None; wallclock_source:
            "capture" / "receive" / None.
        the rest: as the schema's columns.
    """

    video_id: str
    source: str
    clip_index: int
    clip_start: float
    clip_end: float
    fps: float | None
    width: int
    height: int
    codec: str
    mode: str
    budget: str
    encoder: str
    compressors: str
    n_dense: int
    n_selected: int
    tokens: np.ndarray
    positions: np.ndarray
    frame_types: tuple[str, ...]
    pixels: np.ndarray | None = None
    text: str | None = None
    wallclock_start: datetime | None = None
    wallclock_end: datetime | None = None
    wallclock_source: str | None = None

    @property
    def sample_id(self) -> str:
        return f"{self.video_id}#{self.clip_index}"


def _nested(values: np.ndarray, width: int, value_type: pa.DataType, lengths: list[int]) -> pa.ListArray:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    inner = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), value_type), width)
    return pa.ListArray.from_arrays(pa.array(offsets), inner)


def rows_to_table(rows: list[SampleRow], schema: pa.Schema) -> pa.Table:
    """Columnar, vectorised conversion of rows to an Arrow table (no per-token Python objects)."""
    dim = schema.field("tokens").type.value_type.list_size
    lengths = [len(r.tokens) for r in rows]
    for row in rows:
        if row.tokens.ndim != 2 or row.tokens.shape[1] != dim:
            raise ValueError(f"{row.sample_id}: tokens must be (K, {dim}), got {row.tokens.shape}")
    columns = {
        "sample_id": [r.sample_id for r in rows],
        "video_id": [r.video_id for r in rows],
        "source": [r.source for r in rows],
        "clip_index": [r.clip_index for r in rows],
        "clip_start": [r.clip_start for r in rows],
        "clip_end": [r.clip_end for r in rows],
        "fps": [r.fps for r in rows],
        "width": [r.width for r in rows],
        "height": [r.height for r in rows],
        "codec": [r.codec for r in rows],
        "mode": [r.mode for r in rows],
        "budget": [r.budget for r in rows],
        "encoder": [r.encoder for r in rows],
        "compressors": [r.compressors for r in rows],
        "n_dense": [r.n_dense for r in rows],
        "n_selected": [r.n_selected for r in rows],
        "n_tokens": lengths,
        "tokens": _nested(np.concatenate([np.asarray(r.tokens, np.float16) for r in rows]) if rows else np.zeros((0, dim), np.float16),
                          dim, pa.float16(), lengths),
        "positions": _nested(np.concatenate([np.asarray(r.positions, np.int32) for r in rows]) if rows else np.zeros((0, 3), np.int32),
                             3, pa.int32(), lengths),
        "frame_types": [list(r.frame_types) for r in rows],
        "wallclock_start": [r.wallclock_start for r in rows],
        "wallclock_end": [r.wallclock_end for r in rows],
        "wallclock_source": [r.wallclock_source for r in rows],
    }
    if "pixels" in schema.names:
        patch_pixels = schema.field("pixels").type.value_type.list_size
        columns["pixels"] = _nested(np.concatenate([np.asarray(r.pixels, np.uint8).reshape(len(r.pixels), -1) for r in rows]),
                                    patch_pixels, pa.uint8(), [len(r.pixels) for r in rows])
    if "text" in schema.names:
        columns["text"] = [r.text for r in rows]
    return pa.Table.from_pydict(columns, schema=schema)
