"""Parquet encodings for float16 token columns: size of the same rows under three writer settings.

    python benchmarks/shards.py [--rows 200] [--dim 256] [--out benchmarks/results/shards.json]

Tokens are pixel-encoder tokens of real codec-selected patches (bbb_720p_h264_ip.mp4 when ../shared/videos
is there, else a bundled sample), repeated over clips to ``--rows`` rows. Settings: pyarrow defaults
(dictionary on), dictionary off, dictionary off + byte-stream-split on the token values (what ShardWriter
does), all zstd.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from codecpatch.patchify import PatchifyConfig, patchify_video
from codecpatch.shards import TOKEN_VALUES_PATH, SampleRow, rows_to_table, token_schema
from codecpatch.tokens import encode_pixels

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "shards.json")
    args = parser.parse_args()
    clip = REPO.parent / "shared" / "videos" / "bbb_720p_h264_ip.mp4"
    clip = clip if clip.exists() else REPO / "sample_videos" / "sprites_h264_b.mp4"
    patchsets = list(patchify_video(clip, PatchifyConfig(clip_frames=32, frames=32)))
    rows = []
    for i in range(args.rows):
        patches = patchsets[i % len(patchsets)]
        tokens = encode_pixels(patches.pixels, patches.positions, patches.sample_index, dim=args.dim, seed=i)
        rows.append(SampleRow(f"v{i}", str(clip), i, 0.0, 1.0, 25.0, 1280, 720, "h264", "codec", "0.125", f"pixel:{args.dim}", "",
                              patches.n_dense, patches.n_kept, tokens.tokens.numpy(), patches.positions, ("I",)))
    table = rows_to_table(rows, token_schema(args.dim))
    settings = {
        "pyarrow defaults": {},
        "dictionary off": {"use_dictionary": False},
        "dictionary off + byte-stream-split": {"use_dictionary": False, "column_encoding": {TOKEN_VALUES_PATH: "BYTE_STREAM_SPLIT"}},
    }
    results = {"clip": clip.name, "rows": args.rows, "dim": args.dim, "bytes": {}}
    with tempfile.TemporaryDirectory() as folder:
        for name, options in settings.items():
            path = Path(folder) / "t.parquet"
            pq.write_table(table, path, compression="zstd", **options)
            results["bytes"][name] = os.path.getsize(path)
    base = results["bytes"]["pyarrow defaults"]
    for name, size in results["bytes"].items():
        print(f"{name:38} {size / 2**20:8.2f} MiB  {size / base:5.3f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
