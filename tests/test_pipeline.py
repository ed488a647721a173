"""The batch pipeline end to end: real clips, bad files, real Parquet, a real local Ray, a real crash."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from codecpatch.pipeline import RecipeError, list_inputs, load_recipe, process_video, run
from codecpatch.shards import Manifest, TokenShardDataset

from .conftest import REPO, SAMPLES


@pytest.fixture()
def dataset(tmp_path):
    """Good clips (H.264 P/B, MPEG-4, HEVC) in nested folders plus an empty file, a text file named .mp4 and
    an MP4 truncated before its index."""
    root = tmp_path / "videos"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for name, folder in (("sprites_h264_p.mp4", "a"), ("sprites_h264_b.mp4", "a"), ("sprites_mpeg4.mp4", "b"), ("sprites_hevc.mp4", "b")):
        shutil.copy(SAMPLES / name, root / folder / name)
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.mp4").write_text("not a video\n")
    data = (SAMPLES / "pan_h264_p.mp4").read_bytes()
    (root / "cut.mp4").write_bytes(data[: len(data) // 2])
    return root


RECIPE = {"compress": "apet:0.5", "patchify.frames": 16, "encoder.dim": 64, "output.shard_mb": 0.02}


def test_run_completes_with_good_rows_and_readable_errors(dataset, tmp_path):
    stats = run(load_recipe(REPO / "pipelines" / "batch.toml", {**RECIPE, "execution.workers": 0}), list_inputs(dataset), tmp_path / "out")
    assert (stats.processed, stats.failed) == (4, 3)
    table = pq.read_table([tmp_path / "out" / s["file"] for s in Manifest.read(tmp_path / "out").shards])
    assert sorted(set(table.column("video_id").to_pylist())) == ["a/sprites_h264_b.mp4", "a/sprites_h264_p.mp4",
                                                                 "b/sprites_hevc.mp4", "b/sprites_mpeg4.mp4"]
    errors = {e["input"]: e for e in pq.read_table(tmp_path / "out" / "_errors").to_pylist()}
    assert errors["empty.mp4"]["kind"] == "empty_file" and "empty" in errors["empty.mp4"]["message"]
    assert errors["notes.mp4"]["kind"] == "invalid_data"
    assert "truncated" in errors["cut.mp4"]["message"]
    saved = json.loads((tmp_path / "out" / "_stats.json").read_text())["runs"][-1]
    assert saved["errors_by_kind"] == {"empty_file": 1, "invalid_data": 2} and saved["n_tokens"] == table.column("n_tokens").to_numpy().sum()
    again = run(load_recipe(REPO / "pipelines" / "batch.toml", {**RECIPE, "execution.workers": 0}), list_inputs(dataset), tmp_path / "out")
    assert again.skipped_done == 7 and again.processed == 0  # a rerun redoes nothing


def test_dataloader_reads_back_the_exact_tokens(dataset, tmp_path):
    recipe = load_recipe(None, {**RECIPE, "execution.workers": 0})
    inputs = [i for i in list_inputs(dataset) if i.video_id.startswith("a/")]
    run(recipe, inputs, tmp_path / "out")
    expected = {row.sample_id: row.tokens for item in inputs for row in process_video(item, recipe).rows}
    read = {s["sample_id"]: s["tokens"] for s in TokenShardDataset(tmp_path / "out")}
    assert read.keys() == expected.keys()
    for key, tokens in expected.items():
        assert torch.equal(read[key].view(torch.int16), torch.from_numpy(np.asarray(tokens, np.float16).view(np.int16)))


def test_killed_run_resumes_with_every_input_exactly_once(tmp_path):
    videos = tmp_path / "many"
    videos.mkdir()
    for i in range(12):
        shutil.copy(SAMPLES / "sprites_h264_b.mp4", videos / f"clip{i:02d}.mp4")
    output = tmp_path / "out"
    command = [sys.executable, "-m", "codecpatch.cli", "batch", "--input", str(videos), "--output", str(output),
               "--workers", "0", "--compress", "apet:0.5", "--shard-mb", "0.001", "--no-progress"]  # a shard per input
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        manifest = Manifest.read(output) if (output / "_manifest.json").exists() else None
        if manifest and 2 <= len(manifest.inputs_done) < 12:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait(timeout=60)
    killed_midway = process.returncode == -signal.SIGKILL
    assert killed_midway, "the run finished before it could be killed"
    done_before = set(Manifest.read(output).inputs_done)
    assert 2 <= len(done_before) < 12
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{len(done_before)} already done" in result.stdout
    ids = [s["sample_id"] for s in TokenShardDataset(output)]
    assert sorted(ids) == [f"clip{i:02d}.mp4#0" for i in range(12)]


@pytest.mark.slow
def test_in_process_and_two_ray_workers_give_identical_rows(dataset, tmp_path):
    inputs = list_inputs(dataset)
    home_ray = os.path.expanduser("~/.ray")
    before = set(os.listdir(home_ray)) if os.path.isdir(home_ray) else set()
    run(load_recipe(None, {**RECIPE, "execution.workers": 0}), inputs, tmp_path / "zero")
    run(load_recipe(None, {**RECIPE, "execution.workers": 2, "execution.deadline_s": 120}), inputs, tmp_path / "ray")
    # Ray commits in completion order: the same rows, possibly in another order
    tables = [pq.read_table([d / s["file"] for s in Manifest.read(d).shards]).sort_by("sample_id") for d in (tmp_path / "zero", tmp_path / "ray")]
    assert tables[0].equals(tables[1])
    assert sorted(Manifest.read(tmp_path / "zero").inputs_done) == sorted(Manifest.read(tmp_path / "ray").inputs_done)
    after = set(os.listdir(home_ray)) if os.path.isdir(home_ray) else set()
    assert after == before  # no auth-token file (or anything else) written into the user's home


def test_recipes_are_validated_naming_the_bad_key(tmp_path):
    for recipe in (REPO / "pipelines").glob("*.toml"):
        load_recipe(recipe)  # the shipped recipes are valid
    bad = tmp_path / "bad.toml"
    bad.write_text('[patchify]\nmode = "dense"\nbudjet = "0.1"\n')
    with pytest.raises(RecipeError) as caught:
        load_recipe(bad)
    assert "patchify.mode" in str(caught.value) and "patchify.budjet" in str(caught.value) and str(bad) in str(caught.value)
    with pytest.raises(RecipeError, match="compress"):
        load_recipe(None, {"compress": "tome:0.5"})


def test_input_lists_carry_ids_and_text(tmp_path):
    (tmp_path / "v").mkdir()
    shutil.copy(SAMPLES / "sprites_h264_p.mp4", tmp_path / "v" / "x.mp4")
    listing = tmp_path / "list.txt"
    listing.write_text("v/x.mp4\ta sprite moves right\n")
    [item] = list_inputs(listing)
    assert item.video_id == "v/x.mp4" and item.text == "a sprite moves right" and os.path.exists(item.path)
    run(load_recipe(None, {**RECIPE, "execution.workers": 0}), [item], tmp_path / "out")
    [shard] = Manifest.read(tmp_path / "out").shards
    assert pq.read_table(tmp_path / "out" / shard["file"]).column("text").to_pylist() == ["a sprite moves right"]


@pytest.mark.slow
def test_a_hanging_source_is_killed_at_the_deadline_and_the_run_goes_on(tmp_path, silent_tcp_server):
    shutil.copy(SAMPLES / "sprites_h264_p.mp4", tmp_path / "good.mp4")
    listing = tmp_path / "list.txt"
    listing.write_text(f"tcp://127.0.0.1:{silent_tcp_server}\ngood.mp4\n")  # a source that never sends
    started = time.monotonic()
    stats = run(load_recipe(None, {**RECIPE, "execution.workers": 1, "execution.deadline_s": 4}), list_inputs(listing), tmp_path / "out")
    assert time.monotonic() - started < 60
    assert stats.processed == 1 and stats.errors_by_kind == {"timeout": 1}
    [error] = pq.read_table(tmp_path / "out" / "_errors").to_pylist()
    assert error["kind"] == "timeout" and "worker killed" in error["message"]


def _pids_running(task_name: str) -> list[int]:
    """Ray worker processes executing ``task_name`` now (Ray titles them ``ray::<name>`` while they run it)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if handle.read().startswith(f"ray::{task_name}".encode()):
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


