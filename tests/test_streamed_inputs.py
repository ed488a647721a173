"""The CLI streams its inputs (issue 11): a list of any length or a folder is read once, a unit at a time,
never held whole or stat'ed up front; the dry run counts what it streams; ``--limit`` cuts in input order
without moving unit boundaries; a run from a list processes each of its videos exactly once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from codecpatch.cli import main
from codecpatch.pipeline import iter_inputs, scan_inputs
from codecpatch.shards import Manifest, read_errors, read_unit_records, shard_paths, verify

from .conftest import REPO, SAMPLES

FAST = ("--encoder-dim", "32", "--workers", "0", "--no-progress")
REAL = ("sprites_h264_p.mp4", "static_h264_p.mp4", "pan_h264_p.mp4")


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def _write_list(path, lines: int) -> None:
    """``lines`` entries: the three real sample clips first, then paths that do not exist."""
    with open(path, "w") as handle:
        for name in REAL:
            handle.write(f"{SAMPLES / name}\n")
        for i in range(lines - len(REAL)):
            handle.write(f"missing/{i // 1000:04d}/clip{i:07d}.mp4\n")


_PEAK = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
         "sys.stdout.write(done.stdout); sys.stderr.write(done.stderr); "
         "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(done.returncode)")


def _dry_run_peak(listing, output) -> tuple[str, float]:
    """Run ``codecpatch batch --dry-run`` on ``listing`` in a child process: (stdout, its peak RSS in MB)."""
    command = [sys.executable, "-c", _PEAK, sys.executable, "-m", "codecpatch.cli", "batch", "--input", str(listing),
               "--output", str(output), "--dry-run", *FAST]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    peak = int(done.stdout.rsplit("PEAK_KB", 1)[1].split()[0]) / 1024
    return done.stdout, peak


def test_a_200k_line_list_is_planned_streaming_with_bounded_memory(tmp_path):
    small, large = tmp_path / "SMALL.txt", tmp_path / "LIST.txt"
    _write_list(small, 2_000)
    _write_list(large, 200_000)
    small_out, small_peak = _dry_run_peak(small, tmp_path / "out")
    out, peak = _dry_run_peak(large, tmp_path / "out")
    assert "would run (200000):" in out and "  ... and 199950 more\n" in out  # counts streamed, 50 names shown
    assert "200000 inputs in 12500 units of 16" in out and "dry run: nothing written" in out
    assert out.count("\n  missing/") == 47 and f"  {SAMPLES / REAL[0]}" in out
    assert not (tmp_path / "out").exists()
    # 200k inputs held as objects (plus the plan's lists and lines) take well over 60 MB; streamed they take none
    assert peak - small_peak < 40, (small_peak, peak)
    assert peak < 1500, peak  # imports (torch, pyarrow, PyAV) included


@pytest.mark.parametrize("listing", ["LIST.txt", "LIST.parquet"])
def test_a_run_from_a_list_processes_each_video_exactly_once_and_limit_cuts_in_input_order(tmp_path, listing):
    entries = [str(SAMPLES / name) for name in REAL] + [str(tmp_path / "gone-1.mp4"), str(tmp_path / "gone-2.mp4")]
    entries = [entries[0], entries[3], entries[1], entries[4], entries[2]]  # good and missing interleaved
    path = tmp_path / listing
    if listing.endswith(".txt"):
        path.write_text("".join(f"{entry}\n" for entry in entries))
    else:
        import pyarrow as pa

        pq.write_table(pa.table({"path": entries}), path)
    out = tmp_path / "out"
    args = ("batch", "--input", path, "--output", out, "--unit-inputs", "2", *FAST)

    dry = cli(*args, "--dry-run", "--limit", "3")
    assert dry.exit_code == 0, dry.output
    assert f"would run (3):\n  {entries[0]}\n  {entries[1]}\n  {entries[2]}\nalready done (0):" in dry.output
    assert f"  {entries[3]}: over --limit\n  {entries[4]}: over --limit" in dry.output

    first = cli(*args, "--limit", "3")
    assert first.exit_code == 0, first.output
    assert "3 inputs: 2 processed, 1 failed, 0 already done, 2 left by --limit;" in first.output
    done = Manifest.read(out).inputs_done
    assert sorted(done) == sorted(entries[:3])
    # unit 1 ([2], [3]) was cut at the limit: its record holds entry 2 only, and is resumed, not replaced
    assert {r.unit: r.inputs_done for r in read_unit_records(out)} == {0: entries[:2], 1: [entries[2]]}

    dry = cli(*args, "--dry-run")
    assert f"would run (2):\n  {entries[3]}\n  {entries[4]}\nalready done (2):" in dry.output
    assert f"  {entries[1]}: failed in an earlier run (" in dry.output

    rest = cli(*args)
    assert rest.exit_code == 0, rest.output
    assert "5 inputs: 1 processed, 1 failed, 2 already done, 1 failed in an earlier run;" in rest.output
    again = cli(*args)
    assert "5 inputs: 0 processed, 0 failed, 3 already done, 2 failed in an earlier run;" in again.output

    report = verify(out)
    assert report.ok and report.inputs_done == 5 and report.errors == 2 and not report.orphans, report.lines()
    assert sorted(Manifest.read(out).inputs_done) == sorted(entries)  # each exactly once
    assert sorted(e["input"] for e in read_errors(out)) == sorted(entries[1::2][:2])
    videos = [v for shard in shard_paths(out) for v in pq.read_table(shard, columns=["video_id"]).column("video_id").to_pylist()]
    assert set(videos) == {entries[0], entries[2], entries[4]}


def test_a_folder_is_walked_as_a_stream_in_the_order_and_with_the_skips_of_a_scan(tmp_path):
    root = tmp_path / "videos"
    for folder in ("a", "a/deep", "a0", "b.mp4", "z"):
        (root / folder).mkdir(parents=True)
    for name in ("a.mp4", "a/b.mp4", "a/deep/c.mkv", "a0.mp4", "a0/x.mp4", "a-1.mp4", "b.mp4/inner.mp4", "z/notes.txt",
                 "Z.mp4", "a/deep.mp4"):
        shutil.copy(SAMPLES / REAL[0], root / name) if name.endswith((".mp4", ".mkv")) else (root / name).write_text("x")
    (root / "broken.mp4").symlink_to(root / "nowhere.mp4")
    (root / "loop.mp4").symlink_to(root / "loop.mp4")
    (root / "linked").symlink_to(root / "a")
    (root / "link.mp4").symlink_to(root / "a.mp4")
    skipped: list = []
    streamed = [i.video_id for i in iter_inputs(root, skipped=skipped)]
    scan = scan_inputs(root)
    assert streamed == [i.video_id for i in scan.inputs]
    assert streamed == sorted(streamed) and "a/deep/c.mkv" in streamed and "link.mp4" in streamed
    assert sorted(skipped, key=lambda s: s.path) == scan.skipped
    assert {s.reason for s in skipped} >= {"broken symlink", "symlink loop", "symlink to a folder",
                                           "directory with a video suffix", "extension not selected"}
