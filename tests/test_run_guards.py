"""What a unit-ledger run refuses or survives (issue 11): an output written by the previous ledger (schema
v2's ``_manifest.json`` with ``inputs_done`` and no unit records) or by another schema version is a clear
one-line error before any work, dry run included; a unit whose worker dies every time is recorded and the
run goes on; a finished output reads the same from a local path and from a URI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

from codecpatch.cli import main
from codecpatch.pipeline import list_inputs, load_recipe, run
from codecpatch.shards import (Manifest, ShardWriter, TokenShardDataset, read_errors, read_unit_records, shard_paths,
                               to_hf_dataset, verify)

from .conftest import SAMPLES
from .test_pipeline import _pids_running

FAST = ("--encoder-dim", "32", "--workers", "0", "--no-progress")


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture()
def two_videos(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    shutil.copy(SAMPLES / "sprites_h264_p.mp4", root / "a.mp4")
    shutil.copy(SAMPLES / "static_h264_p.mp4", root / "b.mp4")
    return root


def _one_line_error(result, *expected: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in expected:
        assert text in lines[0], lines[0]


def test_an_output_of_the_previous_ledger_is_refused_before_any_work_and_overwrite_starts_afresh(two_videos, tmp_path):
    out = tmp_path / "v2"
    with ShardWriter(out, 32) as writer:  # the folder-wide ledger of schema v2: inputs_done in _manifest.json
        writer.add_input("a.mp4", [])
    manifest = json.loads((out / "_manifest.json").read_text())
    manifest["schema_version"] = 2
    (out / "_manifest.json").write_text(json.dumps(manifest))
    before = sorted(p.name for p in out.iterdir())
    assert Manifest.read(out).inputs_done == ["a.mp4"] and Manifest.read(out).ledger != "units"
    for extra in ((), ("--dry-run",)):
        _one_line_error(cli("batch", "--input", two_videos, "--output", out, *FAST, *extra),
                        "written without unit records", "schema version 2", "--overwrite")
        assert sorted(p.name for p in out.iterdir()) == before  # nothing written, nothing mixed
    fresh = cli("batch", "--input", two_videos, "--output", out, *FAST, "--overwrite")
    assert fresh.exit_code == 0, fresh.output
    assert "2 inputs: 2 processed, 0 failed, 0 already done" in fresh.output
    assert sorted(Manifest.read(out).inputs_done) == ["a.mp4", "b.mp4"] and verify(out).ok


def test_a_unit_output_of_another_schema_version_or_width_is_refused_before_any_work(two_videos, tmp_path):
    out = tmp_path / "out"
    assert cli("batch", "--input", two_videos, "--output", out, *FAST, "--limit", "1").exit_code == 0
    width = cli("batch", "--input", two_videos, "--output", out, "--encoder-dim", "48", "--workers", "0", "--dry-run")
    _one_line_error(width, "other settings", "dim: 32 there, 48 now")
    manifest = json.loads((out / "_manifest.json").read_text())
    manifest["schema_version"] = 2
    (out / "_manifest.json").write_text(json.dumps(manifest))
    records = [r.inputs_done for r in read_unit_records(out)]
    _one_line_error(cli("batch", "--input", two_videos, "--output", out, *FAST), "schema version 2 shards", "writes 3")
    assert [r.inputs_done for r in read_unit_records(out)] == records == [["a.mp4"]]  # b.mp4 was not added


@pytest.mark.slow
def test_a_unit_whose_worker_dies_every_time_is_recorded_and_the_run_goes_on(ffmpeg, tmp_path):
    import subprocess

    videos = tmp_path / "videos"
    videos.mkdir()
    subprocess.run([ffmpeg, "-loglevel", "error", "-stream_loop", "40", "-i", str(SAMPLES / "sprites_h264_p.mp4"), "-c", "copy",
                    str(videos / "a_long.mp4")], check=True, timeout=60)  # seconds of work: time to kill its worker
    shutil.copy(SAMPLES / "static_h264_p.mp4", videos / "b_short.mp4")
    recipe = load_recipe(None, {"encoder.dim": 32, "execution.workers": 1, "execution.retries": 1,
                                "execution.unit_inputs": 1, "execution.max_in_flight": 1,
                                "clips.seconds": 20.0})  # one task at a time: the kills hit unit 0 (and its retry)
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.update(stats=run(recipe, list_inputs(videos), tmp_path / "out",
                                                                      progress=False)), daemon=True)
    runner.start()
    killed: list = []
    deadline = time.monotonic() + 120
    while len(killed) < 2 and runner.is_alive() and time.monotonic() < deadline:  # retries 1: two deaths, no progress
        for pid in _pids_running("_process_unit"):
            if pid not in killed:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        time.sleep(0.02)
    runner.join(timeout=180)
    assert len(killed) == 2 and not runner.is_alive()
    stats = outcome["stats"]
    assert (stats.processed, stats.failed) == (1, 1), stats.to_dict()
    errors = read_errors(tmp_path / "out")
    assert [(e["input"], e["stage"]) for e in errors] == [("a_long.mp4", "worker")]
    assert "a_long.mp4" in errors[0]["message"]
    assert [r.complete for r in read_unit_records(tmp_path / "out")] == [True, True]
    report = verify(tmp_path / "out")
    assert report.ok and report.inputs_done == 2 and report.errors == 1
    again = run(recipe, list_inputs(videos), tmp_path / "out", progress=False)  # a failure is final: nothing reruns
    assert (again.processed, again.failed, again.skipped_done) == (0, 0, 2)


def test_a_finished_output_reads_the_same_from_a_path_and_a_uri(two_videos, tmp_path):
    out = tmp_path / "out"
    assert cli("batch", "--input", two_videos, "--output", out, *FAST, "--unit-inputs", "1").exit_code == 0
    # a file no unit record lists (a part renamed by a worker killed before its record) and a temporary file
    shutil.copy(shard_paths(out)[0], out / "shard-u0000009-000.parquet")
    (out / "shard-u0000009-001.parquet.tmp").write_bytes(b"partial")
    uri = "file://" + str(out)
    assert [os.path.basename(str(p)) for p in shard_paths(out)] == [os.path.basename(str(p)) for p in shard_paths(uri)]
    here, there = TokenShardDataset(out), TokenShardDataset(uri)
    by_id = {s["sample_id"]: s for s in there}
    samples = list(here)
    assert len(samples) == len(by_id) > 0 and {s["video_id"] for s in samples} == {"a.mp4", "b.mp4"}
    for sample in samples:
        assert sample["tokens"].numpy().tobytes() == by_id[sample["sample_id"]]["tokens"].numpy().tobytes()
        assert np.array_equal(sample["positions"].numpy(), by_id[sample["sample_id"]]["positions"].numpy())
    assert sorted(to_hf_dataset(out)["sample_id"]) == sorted(to_hf_dataset(uri)["sample_id"]) == sorted(by_id)
    report = verify(uri, rebuild=False)
    assert report.ok and sorted(report.orphans) == ["shard-u0000009-000.parquet", "shard-u0000009-001.parquet.tmp"]


def test_summaries_a_dead_worker_took_with_it_are_recovered_from_its_unit_record(tmp_path):
    """A worker killed after committing inputs but before its summaries reached the driver: the driver rebuilds
    them from the unit record and error table (details unknown: ``unreported``); and a summary it reported for an
    input it never committed is taken back (the retry redoes it), so each input is counted once."""
    from codecpatch.pipeline._inputs import InputVideo
    from codecpatch.pipeline import RunStats, VideoResult
    from codecpatch.pipeline._runner import VideoSummary, _Attempt, _reconciled, _retracted
    from codecpatch.shards import Store, UnitWriter, token_schema

    store = Store.at(tmp_path)
    writer = UnitWriter(store, 0, 4, token_schema(32, None, False), target_bytes=2**20)
    writer.add_input("a.mp4", [])
    writer.add_input("b.mp4", [])
    writer.add_error("c.mp4", "decode", "corrupt", "c.mp4: bad packet")
    record = writer.close()
    items = [InputVideo(f"/videos/{n}", n) for n in ("a.mp4", "b.mp4", "c.mp4", "d.mp4")]
    reported_a = VideoSummary(VideoResult("a.mp4", frames=50, n_tokens=7), clips=1)
    reported_d = VideoSummary(VideoResult("d.mp4", frames=50, n_tokens=9, stage_seconds={"decode": 0.5}), clips=2)
    attempt = _Attempt(0, items, 0, {"a.mp4", "b.mp4", "c.mp4", "d.mp4"}, reported={"a.mp4": reported_a, "d.mp4": reported_d})
    stats = RunStats()
    for summary in (reported_a, reported_d):  # what the driver counted as the stream reported them
        stats.add(summary.result, clips=summary.clips)
    recovered = list(_reconciled(attempt, record, store))
    assert [(s.result.video_id, s.result.error, s.unreported) for s in recovered] == [
        ("b.mp4", None, True), ("c.mp4", ("decode", "corrupt", "c.mp4: bad packet"), False)]
    assert list(_reconciled(attempt, record, store)) == []  # recovered once only
    # d.mp4 was reported but never committed (its part was not finished): taken back, the resubmitted unit redoes it
    [taken_back] = list(_retracted(attempt, set(record.inputs_done)))
    assert taken_back.summary is reported_d and set(attempt.reported) == {"a.mp4", "b.mp4", "c.mp4"}
    for summary in recovered:
        stats.add(summary.result, clips=summary.clips)
    stats.remove(taken_back.summary.result, clips=taken_back.summary.clips)
    assert (stats.processed, stats.failed, stats.clips, stats.frames, stats.n_tokens) == (2, 1, 1, 50, 7)
    assert dict(stats.errors_by_kind) == {"corrupt": 1} and stats.stage_seconds["decode"] == 0.0