@pytest.mark.slow
def test_a_worker_killed_mid_video_is_retried_and_the_video_lands_once(ffmpeg, tmp_path):
    import threading

    videos = tmp_path / "videos"
    videos.mkdir()
    long = videos / "long.mp4"  # 82 s of the sample: a few seconds of work, time enough to kill its worker
    subprocess.run([ffmpeg, "-loglevel", "error", "-stream_loop", "40", "-i", str(SAMPLES / "sprites_h264_p.mp4"), "-c", "copy",
                    str(long)], check=True, timeout=60)
    shutil.copy(SAMPLES / "sprites_h264_b.mp4", videos / "short.mp4")
    outcome: dict = {}
    recipe = load_recipe(None, {**RECIPE, "execution.workers": 1, "execution.retries": 1, "clips.seconds": 20.0})
    runner = threading.Thread(target=lambda: outcome.update(stats=run(recipe, list_inputs(videos), tmp_path / "out")), daemon=True)
    runner.start()
    killed = []
    deadline = time.monotonic() + 60
    while not killed and runner.is_alive() and time.monotonic() < deadline:
        for pid in _pids_running("_process_unit"):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        time.sleep(0.02)
    runner.join(timeout=120)
    assert killed, "never saw the worker running the task"
    stats = outcome["stats"]
    assert (stats.processed, stats.failed) == (2, 0)
    table = pq.read_table(tmp_path / "out")
    ids = table.column("video_id").to_pylist()
    assert ids.count("long.mp4") == 4 and ids.count("short.mp4") == 1  # 82 s in 20 s clips (short tail merged): each once
    assert sorted(table.column("sample_id").to_pylist()) == sorted(set(table.column("sample_id").to_pylist()))


