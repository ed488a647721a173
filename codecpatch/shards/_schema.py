"""The token-shard schema (version 3): one Parquet row per clip sample.

Columns (D = token width, fixed per dataset; units and nulls in README's "Shard columns"):
    sample_id (string, "<video_id>#<clip_index>"), video_id, source, clip_index (int32), clip_start /
    clip_end (float64, seconds), times_estimated (bool: the source had no usable timestamps, so the times
    are frame indices over a frame rate), fps (float32, null when unknown), width / height (int32, the
    first frame's), sizes (list<string> "WxH": the first size and each size it changes to, in order), codec, mode,
    budget, encoder, compressors (string), n_dense / n_selected / n_tokens (int32),
    tokens (list<fixed_size_list<float16, D>>), positions (list<fixed_size_list<int32, 3>>: t, h, w),
    frame_types (list<string>: picture type of each sampled frame), pixels (optional,
    list<fixed_size_list<uint8, 3*P*P>>: the kept patches, with --store pixels), text (optional string),
    frames_decoded (int32: frames decoded in the clip's span), packets_skipped (int32: undecodable packets
    dropped in the whole source), complete (bool: the whole source decoded cleanly: no skipped packets, no
    concealed frames, every frame its header and packet index announce). The last three are null where
    unknown (live-stream windows) and absent from version-1 shards: readers fill them with None
    (``DECODE_COLUMNS``),
    wallclock_start / wallclock_end (timestamp[us, UTC]: when a live window's first and last frames were
    captured or received; null for batch rows and in shards written before these columns existed),
    wallclock_source (string: "capture" when the source's own clock says, e.g. RTCP sender reports;
    "receive_pts" when the frames' timestamps are mapped to wall clock through the receive time of the
    connection's least-delayed frame, e.g. MPEG-TS; else "receive", when the frames were decoded here),
    token_sizes (list<int32>, version 3: patches each token carries, 1 for an unmerged token; null where
    unknown: rows that did not record it and shards before version 3, which readers fill with None).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = 3  # 2: times_estimated, sizes and the decode-completeness columns; 3: token_sizes
#: Parquet column path of the token values: the key ``column_encoding`` needs (a bare "tokens" is ignored
#: silently) for byte-stream-split.
TOKEN_VALUES_PATH = "tokens.list.element.list.element"
#: Wall-clock columns: UTC instants, microseconds.
WALLCLOCK_TYPE = pa.timestamp("us", tz="UTC")
#: Decode-completeness columns: older shards (version 1) lack them and readers fill them with None.
DECODE_COLUMNS = ("frames_decoded", "packets_skipped", "complete")
#: Columns added in version 3: older shards lack them and readers fill them with None.
V3_COLUMNS = ("token_sizes",)


#: Every column's meaning, unit and what null means (recorded in each ``_manifest.json`` as ``columns``;
#: README's "Shard columns" table says the same).
COLUMNS: dict[str, str] = {
    "sample_id": "string '<video_id>#<clip_index>', unique in a folder; never null",
    "video_id": "string: the input's path relative to the input root (or the list's id; a stream's id); never null",
    "source": "string: the path or URL read (a stream's URL without its credentials); never null",
    "clip_index": "int32: clip number within the video (a stream's window number), from 0; never null",
    "clip_start": "float64 seconds from the stream start of the clip's first decoded frame; never null",
    "clip_end": "float64 seconds of the clip's last decoded frame (not one past it); never null",
    "times_estimated": "bool: true when the source had no usable timestamps, so clip_start/clip_end are frame "
                       "indices over the header's or container's frame rate, else over an assumed 25 fps; never null",
    "fps": "float32 frames per second measured from the timestamps, else the header's; null when unknown "
           "(no timestamps and no plausible header rate); never NaN",
    "width": "int32 pixels: the clip's first decoded frame; never null",
    "height": "int32 pixels: the clip's first decoded frame; never null",
    "sizes": "list<string 'WxH'>: the first frame's size and each size the clip changes to, in order (one entry: "
             "the size never changes); never null",
    "codec": "string: FFmpeg decoder name (h264, hevc, vp9, ...; 'image' for a still); never null",
    "mode": "string: codec | chunk | image (patchify.mode); never null",
    "budget": "string: the patch budget as given in the budget grammar (0.125, 8f, 1500t); never null",
    "encoder": "string: pixel, pixel:D or vit:PATH[+xray:...]; never null",
    "compressors": "string: the compressor chain ('' = none); never null",
    "n_dense": "int32: patches of the dense grid T x H x W (before selection); never null",
    "n_selected": "int32: patches the selection kept (before compression); never null",
    "n_tokens": "int32: tokens stored (K = rows of tokens/positions); never null",
    "tokens": "list<fixed_size_list<float16, D>>: K token vectors (pixel tokens: normalised values; ViT: "
              "embedding units); never null",
    "positions": "list<fixed_size_list<int32, 3>>: K positions (t, h, w): t a slot on a 64-slot timeline, h/w "
                 "patch row/column on the canvas; never null",
    "frame_types": "list<string>: picture type (I/P/B) of each sampled frame, in timeline order; never null",
    "pixels": "list<fixed_size_list<uint8, 3*P*P>> (only with output.store_pixels): every selected patch, RGB "
              "channel-first, 0-255; never null where the column exists",
    "text": "string (only for inputs listed with a caption): the caption; null for an input without one",
    "frames_decoded": "int32: frames decoded in the clip's span; null where unknown (live-stream windows, "
                      "shards written before the column existed)",
    "packets_skipped": "int32: undecodable packets dropped in the whole source; null where unknown",
    "complete": "bool: the whole source decoded cleanly (no skipped packets, no concealed frames, every frame its "
                "header and packet index announce); null where unknown",
    "wallclock_start": "timestamp[us, UTC]: when a live window's first frame was captured (wallclock_source "
                       "'capture'), its timestamp anchored at the receive time ('receive_pts') or when it was "
                       "received ('receive'); null for batch rows and in shards written before it existed",
    "wallclock_end": "timestamp[us, UTC]: the same for the window's last frame; null as wallclock_start",
    "wallclock_source": "string: 'capture' when the source's own clock says (RTSP: RTCP sender reports); "
                        "'receive_pts' when the stream's timestamps are anchored at the receive time (MPEG-TS, RTSP "
                        "before its first sender report: spans equal clip_end - clip_start); 'receive' when the "
                        "frames have no usable timestamps (raw elementary streams) or come from a file read at "
                        "decode speed; null for batch rows",
    "token_sizes": "list<int32>: K counts, how many patches each token carries (1 = unmerged; merged tokens, e.g. "
                   "the frozen recipe's, say how many they stand for: weight means and attention by them); null where "
                   "not recorded (live-stream windows) and in shards before schema version 3",
}


def token_schema(dim: int, patch_pixels: int | None = None, with_text: bool = False) -> pa.Schema:
    """The Arrow schema of a shard with tokens ``dim`` wide (and pixel patches of ``patch_pixels`` bytes)."""
    fields = [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("clip_index", pa.int32()),
        pa.field("clip_start", pa.float64()),
        pa.field("clip_end", pa.float64()),
        pa.field("times_estimated", pa.bool_()),
        pa.field("fps", pa.float32()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("sizes", pa.list_(pa.string())),
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
        pa.field("frames_decoded", pa.int32()),
        pa.field("packets_skipped", pa.int32()),
        pa.field("complete", pa.bool_()),
        pa.field("wallclock_start", WALLCLOCK_TYPE),
        pa.field("wallclock_end", WALLCLOCK_TYPE),
        pa.field("wallclock_source", pa.string()),
        pa.field("token_sizes", pa.list_(pa.int32())),
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
        sizes: "WxH" of the first frame and after each size change (empty: just width x height).
        positions: (K, 3) int (t, h, w).
        pixels: (K, 3, P, P) uint8 or None.
        token_sizes: (K,) int patches each token carries, or None (not recorded).
        frames_decoded, packets_skipped, complete: how complete the decode was (None = unknown).
        wallclock_start, wallclock_end: aware UTC datetimes (live windows) or None; wallclock_source:
            "capture" / "receive_pts" / "receive" / None.
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
    times_estimated: bool = False
    sizes: tuple[str, ...] = ()
    frames_decoded: int | None = None
    packets_skipped: int | None = None
    complete: bool | None = None
    wallclock_start: datetime | None = None
    wallclock_end: datetime | None = None
    wallclock_source: str | None = None
    token_sizes: np.ndarray | None = None

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
        if row.token_sizes is not None and len(row.token_sizes) != len(row.tokens):
            raise ValueError(f"{row.sample_id}: {len(row.token_sizes)} token_sizes for {len(row.tokens)} tokens")
        if row.tokens.ndim != 2 or row.tokens.shape[1] != dim:
            raise ValueError(f"{row.sample_id}: tokens must be (K, {dim}), got {row.tokens.shape}")
    columns = {
        "sample_id": [r.sample_id for r in rows],
        "video_id": [r.video_id for r in rows],
        "source": [r.source for r in rows],
        "clip_index": [r.clip_index for r in rows],
        "clip_start": [r.clip_start for r in rows],
        "clip_end": [r.clip_end for r in rows],
        "times_estimated": [r.times_estimated for r in rows],
        "fps": [None if r.fps is None or r.fps != r.fps else r.fps for r in rows],  # unknown is null, never NaN
        "width": [r.width for r in rows],
        "height": [r.height for r in rows],
        "sizes": [list(r.sizes) or [f"{r.width}x{r.height}"] for r in rows],
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
        "token_sizes": [None if r.token_sizes is None else np.asarray(r.token_sizes, np.int32) for r in rows],
    }
    for name in DECODE_COLUMNS:
        if name in schema.names:
            columns[name] = [getattr(r, name) for r in rows]
    if "pixels" in schema.names:
        patch_pixels = schema.field("pixels").type.value_type.list_size
        columns["pixels"] = _nested(np.concatenate([np.asarray(r.pixels, np.uint8).reshape(len(r.pixels), -1) for r in rows]),
                                    patch_pixels, pa.uint8(), [len(r.pixels) for r in rows])
    if "text" in schema.names:
        columns["text"] = [r.text for r in rows]
    return pa.Table.from_pydict(columns, schema=schema)
