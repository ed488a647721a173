"""Integrity under interruption and misuse: a signal (SIGINT, SIGTERM, SIGKILL) at every commit point of
the shard writer still gives every input exactly once after a rerun; finished work is committed promptly;
a folder written with other settings is refused; every run's stats are kept; Ray cleans up after itself."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

import codecpatch.pipeline._runner as runner_module
from codecpatch.pipeline import Interrupted, choose_execution, list_inputs, load_recipe, process_video, run
import codecpatch.pipeline._interrupts as interrupts_module
from codecpatch.pipeline._local_ray import _OWNER, remove_stale_temp_dirs
from codecpatch.pipeline._runner import AUTO_RAY_MIN_INPUTS
from codecpatch.shards import Manifest, RecipeMismatchError, TokenShardDataset

from .conftest import REPO, SAMPLES

RECIPE = {"patchify.frames": 8, "encoder.dim": 32, "output.shard_mb": 0.001, "execution.workers": 0}  # a shard per input


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Four good clips and an empty file (an error row): every kind of commit."""
    root = tmp_path_factory.mktemp("clips")
    for i in range(4):
        shutil.copy(SAMPLES / "sprites_h264_b.mp4", root / f"clip{i}.mp4")
    (root / "empty.mp4").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def results(clips):
    """Each input's result, computed once: these tests are about the writer, not about decoding."""
    recipe = load_recipe(None, RECIPE)
    return {item.video_id: process_video(item, recipe) for item in list_inputs(clips)}


@pytest.fixture()
def cached(monkeypatch, results):
    monkeypatch.setattr(runner_module, "process_video", lambda item, recipe: results[item.video_id])


class CommitPoints:
    """Counts the writer's commit operations (Parquet row-group writes, file closes, renames) and, when
    armed, runs ``action`` right after the ``at``-th one: the moment between an operation and the
    bookkeeping that follows it."""

    def __init__(self, monkeypatch, at: int | None = None, action=None) -> None:
        import pyarrow.parquet as parquet

        self.count, self.at, self.action = 0, at, action
        self.names: list[str] = []
        for owner, name in ((parquet.ParquetWriter, "write_table"), (parquet.ParquetWriter, "close"), (os, "replace")):
            original = getattr(owner, name)
            monkeypatch.setattr(owner, name, self._wrap(original, f"{getattr(owner, '__name__', owner)}.{name}"))

    def _wrap(self, original, label):
        def wrapped(*args, **kwargs):
            value = original(*args, **kwargs)
            self.names.append(label)
            self.count += 1
            if self.count == self.at:
                self.action()
            return value

        return wrapped


def expected_ids(results) -> list[str]:
    return sorted(row.sample_id for result in results.values() for row in result.rows)


def assert_exactly_once(output, results) -> None:
    """Every input's rows appear once; the manifest agrees with the files; nothing half-written is left."""
    manifest = Manifest.read(output)
    ids = [sample["sample_id"] for sample in TokenShardDataset(output)]
    assert sorted(ids) == expected_ids(results)
    assert sorted(manifest.inputs_done) == sorted(results)
    for shard in manifest.shards:
        assert pq.read_metadata(output / shard["file"]).num_rows == shard["rows"]
    assert {p.name for p in output.glob("shard-*")} == {s["file"] for s in manifest.shards}
    assert not list(output.glob("*.tmp"))


def count_commit_points(monkeypatch, clips, tmp_path) -> int:
    with monkeypatch.context() as patch:
        points = CommitPoints(patch)
        run(load_recipe(None, RECIPE), list_inputs(clips), tmp_path / "count", progress=False)
    assert points.count >= 12, points.names  # row writes, closes, shard renames, manifest and error-table writes
    return points.count


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_at_every_commit_point_leaves_every_input_exactly_once(monkeypatch, clips, results, cached, tmp_path, signum):
    total = count_commit_points(monkeypatch, clips, tmp_path)
    for at in range(1, total + 1):
        output = tmp_path / f"at{at}"
        with monkeypatch.context() as patch:
            CommitPoints(patch, at, lambda: os.kill(os.getpid(), signum))
            try:
                run(load_recipe(None, RECIPE), list_inputs(clips), output, progress=False)
                interrupted = None
            except Interrupted as caught:
                interrupted = caught
        assert interrupted is not None and interrupted.exit_status == 128 + signum, f"commit point {at}"
        assert signal.getsignal(signum) is not interrupts_module._raise_interrupted  # handlers restored
        resumed = run(load_recipe(None, RECIPE), list_inputs(clips), output, progress=False)
        assert resumed.processed + resumed.failed + resumed.skipped_done == len(results)
        assert_exactly_once(output, results)