@pytest.mark.slow
def test_encode_stage_runs_in_gpu_actors_declared_to_ray(dataset, tmp_path):
    """encode_gpus > 0 splits the work: video tasks decode and patchify, encoder actors holding one (here
    logical: Ray is told of one GPU, there is no CUDA) GPU share each encode and compress. Same rows."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                           image_size=32, patch_size=8)
    transformers.CLIPVisionModel(config).save_pretrained(tmp_path / "tower")
    base = {**RECIPE, "patchify.patch": 8, "encoder.name": "vit", "encoder.path": str(tmp_path / "tower"), "encoder.dim": None}
    inputs = [i for i in list_inputs(dataset) if i.video_id.startswith("a/")]
    local = run(load_recipe(None, {**base, "execution.workers": 0}), inputs, tmp_path / "local")
    split = run(load_recipe(None, {**base, "execution.workers": 2, "execution.gpus": 1, "execution.encode_gpus": 0.5,
                                   "execution.encoders": 2}), inputs, tmp_path / "split")
    assert split.processed == local.processed == 2
    encode = split.resources["encode"]
    assert encode["GPU"] == 0.5 and encode["actors"] == 2
    assert [p["gpu_ids"] for p in encode["placement"]] == [["0"], ["0"]]  # both actors share the one GPU
    # rows are committed in completion order: compare them by sample id
    expected, got = (sorted(pq.read_table(tmp_path / d).to_pylist(), key=lambda r: r["sample_id"]) for d in ("local", "split"))
    assert [r["sample_id"] for r in got] == [r["sample_id"] for r in expected]
    for a, b in zip(expected, got):
        assert a["positions"] == b["positions"]
        np.testing.assert_allclose(np.array(a["tokens"], np.float32), np.array(b["tokens"], np.float32), atol=2e-3)
    assert json.loads((tmp_path / "split" / "_stats.json").read_text())["runs"][-1]["resources"]["encode"]["actors"] == 2


def test_an_encode_stage_the_cluster_cannot_hold_is_refused_at_once(dataset, tmp_path):
    recipe = load_recipe(None, {**RECIPE, "execution.workers": 1, "execution.gpus": 0, "execution.encode_gpus": 1})
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="encode stage wants 1 actor"):
        run(recipe, list_inputs(dataset)[:1], tmp_path / "out")
    assert time.monotonic() - started < 60


#: A value other than the default for every PatchifyConfig field (clip_* come from the [clips] section).
_CHANGED_PATCHIFY = {"mode": "chunk", "budget": "8f", "selection": "onevision", "frames": 32, "timeline_slots": 32, "size": 112,
                     "max_side": 160, "exact_size": (320, 240), "patch": 14, "energy": "instant", "normalise": "frame",
                     "camera": "affine", "fusion": "weighted", "motion_weight": 0.25, "keep_first": False, "keep_i_frames": True,
                     "refresh": 0.25, "static_motion_px": 1.5, "static_residual": 3.0, "image_frame": 3, "block_size": 8,
                     "residual_stride": 1, "flow_max_side": 0,
                     "seed": 7, "clip_seconds": 5.0, "clip_frames": 12}


def _recipe_key(field: str) -> str:
    return {"clip_seconds": "clips.seconds", "clip_frames": "clips.frames"}.get(field, f"patchify.{field}")


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return f'"{value}"' if isinstance(value, str) else str(value)


def test_every_patchify_setting_is_reachable_from_a_recipe_and_every_video_command(tmp_path):
    """Each PatchifyConfig field can be set in a recipe (TOML) and by a flag of every command that
    processes video; a field added later and reachable from neither fails here (they drifted before)."""
    import dataclasses

    from codecpatch import cli
    from codecpatch._flags import FLAG_NAMES, overrides
    from codecpatch.patchify import Budget, PatchifyConfig

    fields = {f.name for f in dataclasses.fields(PatchifyConfig)}
    assert fields == set(_CHANGED_PATCHIFY), fields ^ set(_CHANGED_PATCHIFY)
    default = PatchifyConfig()
    commands = ((cli.patchify, ["v.mp4"]), (cli.encode, ["v.mp4"]), (cli.viz, ["v.mp4", "--out", "x.png"]),
                (cli.run_recipe, ["r.toml", "--input", "i", "--output", "o"]), (cli.batch, ["--input", "i", "--output", "o"]),
                (cli.stream, ["s", "--output", "o"]))
    for name, value in _CHANGED_PATCHIFY.items():
        expected = Budget.parse(value) if name == "budget" else value
        section, _, key = _recipe_key(name).partition(".")
        recipe_file = tmp_path / f"{name}.toml"
        recipe_file.write_text(f"[{section}]\n{key} = {_toml_value(value)}\n")
        from_recipe = load_recipe(recipe_file).patchify_config
        assert getattr(from_recipe, name) == expected != getattr(default, name), name
        flag = FLAG_NAMES[_recipe_key(name)]
        if isinstance(value, bool):
            argv = [flag if value else f"--no-{flag[2:]}"]
        else:
            argv = [flag, "x".join(map(str, value)) if isinstance(value, tuple) else str(value)]
        for command, extra in commands:
            if name.startswith("clip_") and command is cli.stream:
                continue  # a live stream is cut into windows, not clips
            with command.make_context(command.name, [*extra, *argv]) as ctx:
                given = overrides(dict(ctx.params))
            assert getattr(load_recipe(None, given, FLAG_NAMES).patchify_config, name) == expected, (command.name, name)


def test_encoder_and_compressor_settings_are_reachable_from_the_command_line():
    """Every key of [encoder] and the compressor chain is a flag of run, batch, stream and encode; the
    encoder spec, Xray spec and chain are parsed once, in the recipe."""
    from codecpatch import cli
    from codecpatch._flags import flags_of
    from codecpatch.pipeline._recipe import Encoder

    keys = {f"encoder.{name}" for name in Encoder.model_fields} | {"compress"}
    assert {flag.key for flag in flags_of("encoder", "compress")} == keys
    for command in (cli.run_recipe, cli.batch, cli.stream, cli.encode):
        names = {option for param in command.params for option in param.opts}
        assert {flag.flag for flag in flags_of("encoder", "compress")} <= names, command.name
    recipe = load_recipe(None, {"encoder.name": "vit:/models/x", "encoder.xray": "4,8@0.5", "compress": "apet:0.25"})
    assert (recipe.encoder.name, recipe.encoder.path, recipe.encoder.spec) == ("vit", "/models/x", "vit:/models/x+xray:4,8@0.5")
    assert recipe.encoder.xray_overrides == {"xray_blocks": (4, 8), "xray_keep": 0.5}
    assert recipe.chain == [("apet", 0.25, "frame")]
    assert load_recipe(None, {"encoder.name": "pixel:64"}).encoder.spec == "pixel:64"
    with pytest.raises(RecipeError, match="--encoder"):
        load_recipe(None, {"encoder.name": "pixel:x"}, {"encoder.name": "--encoder"})


#: Fingerprint keys when LEGACY_VALUES was introduced (0.2), compared only when a folder recorded them.
_FINGERPRINT_KEYS_AT_0_2 = {
    "clips.frames", "clips.seconds", "compress", "encoder.dim", "encoder.name", "encoder.path", "encoder.xray", "frozen.budget",
    "frozen.compressor", "frozen.enabled", "frozen.factor", "frozen.seed", "inputs.extensions", "limits.max_file_mb",
    "limits.max_frames", "limits.max_pixels", "limits.max_seconds", "limits.partial", "output.store_pixels", "patchify.budget",
    "patchify.camera", "patchify.energy", "patchify.frames", "patchify.fusion", "patchify.image_frame", "patchify.keep_first",
    "patchify.keep_i_frames", "patchify.max_side", "patchify.mode", "patchify.normalise", "patchify.patch", "patchify.refresh",
    "patchify.seed", "patchify.selection", "patchify.size", "stream.max_window_seconds", "stream.min_window_seconds",
    "stream.rtsp_transport", "stream.window", "stream.window_seconds",
}


def test_a_recipe_key_added_later_says_which_value_older_outputs_were_made_with():
    """A setting added to the recipe after 0.2 that changes rows needs a LEGACY_VALUES entry (the value folders
    written before it existed were made with): without one, a folder that lacks the key would be resumed
    whatever the new setting's value (found for frozen.merge_after). Settings that change no row belong in
    _fingerprint's _NOT_IN_ROWS instead."""
    from codecpatch.pipeline import Recipe, row_fingerprint
    from codecpatch.pipeline._fingerprint import LEGACY_VALUES

    unaccounted = set(row_fingerprint(Recipe())) - _FINGERPRINT_KEYS_AT_0_2 - set(LEGACY_VALUES)
    assert not unaccounted, f"add these to LEGACY_VALUES (or _NOT_IN_ROWS): {sorted(unaccounted)}"
    assert set(LEGACY_VALUES) <= set(_flatten_recipe_keys()), "a LEGACY_VALUES key the recipe does not have"


