"""Cluster-scale batch runs: work units that write their own shards and records, resume from the records,
``codecpatch shards verify``, S3-protocol output, a multi-node Ray cluster, and kills at random points."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import codecpatch.pipeline._runner as runner_module
from codecpatch.cli import main
from codecpatch.pipeline import list_inputs, load_recipe, process_video, run
from codecpatch.pipeline._runner import plan_units
from codecpatch.shards import Manifest, TokenShardDataset, read_errors, read_unit_records, verify

from .conftest import SAMPLES

RECIPE = {"patchify.frames": 8, "encoder.dim": 32, "output.shard_mb": 0.001, "execution.workers": 0, "execution.unit_inputs": 2}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Six good clips and an empty file (an error row)."""
    root = tmp_path_factory.mktemp("clips")
    for i in range(6):
        shutil.copy(SAMPLES / ("sprites_h264_b.mp4" if i % 2 else "sprites_h264_p.mp4"), root / f"clip{i}.mp4")
    (root / "empty.mp4").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def results(clips):
    recipe = load_recipe(None, RECIPE)
    return {item.video_id: process_video(item, recipe) for item in list_inputs(clips)}


@pytest.fixture()
def cached(monkeypatch, results):
    monkeypatch.setattr(runner_module, "process_video", lambda item, recipe: results[item.video_id])


def expected_ids(results) -> list[str]:
    return sorted(row.sample_id for result in results.values() for row in result.rows)


def test_units_are_fixed_by_input_order_and_size_not_by_workers(clips):
    inputs = list_inputs(clips)
    units = list(plan_units(inputs, 3))
    assert [u for u, _ in units] == [0, 1, 2] and [len(items) for _, items in units] == [3, 3, 1]
    assert [i for _, items in units for i in items] == inputs


def test_each_unit_writes_its_own_shards_and_record_and_a_rerun_lists_records(clips, results, cached, tmp_path):
    output = tmp_path / "out"
    stats = run(load_recipe(None, RECIPE), list_inputs(clips), output, progress=False)
    assert stats.processed == 6 and stats.failed == 1 and stats.units == 4
    records = read_unit_records(output)
    assert [r.unit for r in records] == [0, 1, 2, 3] and all(r.complete for r in records)
    for record in records:  # a unit's shards carry its name and only its inputs' rows, in input order
        for shard in record.shards:
            assert shard["file"].startswith(f"shard-u{record.unit:07d}-")
            videos = pq.read_table(output / shard["file"]).column("video_id").to_pylist()
            assert set(videos) <= set(record.inputs_done)
    assert sorted(s["sample_id"] for s in TokenShardDataset(output)) == expected_ids(results)
    [error] = read_errors(output)
    assert error["input"] == "empty.mp4" and pq.read_table(output / "_errors").num_rows == 1  # one dataset
    summary = json.loads((output / "_manifest.json").read_text())
    assert summary["ledger"] == "units" and summary["summary"]["inputs_done"] == 7 and summary["summary"]["errors"] == 1
    assert [s["file"] for s in summary["shards"]] == [s["file"] for r in records for s in r.shards]
    assert sorted(Manifest.read(output).inputs_done) == sorted(results)  # gathered from the unit records
    again = run(load_recipe(None, RECIPE), list_inputs(clips), output, progress=False)
    assert again.skipped_done == 7 and again.processed == 0 and again.units == 0


