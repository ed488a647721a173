"""One stored row, looked up by sample id or row number, with what it takes to draw it (``codecpatch show``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from ._reader import _nested_to_numpy, shard_paths
from ._writer import Manifest


@dataclass(frozen=True)
class StoredRow:
    """A shard row's kept patches and where they go.

    Attributes:
        pixels: (K, 3*P*P) uint8 stored patches; positions: (K, 3) int32 (timeline slot, row, column).
        frame_types: picture type of each of the T sampled frames; slots: (T,) their timeline slots.
        grid: (rows, cols) of the canvas the patches were cut from.
        the rest: the row's columns.
    """

    sample_id: str
    mode: str
    budget: str
    n_dense: int
    clip_start: float
    clip_end: float
    pixels: np.ndarray
    positions: np.ndarray
    frame_types: list[str]
    slots: np.ndarray
    grid: tuple[int, int]


def read_row(directory: str | os.PathLike, *, sample_id: str | None = None, index: int | None = None) -> StoredRow:
    """The row ``sample_id`` (or the first clip of a video id) or the ``index``-th row of the finished shards.

    Raises FileNotFoundError (not a shard folder), KeyError / IndexError (no such row), ValueError (a row
    that cannot be drawn: no stored pixels, or tokens merged by a compressor so patches and positions differ)."""
    directory = Path(directory)
    paths = shard_paths(directory)
    manifest = Manifest.read(directory)
    if not paths:
        raise IndexError(f"{directory}: no finished shard yet")
    dataset = ds.dataset([str(p) for p in paths], format="parquet")
    if "pixels" not in dataset.schema.names:
        raise ValueError(f"{directory}: the rows were written without their pixels (output.store_pixels = false); "
                         "nothing to draw: rerun with --store-pixels")
    if index is not None:
        total = dataset.count_rows()
        if index >= total:
            raise IndexError(f"{directory}: row {index} asked, the shards hold {total} row{'' if total == 1 else 's'} (0-{total - 1})")
        table = dataset.take([index])
    else:
        table = dataset.to_table(filter=pc.field("sample_id") == sample_id)
        if table.num_rows == 0 and "#" not in sample_id:
            table = dataset.to_table(filter=pc.field("video_id") == sample_id)
            table = table.sort_by("clip_index").slice(0, 1)
        if table.num_rows == 0:
            raise KeyError(f"{directory}: no row with sample_id or video_id {sample_id!r}")
    return _stored_row(table.slice(0, 1).combine_chunks(), manifest.recipe if manifest else {})


def _stored_row(table: pa.Table, recipe: dict) -> StoredRow:
    from ..patchify import native_geometry, square_geometry, timeline_slots

    row = {name: table.column(name)[0].as_py() for name in table.schema.names if name not in ("tokens", "positions", "pixels")}
    pixels = _nested_to_numpy(table.column("pixels").chunk(0), 0)
    positions = _nested_to_numpy(table.column("positions").chunk(0), 0)
    if len(pixels) != len(positions):
        raise ValueError(f"{row['sample_id']}: {len(pixels)} stored patches but {len(positions)} token positions (the "
                         f"compressor chain {row['compressors']!r} merged tokens), so patches cannot be placed; draw a "
                         "folder written with compress = \"\"")
    patchify = recipe.get("patchify", {})
    patch = int(round((pixels.shape[1] / 3) ** 0.5)) if pixels.size else int(patchify.get("patch", 16))
    if patchify.get("max_side"):
        grid = native_geometry(row["width"], row["height"], patchify["max_side"], patch).grid
    elif patchify.get("size"):
        grid = square_geometry(row["width"], row["height"], patchify["size"], patch).grid
    else:  # a recipe that does not say: the smallest grid holding every patch
        grid = (int(positions[:, 1].max()) + 1, int(positions[:, 2].max()) + 1) if len(positions) else (1, 1)
    n_frames = len(row["frame_types"])
    slots = timeline_slots(n_frames, 64) if row["mode"] != "image" else np.zeros(1, np.int32)
    return StoredRow(row["sample_id"], row["mode"], row["budget"], row["n_dense"], row["clip_start"], row["clip_end"],
                     pixels, positions, list(row["frame_types"]), slots, grid)