def _flatten_recipe_keys() -> list[str]:
    from codecpatch.pipeline import Recipe

    def keys(data: dict, prefix: str = "") -> list[str]:
        return [k for name, value in data.items() for k in (keys(value, f"{prefix}{name}.") if isinstance(value, dict) else [f"{prefix}{name}"])]

    return keys(Recipe().model_dump())


def test_keys_at_the_value_older_outputs_were_made_with_leave_the_fingerprint_as_it_was():
    """Keys added to [patchify] later, or whose default changed, are out of the fingerprint while they hold
    the value older outputs were made with (so those resume); any other value, a new default included, is in it."""
    from codecpatch.pipeline import row_fingerprint
    from codecpatch.pipeline._fingerprint import LEGACY_VALUES

    fingerprint = row_fingerprint(load_recipe(None))
    assert "patchify.exact_size" not in fingerprint and "patchify.timeline_slots" not in fingerprint
    assert fingerprint["patchify.block_size"] == 16 and fingerprint["patchify.residual_stride"] == 2  # new defaults count
    assert fingerprint["patchify.flow_max_side"] == 80
    assert "patchify.budget" in fingerprint and "patchify.seed" in fingerprint
    old = row_fingerprint(load_recipe(None, {"patchify.block_size": 8, "patchify.residual_stride": 1, "patchify.flow_max_side": 0}))
    assert not {"patchify.block_size", "patchify.residual_stride", "patchify.flow_max_side"} & set(old)
    assert LEGACY_VALUES["patchify.block_size"] == 8 and LEGACY_VALUES["patchify.residual_stride"] == 1
    # rows that read no codec analysis (chunk and image modes, frozen whole frames) leave its settings out
    analysis = {"patchify.block_size", "patchify.residual_stride", "patchify.flow_max_side"}
    for overrides in ({"patchify.mode": "chunk"}, {"patchify.mode": "image"}, {"frozen.enabled": True}):
        assert not analysis & set(row_fingerprint(load_recipe(None, {**overrides, "patchify.block_size": 4}))), overrides
