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