def test_verify_rebuilds_the_summary_and_reports_what_is_wrong(clips, results, cached, tmp_path):
    output = tmp_path / "out"
    run(load_recipe(None, RECIPE), list_inputs(clips), output, progress=False)
    manifest = json.loads((output / "_manifest.json").read_text())
    manifest["shards"], manifest["summary"]["rows"] = manifest["shards"][:1], -1  # a stale or damaged summary
    (output / "_manifest.json").write_text(json.dumps(manifest))
    report = verify(output)
    assert report.ok and report.units == 4 and report.inputs_done == 7 and report.errors == 1
    assert report.rows == len(expected_ids(results)) and not report.orphans
    rebuilt = json.loads((output / "_manifest.json").read_text())  # rebuilt from the records
    assert rebuilt["summary"]["rows"] == report.rows and len(rebuilt["shards"]) == report.shards
    # damage: an orphaned shard, a left-over temporary file, a duplicated input, a shard whose rows disagree
    records = read_unit_records(output)
    shutil.copy(output / records[0].shards[0]["file"], output / "shard-u0000099-000.parquet")
    (output / "shard-u0000001-007.parquet.tmp").write_bytes(b"half")
    record1 = json.loads((output / "_units" / "u0000001.json").read_text())
    record1["inputs_done"].append(records[0].inputs_done[0])
    record1["shards"][0]["rows"] += 1
    (output / "_units" / "u0000001.json").write_text(json.dumps(record1))
    result = CliRunner().invoke(main, ["shards", "verify", str(output)])
    assert result.exit_code == 1
    assert "orphaned file" in result.output and "shard-u0000099-000.parquet" in result.output and ".tmp" in result.output
    assert f"input done more than once: {records[0].inputs_done[0]}" in result.output
    assert "rows in its unit record" in result.output and "PROBLEMS FOUND" in result.output
    # the orphan is invisible to readers: they read only what records list
    assert sorted(s["sample_id"] for s in TokenShardDataset(output)) == expected_ids(results)
    missing = CliRunner().invoke(main, ["shards", "verify", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "no _manifest.json" in missing.output


# --- S3: a real S3-protocol server (moto's standalone server) on loopback -------------------------------

def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    """moto_server on 127.0.0.1 with a bucket ``shards``; yields the endpoint (http://127.0.0.1:PORT)."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    server = Path(sys.executable).with_name("moto_server")
    if not server.exists():
        from .conftest import skip_or_fail

        skip_or_fail("moto[server] is not installed (pip install -e .[dev])")
    port = _free_port()
    process = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "CODECPATCH_S3_ENDPOINT")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                      CODECPATCH_S3_ENDPOINT=endpoint)
    try:
        from pyarrow import fs as pafs

        filesystem = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                                         allow_bucket_creation=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                filesystem.create_dir("shards")
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.2)
        yield endpoint
    finally:
        process.kill()
        process.wait()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _samples_by_id(dataset) -> dict:
    return {s["sample_id"]: s for s in dataset}


def test_s3_output_reads_back_bit_exactly_through_the_dataset_and_hugging_face(clips, results, cached, s3_server, tmp_path):
    import numpy as np

    from codecpatch.shards import to_hf_dataset

    local, remote = tmp_path / "local", "s3://shards/exact"
    run(load_recipe(None, RECIPE), list_inputs(clips), local, progress=False)
    stats = run(load_recipe(None, RECIPE), list_inputs(clips), remote, progress=False)
    assert stats.processed == 6 and stats.failed == 1
    here, there = _samples_by_id(TokenShardDataset(local)), _samples_by_id(TokenShardDataset(remote))
    assert sorted(there) == expected_ids(results) and sorted(here) == sorted(there)
    for sample_id, sample in here.items():
        assert sample["tokens"].dtype == there[sample_id]["tokens"].dtype
        assert sample["tokens"].numpy().tobytes() == there[sample_id]["tokens"].numpy().tobytes()  # bit-exact
        assert np.array_equal(sample["positions"].numpy(), there[sample_id]["positions"].numpy())
    hf = to_hf_dataset(remote)
    assert sorted(hf["sample_id"]) == expected_ids(results)
    for row in hf:
        tokens = np.asarray(row["tokens"], dtype=np.float16)
        assert tokens.tobytes() == here[row["sample_id"]]["tokens"].numpy().tobytes()
    assert [e["input"] for e in read_errors(remote)] == ["empty.mp4"]
    report = verify(remote)
    assert report.ok and report.inputs_done == 7 and not report.orphans


def test_s3_run_killed_midway_resumes_with_every_input_exactly_once(clips, results, s3_server, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    remote = "s3://shards/killed"
    command = [sys.executable, "-m", "codecpatch.cli", "batch", "--input", str(clips), "--output", remote, "--workers", "0",
               "--encoder-dim", "32", "--shard-mb", "0.001", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    done_at_kill = 0
    while time.monotonic() < deadline and process.poll() is None:
        try:
            done_at_kill = sum(len(r.inputs_done) for r in read_unit_records(remote))
        except OSError:
            done_at_kill = 0
        if done_at_kill >= 1:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr
    ids = [s["sample_id"] for s in TokenShardDataset(remote)]
    assert sorted(ids) == expected_ids(results)  # every input exactly once
    report = verify(remote)
    assert report.ok and report.inputs_done == 7, report.lines()


# --- a real multi-node Ray cluster on this machine: a head and a worker node started with `ray start` ----

@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """A head node and one more node (1 CPU each), started with ``ray start --block`` in their own process
    groups (stopped by those groups' ids, nothing else on the machine). Yields the address."""
    import os
    import signal
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path

    ray_cli = Path(sys.executable).with_name("ray")
    temp = tempfile.mkdtemp(prefix="cpn", dir="/tmp")  # short: Ray's socket paths must stay under 107 bytes
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
           "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus", "1", "--num-gpus", "0", "--block", "--disable-usage-stats"]
    logs = tmp_path_factory.mktemp("ray-logs")
    nodes = [subprocess.Popen([str(ray_cli), "start", "--head", "--port", str(port), "--temp-dir", temp, "--include-dashboard=false",
                               "--node-ip-address", "127.0.0.1", *common], env=env, start_new_session=True,
                              stdout=open(logs / "head.log", "w"), stderr=subprocess.STDOUT)]
    address = f"127.0.0.1:{port}"
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    try:
        import ray

        deadline = time.monotonic() + 120
        while True:  # the head answers once its GCS is up
            probe = subprocess.run([str(ray_cli), "status", "--address", address], env=env, capture_output=True, text=True)
            if probe.returncode == 0:
                break
            assert time.monotonic() < deadline and nodes[0].poll() is None, (logs / "head.log").read_text()[-2000:]
            time.sleep(1)
        nodes.append(subprocess.Popen([str(ray_cli), "start", "--address", address, "--node-ip-address", "127.0.0.1", *common],
                                      env=env, start_new_session=True, stdout=open(logs / "worker.log", "w"), stderr=subprocess.STDOUT))
        while True:  # both nodes joined
            probe = subprocess.run([str(ray_cli), "status", "--address", address], env=env, capture_output=True, text=True)
            if probe.stdout.count("node_") >= 2 and "2.0 CPU" in probe.stdout.replace("0.0/2.0 CPU", "2.0 CPU"):
                break
            assert time.monotonic() < deadline, probe.stdout + (logs / "worker.log").read_text()[-2000:]
            time.sleep(1)
        yield address
    finally:
        for node in reversed(nodes):
            try:
                os.killpg(node.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for node in reversed(nodes):
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait()
        for node in nodes:  # what Ray left in the groups (workers) goes too
            try:
                os.killpg(node.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp, ignore_errors=True)
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


@pytest.fixture(scope="module")
def many_clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("many")
    for i in range(8):
        shutil.copy(SAMPLES / ("sprites_h264_b.mp4" if i % 2 else "sprites_h264_p.mp4"), root / f"clip{i}.mp4")
    return root


CLUSTER_RECIPE = {"patchify.frames": 8, "encoder.dim": 768, "output.store_pixels": True, "execution.unit_inputs": 2,
                  "execution.workers": "auto", "execution.deadline_s": 120}


@pytest.mark.slow
def test_a_two_node_cluster_runs_units_on_both_nodes_and_the_driver_receives_only_records(two_nodes, many_clips, tmp_path):
    output = tmp_path / "out"
    recipe = load_recipe(None, {**CLUSTER_RECIPE, "execution.address": two_nodes})
    stats = run(recipe, list_inputs(many_clips), output, progress=False)
    assert stats.processed == 8 and stats.failed == 0 and stats.resources["cluster"]["CPU"] == 2
    records = read_unit_records(output)
    assert len(records) == 4 and all(r.complete for r in records)
    writers = {node["node_id"] for r in records for node in r.nodes}
    assert len(writers) == 2, records  # shards written by worker processes on both nodes
    assert set(stats.units_by_node) == writers and sum(stats.units_by_node.values()) == 4
    assert all(node["pid"] != __import__("os").getpid() for r in records for node in r.nodes)  # never by the driver
    shard_bytes = sum(s["bytes"] for r in records for s in r.shards)
    assert 0 < stats.driver_bytes < 0.05 * shard_bytes, (stats.driver_bytes, shard_bytes)
    assert verify(output).ok
    expected = sorted(f"clip{i}.mp4#0" for i in range(8))
    assert sorted(s["sample_id"] for s in TokenShardDataset(output, columns=["sample_id"])) == expected


@pytest.mark.slow
def test_driver_sigkill_at_random_points_then_rerun_gives_every_input_exactly_once(two_nodes, many_clips, tmp_path):
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    output = tmp_path / "out"
    command = [sys.executable, "-m", "codecpatch.cli", "batch", "--input", str(many_clips), "--output", str(output),
               "--address", two_nodes, "--encoder-dim", "64", "--shard-mb", "0.02", "--no-progress"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    rng = random.Random(11)
    for trial in range(3):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        time.sleep(rng.uniform(1.0, 8.0))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr
    ids = [s["sample_id"] for s in TokenShardDataset(output, columns=["sample_id"])]
    assert sorted(ids) == sorted(f"clip{i}.mp4#0" for i in range(8))  # every input exactly once
    report = verify(output)
    assert report.ok, report.lines()
    assert not [name for name in report.orphans if not name.endswith(".tmp")]  # a killed part at most left a .tmp


def test_progress_moves_per_video_while_a_unit_runs_on_ray(many_clips, tmp_path, monkeypatch):
    """A unit task streams its finished videos' summaries as it goes: the progress bar moves before the unit's
    record says it is complete (one unit of 32 short videos on one worker: a unit sends its summaries about twice
    a second, so it must run for longer than that; 8 of these videos now take less than half a second)."""
    from codecpatch.shards import Store, read_unit_record

    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(32):
        shutil.copy(many_clips / f"clip{i % 8}.mp4", videos / f"clip{i:02d}.mp4")

    seen: list = []  # (videos counted so far, the unit complete on disk at that moment)

    class Bar:
        def __init__(self, *args, **kwargs):
            self.n = 0

        def update(self, count):
            self.n += count
            record = read_unit_record(Store.at(tmp_path / "out"), 0)
            seen.append((self.n, bool(record and record.complete)))

        def set_postfix(self, *args, **kwargs):
            pass

        def close(self):
            pass

    monkeypatch.setattr(runner_module, "tqdm", Bar)
    recipe = load_recipe(None, {"patchify.frames": 8, "encoder.dim": 32, "execution.unit_inputs": 32, "execution.workers": 1})
    stats = run(recipe, list_inputs(videos), tmp_path / "out", progress=True)
    assert stats.processed == 32 and stats.units == 1
    assert [n for n, _ in seen] == list(range(1, 33))
    assert not seen[0][1], "the first video was reported only once its whole unit had finished"


@pytest.mark.slow
def test_a_hanging_source_inside_a_unit_keeps_the_units_finished_videos(many_clips, tmp_path, silent_tcp_server):
    for name in ("a.mp4", "c.mp4"):
        shutil.copy(many_clips / "clip0.mp4", tmp_path / name)
    listing = tmp_path / "list.txt"
    listing.write_text(f"a.mp4\ntcp://127.0.0.1:{silent_tcp_server}\nc.mp4\n")  # one unit: good, hanging, good
    recipe = load_recipe(None, {"patchify.frames": 8, "encoder.dim": 32, "execution.unit_inputs": 3, "execution.workers": 1,
                                "execution.deadline_s": 4, "execution.retries": 0})
    stats = run(recipe, list_inputs(listing), tmp_path / "out", progress=False)
    assert stats.processed == 2 and stats.errors_by_kind == {"timeout": 1}
    [record] = read_unit_records(tmp_path / "out")
    assert record.complete and len(record.nodes) == 2  # the unit resumed after its worker exited at the deadline
    assert [s["video_id"] for s in TokenShardDataset(tmp_path / "out", columns=["video_id"])] == ["a.mp4", "c.mp4"]
    [error] = read_errors(tmp_path / "out")
    assert error["kind"] == "timeout" and "worker killed" in error["message"]


# --- streamed inputs -------------------------------------------------------------------------------------

def test_streamed_lists_are_read_in_order_and_lazily(clips, results, cached, monkeypatch, tmp_path):
    import pyarrow as pa

    from codecpatch.pipeline import iter_inputs

    names = sorted(p.name for p in clips.iterdir())
    listing = tmp_path / "LIST.txt"
    listing.write_text("# a comment\n" + "".join(f"{clips / n}\tcaption {n}\n" for n in reversed(names)))
    streamed = list(iter_inputs(listing))
    assert [i.path for i in streamed] == [str(clips / n) for n in reversed(names)]  # the list's own order
    assert streamed[0].text == f"caption {names[-1]}"
    table = pa.table({"path": [str(clips / n) for n in names], "id": [f"id-{n}" for n in names]})
    pq.write_table(table, tmp_path / "LIST.parquet")
    batches = list(iter_inputs(tmp_path / "LIST.parquet", batch_rows=2))
    assert [i.video_id for i in batches] == [f"id-{n}" for n in names]

    # the runner pulls a stream a unit at a time: with a small peek, the first video runs long before the end
    pulled = []

    def stream():
        for index in range(40):
            pulled.append(index)
            yield streamed[index % len(streamed)].__class__(streamed[index % len(streamed)].path, f"v{index:02d}")

    seen_at_first_video = []
    original = results

    def process(item, recipe):
        seen_at_first_video.append(len(pulled))
        result = original[item.path.rsplit("/", 1)[-1]]
        return dataclasses.replace(result, video_id=item.video_id,
                                   rows=[dataclasses.replace(r, video_id=item.video_id) for r in result.rows])

    monkeypatch.setattr(runner_module, "process_video", process)
    monkeypatch.setattr(runner_module, "_PEEK_INPUTS", 2)
    stats = run(load_recipe(None, RECIPE), stream(), tmp_path / "out", progress=False)
    assert seen_at_first_video[0] <= 12 and len(pulled) == 40  # 2 peeked + units up to 8 to do, then one unit at a time
    assert stats.inputs == 40 and stats.processed + stats.failed == 40
    assert len(read_unit_records(tmp_path / "out")) == 20 and verify(tmp_path / "out").ok


def test_object_store_inputs_and_lists_are_fetched_to_workers(clips, s3_server, tmp_path):
    from pyarrow import fs as pafs

    from codecpatch.pipeline import iter_inputs
    from codecpatch.shards import remote_filesystem

    filesystem, _ = remote_filesystem("s3://shards/videos")
    for name in ("clip0.mp4", "clip1.mp4"):
        with filesystem.open_output_stream(f"shards/videos/{name}") as out:
            out.write((clips / name).read_bytes())
    with filesystem.open_output_stream("shards/videos/notes.txt") as out:
        out.write(b"not a video")
    with filesystem.open_output_stream("shards/LIST.txt") as out:
        out.write(b"videos/clip1.mp4\tfrom a remote list\n")
    inputs = list(iter_inputs("s3://shards/videos/"))
    assert [(i.path, i.video_id) for i in inputs] == [("s3://shards/videos/clip0.mp4", "clip0.mp4"),
                                                      ("s3://shards/videos/clip1.mp4", "clip1.mp4")]
    [listed] = list(iter_inputs("s3://shards/LIST.txt"))
    assert listed.path == "s3://shards/videos/clip1.mp4" and listed.text == "from a remote list"
    stats = run(load_recipe(None, RECIPE), iter_inputs("s3://shards/videos/"), tmp_path / "out", progress=False)
    assert stats.processed == 2 and stats.failed == 0
    rows = {s["video_id"]: s for s in TokenShardDataset(tmp_path / "out")}
    assert sorted(rows) == ["clip0.mp4", "clip1.mp4"] and rows["clip0.mp4"]["source"] == "s3://shards/videos/clip0.mp4"
    assert not list(__import__("pathlib").Path(__import__("tempfile").gettempdir()).glob("codecpatch-input-*"))  # removed after use
    assert filesystem.get_file_info("shards/videos/clip0.mp4").type == pafs.FileType.File