def _killed_at(at: int, clips, output, results) -> None:
    """In a forked child: run, and SIGKILL ourselves right after commit point ``at``."""
    patch = pytest.MonkeyPatch()
    patch.setattr(runner_module, "process_video", lambda item, recipe: results[item.video_id])
    CommitPoints(patch, at, lambda: os.kill(os.getpid(), signal.SIGKILL))
    run(load_recipe(None, RECIPE), list_inputs(clips), output, progress=False)
    os._exit(0)


def test_sigkill_at_every_commit_point_leaves_every_input_exactly_once(monkeypatch, clips, results, cached, tmp_path):
    total = count_commit_points(monkeypatch, clips, tmp_path)
    fork = multiprocessing.get_context("fork")
    for at in range(1, total + 1):
        output = tmp_path / f"at{at}"
        child = fork.Process(target=_killed_at, args=(at, clips, output, results))
        child.start()
        child.join(timeout=60)
        assert child.exitcode == -signal.SIGKILL, f"commit point {at}: exit {child.exitcode}"
        run(load_recipe(None, RECIPE), list_inputs(clips), output, progress=False)
        assert_exactly_once(output, results)


@pytest.mark.parametrize("workers", ["0", pytest.param("2", marks=pytest.mark.slow)])
def test_sigterm_during_a_cli_shard_write_exits_143_quietly_and_resumes_exactly_once(tmp_path, workers):
    """The issue's reproduction: SIGTERM the moment a shard's temporary file appears, then rerun."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(10):
        shutil.copy(SAMPLES / "sprites_h264_b.mp4", videos / f"clip{i:02d}.mp4")
    output = tmp_path / "out"
    command = [sys.executable, "-m", "codecpatch.cli", "batch", "--input", str(videos), "--output", str(output), "--workers", workers,
               "--encoder-dim", "32", "--shard-mb", "0.02", "--store-pixels", "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None and not list(output.glob("shard-*.parquet.tmp")):
        time.sleep(0.005)
    ray_temp = [p for p in os.listdir("/tmp") if p.startswith("cpray") and os.path.exists(f"/tmp/{p}/{_OWNER}")]
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr and "SIGTERM received" not in stderr and "SIGTERM: stopped" in stderr  # no stack dump
    assert not [p for p in ray_temp if os.path.exists(f"/tmp/{p}/{_OWNER}") and not _lock_is_held(f"/tmp/{p}/{_OWNER}")]
    resume = [*command[:command.index("--workers") + 1], "0", *command[command.index("--workers") + 2:]]  # in-process: faster
    again = subprocess.run(resume, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    ids = sorted(s["sample_id"] for s in TokenShardDataset(output))
    assert ids == [f"clip{i:02d}.mp4#0" for i in range(10)]
    history = json.loads((output / "_stats.json").read_text())
    assert [r["interrupted"] for r in history["runs"]] == ["SIGTERM", ""]


def _lock_is_held(path: str) -> bool:
    """Another run (e.g. a parallel test) still owns this Ray temp folder."""
    import fcntl

    with open(path, "r+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def test_finished_inputs_are_committed_within_commit_seconds(monkeypatch, clips, results, tmp_path):
    """A large shard size no longer holds finished work back: the open shard is finished on time."""
    committed_during_run = []

    def slow(item, recipe):
        time.sleep(0.1)
        manifest = Manifest.read(tmp_path / "out")
        committed_during_run.append(len(manifest.inputs_done) if manifest else 0)
        return results[item.video_id]

    monkeypatch.setattr(runner_module, "process_video", slow)
    run(load_recipe(None, {**RECIPE, "output.shard_mb": 256, "output.commit_seconds": 0.05}), list_inputs(clips), tmp_path / "out",
        progress=False)
    assert committed_during_run[-1] >= 3  # before the last input finished, the earlier ones were durable
    assert_exactly_once(tmp_path / "out", results)


def test_a_folder_written_with_other_settings_is_refused_before_any_work(clips, results, tmp_path):
    from click.testing import CliRunner

    from codecpatch.cli import main

    output = tmp_path / "out"
    run(load_recipe(None, RECIPE), list_inputs(clips), output, progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in output.iterdir() if p.name != "_lock"}
    with pytest.raises(RecipeMismatchError) as caught:
        run(load_recipe(None, {**RECIPE, "patchify.budget": "0.5", "compress": "apet:0.5"}), list_inputs(clips), output, progress=False)
    message = str(caught.value)
    assert "patchify.budget: '0.125' there, '0.5' now" in message and "compress" in message and "--overwrite" in message
    assert "execution" not in message and "shard_mb" not in message  # settings that do not change rows are not compared
    assert {p.name: p.stat().st_mtime_ns for p in output.iterdir() if p.name != "_lock"} == before  # nothing touched
    # a different token width: the same one-line refusal from the CLI, no traceback
    cli = ["batch", "--input", str(clips), "--output", str(output), "--workers", "0", "--shard-mb", "0.001", "--no-progress"]
    result = CliRunner().invoke(main, [*cli, "--encoder-dim", "64"])
    assert result.exit_code == 2 and result.output.startswith("error: ") and "dim: 32 there, 64 now" in result.output
    assert "Traceback" not in result.output
    # only resuming with the same settings (other scheduling is fine) or --overwrite is allowed
    same = run(load_recipe(None, {**RECIPE, "output.shard_mb": 5.0}), list_inputs(clips), output, progress=False)
    assert same.skipped_done == len(results)
    result = CliRunner().invoke(main, [*cli, "--encoder-dim", "64", "--overwrite"])
    assert result.exit_code == 0, result.output
    widths = {len(s["tokens"][0]) for s in TokenShardDataset(output)}
    assert widths == {64} and Manifest.read(output).fingerprint["dim"] == 64
    assert len(json.loads((output / "_stats.json").read_text())["runs"]) == 1  # the old history went with its shards


def test_a_folder_written_before_a_default_changed_is_refused_with_the_new_default(clips, results, tmp_path):
    """block_size (8 before 0.2, now 16) and residual_stride (1, now 2) change rows: a folder whose recorded
    fingerprint lacks them (written at the old defaults, when they were left out) is refused by a run at the
    new defaults, and resumed by a run that asks for the old values."""
    output = tmp_path / "out"
    old = {**RECIPE, "patchify.block_size": 8, "patchify.residual_stride": 1, "patchify.flow_max_side": 0}
    run(load_recipe(None, old), list_inputs(clips), output, progress=False)
    recorded = json.loads((output / "_manifest.json").read_text())["fingerprint"]
    assert "patchify.block_size" not in recorded and "patchify.residual_stride" not in recorded  # as an 0.1 run wrote it
    with pytest.raises(RecipeMismatchError) as caught:
        run(load_recipe(None, RECIPE), list_inputs(clips), output, progress=False)
    assert "patchify.block_size: 8 there, 16 now" in str(caught.value) and "patchify.residual_stride: 1 there, 2 now" in str(caught.value)
    assert run(load_recipe(None, old), list_inputs(clips), output, progress=False).skipped_done == len(results)
    # chunk mode reads no codec analysis: its 0.1 folder resumes at the new defaults
    chunks = tmp_path / "chunks"
    run(load_recipe(None, {**old, "patchify.mode": "chunk"}), list_inputs(clips), chunks, progress=False)
    resumed = run(load_recipe(None, {**RECIPE, "patchify.mode": "chunk"}), list_inputs(clips), chunks, progress=False)
    assert resumed.skipped_done == len(results)


def test_a_folder_from_before_fingerprints_still_refuses_another_token_width(clips, results, cached, tmp_path):
    output = tmp_path / "out"
    run(load_recipe(None, RECIPE), list_inputs(clips), output, progress=False)
    manifest = json.loads((output / "_manifest.json").read_text())
    del manifest["fingerprint"]
    (output / "_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RecipeMismatchError, match="dim: 32 there, 48 now"):
        run(load_recipe(None, {**RECIPE, "encoder.dim": 48}), list_inputs(clips), output, progress=False)


def test_stats_keep_every_run_and_the_totals(clips, results, cached, tmp_path):
    output = tmp_path / "out"
    first = run(load_recipe(None, RECIPE), list_inputs(clips)[:3], output, progress=False)
    second = run(load_recipe(None, RECIPE), list_inputs(clips), output, progress=False)
    third = run(load_recipe(None, RECIPE), list_inputs(clips), output, progress=False)  # nothing left to do
    saved = json.loads((output / "_stats.json").read_text())
    assert [r["processed"] + r["failed"] for r in saved["runs"]] == [3, 2, 0]
    assert saved["runs"][2]["skipped_done"] == 5 and saved["runs"][2]["execution"] == "nothing to do: Ray not started"
    totals = saved["totals"]
    assert totals["runs"] == 3 and totals["processed"] + totals["failed"] == 5
    assert totals["n_tokens"] == first.n_tokens + second.n_tokens + third.n_tokens == sum(
        s["n_tokens"] for s in TokenShardDataset(output))
    assert totals["errors_by_kind"] == {"empty_file": 1}


def test_auto_workers_choose_by_the_job():
    execution = load_recipe(None).execution
    assert execution.workers == "auto"
    assert choose_execution(execution, 0, cpus=16).workers == 0
    assert choose_execution(execution, 3, cpus=16) == choose_execution(execution, 3, cpus=16)
    few = choose_execution(execution, AUTO_RAY_MIN_INPUTS - 1, cpus=16)
    assert few.workers == 0 and "in-process" in few.reason and f"{AUTO_RAY_MIN_INPUTS - 1} inputs" in few.reason
    assert choose_execution(execution, 100, cpus=1).workers == 0
    many = choose_execution(execution, 100, cpus=4)
    assert many.workers == 4 and "Ray" in many.reason
    explicit = load_recipe(None, {"execution.workers": 2}).execution
    assert choose_execution(explicit, 1, cpus=1).workers == 2 and choose_execution(explicit, 0, cpus=8).workers == 0
    gpu = load_recipe(None, {"execution.encode_gpus": 1}).execution
    assert choose_execution(gpu, 1, cpus=2).workers == 2  # a GPU encode stage needs Ray


def test_quick_start_recipe_runs_in_process_for_a_few_clips_and_says_so(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(SAMPLES / "sprites_h264_p.mp4", videos)
    output = tmp_path / "out"
    command = [sys.executable, "-m", "codecpatch.cli", "run", str(REPO / "pipelines" / "batch.toml"), "--input", str(videos),
               "--output", str(output), "--no-progress"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    # the reason is "1 input to do" (or "one CPU" where the process may use one core only)
    assert "1 processed" in first.stdout and "[in-process (workers = auto: " in first.stdout
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert "1 already done" in again.stdout and "[nothing to do: Ray not started]" in again.stdout


def test_stale_ray_temp_folders_of_dead_runs_are_removed(tmp_path):
    import fcntl

    dead, alive, foreign = tmp_path / "cprayDEAD", tmp_path / "cprayALIVE", tmp_path / "cprayOTHER"
    for folder in (dead, alive, foreign):
        (folder / "session_x" / "sockets").mkdir(parents=True)
    (dead / _OWNER).touch()
    with open(alive / _OWNER, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        removed = remove_stale_temp_dirs(tmp_path)
    assert removed == [dead] and not dead.exists() and alive.exists() and foreign.exists()


@pytest.mark.slow
def test_ray_deadline_counts_running_time_and_ray_leaves_nothing_behind(clips, tmp_path, monkeypatch):
    """A fresh local Ray takes seconds to start a worker; a 2 s deadline for sub-second clips must not
    count that. After the run its temp folder is gone."""
    import codecpatch.pipeline._local_ray as local_ray

    made: list[str] = []  # the temp folders this run asked for (other processes' Ray runs may come and go in /tmp)
    real_mkdtemp = local_ray.tempfile.mkdtemp

    def recording_mkdtemp(*args, **kwargs):
        made.append(real_mkdtemp(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(local_ray.tempfile, "mkdtemp", recording_mkdtemp)
    recipe = load_recipe(None, {**RECIPE, "execution.workers": 1, "execution.deadline_s": 2})
    inputs = [i for i in list_inputs(clips) if i.video_id != "empty.mp4"][:2]
    stats = run(recipe, inputs, tmp_path / "out", progress=False)
    assert (stats.processed, stats.failed) == (2, 0), stats.errors_by_kind
    assert "Ray, 1 workers" in stats.execution
    ours = [name for name in made if os.path.basename(name).startswith("cpray")]
    assert len(ours) == 1, made
    assert not os.path.exists(ours[0]), ours


def test_the_progress_bar_moves_with_every_video_and_shows_rates_errors_and_eta(monkeypatch, clips, results, tmp_path, capsys):
    def slow(item, recipe):
        time.sleep(0.15)
        return results[item.video_id]

    monkeypatch.setattr(runner_module, "process_video", slow)
    run(load_recipe(None, RECIPE), list_inputs(clips), tmp_path / "out", progress=True)
    bar = capsys.readouterr().err
    for done in range(1, 6):
        assert f"{done}/5" in bar
    final = bar.rsplit("\r", 1)[-1]
    assert "video/s" in final and "tok_s=" in final and "errors=1" in final and "<00:00" in final  # rate, tokens/s, errors, ETA
