"""Token shards: real Parquet files written, rolled, renamed, resumed, and read back bit-exactly."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from codecpatch.shards import (
    ERRORS, MANIFEST, TOKEN_VALUES_PATH, Manifest, SampleRow, ShardWriter, TokenShardDataset, collate_tokens, shard_paths,
)

DIM = 32


def sample(video: str, clip: int, tokens: int, seed: int, pixels: bool = False) -> SampleRow:
    rng = np.random.default_rng(seed)
    return SampleRow(
        video_id=video, source=f"/data/{video}.mp4", clip_index=clip, clip_start=2.0 * clip, clip_end=2.0 * clip + 1.96,
        fps=25.0, width=320, height=240, codec="h264", mode="codec", budget="0.125", encoder="pixel:32", compressors="apet:0.25",
        n_dense=9800, n_selected=tokens * 2, tokens=rng.standard_normal((tokens, DIM)).astype(np.float16),
        positions=np.stack([rng.integers(0, 64, tokens), rng.integers(0, 14, tokens), rng.integers(0, 14, tokens)], 1),
        frame_types=("I", "P", "B"), pixels=rng.integers(0, 256, (tokens, 3, 4, 4), dtype=np.uint8) if pixels else None,
    )


def write_dataset(directory, videos: int = 12, target_bytes: int = 20_000, pixels: bool = False):
    rows = {}
    with ShardWriter(directory, DIM, target_bytes=target_bytes, patch_pixels=48 if pixels else None, recipe={"x": 1}) as writer:
        for v in range(videos):
            video = f"video{v:02d}"
            rows[video] = [sample(video, c, 40 + 7 * v + c, seed=100 * v + c, pixels=pixels) for c in range(2)]
            writer.add_input(video, rows[video])
    return rows


def test_shards_roll_over_by_size_and_round_trip_bit_exactly(tmp_path):
    rows = write_dataset(tmp_path, pixels=True)
    manifest = Manifest.read(tmp_path)
    assert len(manifest.shards) > 2 and sum(s["rows"] for s in manifest.shards) == 24
    assert sorted(manifest.inputs_done) == sorted(rows) and manifest.recipe == {"x": 1} and manifest.dim == DIM
    assert not list(tmp_path.glob("*.tmp"))
    read = {s["sample_id"]: s for s in TokenShardDataset(tmp_path)}
    assert len(read) == 24
    for video, video_rows in rows.items():
        for row in video_rows:
            got = read[row.sample_id]
            assert torch.equal(got["tokens"].view(torch.int16), torch.from_numpy(row.tokens.view(np.int16)))
            assert np.array_equal(got["positions"].numpy(), row.positions)
            assert np.array_equal(got["pixels"].numpy(), row.pixels.reshape(len(row.pixels), -1))
            assert got["n_tokens"] == len(row.tokens) and got["frame_types"] == ["I", "P", "B"]


def test_float16_tokens_use_byte_stream_split_without_dictionary(tmp_path):
    write_dataset(tmp_path, videos=3, target_bytes=10**9)
    metadata = pq.ParquetFile(shard_paths(tmp_path)[0]).metadata.row_group(0)
    encodings = {metadata.column(i).path_in_schema: metadata.column(i).encodings for i in range(metadata.num_columns)}
    assert "BYTE_STREAM_SPLIT" in encodings[TOKEN_VALUES_PATH]
    assert not any("DICTIONARY" in e for e in encodings[TOKEN_VALUES_PATH])
    assert metadata.column(0).compression == "ZSTD"


def test_plain_pyarrow_and_pandas_open_the_shards(tmp_path):
    write_dataset(tmp_path, videos=4)
    table = pq.read_table(shard_paths(tmp_path))
    assert table.num_rows == 8 and table.schema.metadata[b"codecpatch.schema_version"] == b"3"
    frame = pd.concat(pd.read_parquet(p) for p in shard_paths(tmp_path))
    assert list(frame["video_id"]).count("video00") == 2


def test_a_crash_leaves_no_half_shard_and_resume_skips_done_inputs(tmp_path):
    writer = ShardWriter(tmp_path, DIM, target_bytes=35_000)  # ~3 inputs of ~13 kB per shard
    for v in range(7):
        writer.add_input(f"video{v}", [sample(f"video{v}", 0, 200, v)])
    # "crash": the open shard is never closed; only finished shards and their inputs count
    done_before = Manifest.read(tmp_path).inputs_done
    assert 0 < len(done_before) < 7 and list(tmp_path.glob("*.tmp"))
    writer._lock.close()  # the crashed process is gone, and the OS releases its folder lock with it
    resumed = ShardWriter(tmp_path, DIM, target_bytes=35_000)
    assert not list(tmp_path.glob("*.tmp")) and resumed.done == set(done_before)
    for v in range(7):
        if f"video{v}" not in resumed.done:
            resumed.add_input(f"video{v}", [sample(f"video{v}", 0, 200, v)])
    resumed.close()
    ids = [s["sample_id"] for s in TokenShardDataset(tmp_path)]
    assert sorted(ids) == [f"video{v}#0" for v in range(7)]  # every input exactly once


def test_errors_are_recorded_and_count_as_done(tmp_path):
    with ShardWriter(tmp_path, DIM) as writer:
        writer.add_input("good", [sample("good", 0, 10, 1)])
        writer.add_error("bad.mp4", "decode", "empty_file", "bad.mp4: file is empty (0 bytes)")
    errors = pq.read_table(tmp_path / ERRORS).to_pylist()
    assert errors == [{"input": "bad.mp4", "stage": "decode", "kind": "empty_file", "message": "bad.mp4: file is empty (0 bytes)"}]
    assert set(json.loads((tmp_path / MANIFEST).read_text())["inputs_done"]) == {"good", "bad.mp4"}
    with pytest.raises(ValueError, match="dim"):
        ShardWriter(tmp_path, DIM + 1)
    ShardWriter(tmp_path, DIM).close()  # the refused writer released the folder


def test_dataloader_workers_and_ranks_split_shards_and_collate_pads(tmp_path):
    write_dataset(tmp_path)
    everything = sorted(s["sample_id"] for s in TokenShardDataset(tmp_path))
    loader = DataLoader(TokenShardDataset(tmp_path, shuffle_buffer=5), batch_size=4, num_workers=2, collate_fn=collate_tokens)
    seen = []
    for batch in loader:
        lengths = batch["attention_mask"].sum(1).tolist()
        assert lengths == batch["n_tokens"] and batch["tokens"].shape[1] == max(lengths)
        assert batch["positions"].dtype == torch.int64 and batch["tokens"].dtype == torch.float16
        seen += batch["sample_id"]
    assert sorted(seen) == everything
    by_rank = [sorted(s["sample_id"] for s in TokenShardDataset(tmp_path, rank=r, world_size=2)) for r in range(2)]
    assert not set(by_rank[0]) & set(by_rank[1]) and sorted(by_rank[0] + by_rank[1]) == everything


@pytest.mark.slow
def test_shards_as_a_ray_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # Ray 2.60 otherwise writes a token file into $HOME
    ray = pytest.importorskip("ray")
    from codecpatch.shards import to_ray_dataset

    import tempfile

    write_dataset(tmp_path / "shards", videos=3)
    ray_temp = tempfile.mkdtemp(prefix="cpray", dir="/tmp")  # short: Ray's AF_UNIX socket paths max 107 bytes
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False, _temp_dir=ray_temp)
    try:
        dataset = to_ray_dataset(tmp_path / "shards")
        assert dataset.count() == 6
        assert sorted(dataset.unique("video_id")) == ["video00", "video01", "video02"]
    finally:
        ray.shutdown()
        import shutil

        shutil.rmtree(ray_temp, ignore_errors=True)


def test_a_second_writer_on_the_same_folder_is_refused_and_the_first_keeps_its_shard(tmp_path):
    from codecpatch.shards import FolderInUseError, ShardWriter

    first = ShardWriter(tmp_path, 4)
    first.add_rows([])  # nothing written: still holds the folder
    with pytest.raises(FolderInUseError, match="another codecpatch run"):
        ShardWriter(tmp_path, 4)
    first.close()
    ShardWriter(tmp_path, 4).close()  # free again once the first closed


def test_hugging_face_datasets_reads_the_shards(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")  # a dev dependency: always there in CI
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = write_dataset(tmp_path / "shards")
    shards = sorted(str(p) for p in (tmp_path / "shards").glob("shard-*.parquet"))
    table = datasets.load_dataset("parquet", data_files=shards, split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert table.num_rows == 24
    table = table.with_format("numpy")
    first = table[0]
    expected = rows[first["video_id"]][int(first["clip_index"])]
    assert np.array_equal(np.stack(first["tokens"]).astype(np.float16), expected.tokens.astype(np.float16))
    assert np.array_equal(np.stack(first["positions"]), expected.positions)


def test_warm_up_writes_nothing_to_the_folder(tmp_path):
    writer = ShardWriter(tmp_path, DIM, patch_pixels=48, with_text=True)
    writer.warm_up()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_lock"]
    writer.close()
    assert Manifest.read(tmp_path).shards == []
