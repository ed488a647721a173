"""The live path against a real RTSP server (GStreamer's, tests/rtsp_server.py run with the system python3):
RTP over UDP and TCP, a server that goes away and comes back, a stalled server, a wrong path, credentials,
B-frames, and the wall-clock time of every window. Every server listens on 127.0.0.1 and is killed after
its test."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from codecpatch.decode import VideoReader
from codecpatch.pipeline import load_recipe
from codecpatch.shards import Manifest
from codecpatch.stream import STREAM_STATS, STREAM_WINDOWS, run_stream

from .conftest import SAMPLES, skip_or_fail
from .test_stream import free_port, in_thread

SERVER = Path(__file__).with_name("rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's python3-gi lives there, not in the virtualenv
B_FRAME_CLIP = SAMPLES / "sprites_h264_b.mp4"  # 50 frames at 25 fps, 2 GOPs, B-frames
ROW_COLUMNS = ["sample_id", "clip_index", "clip_start", "clip_end", "wallclock_start", "wallclock_end", "wallclock_source", "n_tokens", "times_estimated"]
#: The server's wall clock is this far behind ours (libfaketime): capture times must show it, receive times not.
SENDER_CLOCK_OFFSET_S = -3600.0


@pytest.fixture(scope="session")
def gst_rtsp() -> None:
    """GStreamer's RTSP server with x264enc, as .ci/run installs it (apt: python3-gi, gir1.2-gst-rtsp-server-1.0,
    gstreamer1.0-plugins-good/-ugly)."""
    check = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "assert all(Gst.ElementFactory.find(e) for e in ('x264enc', 'rtph264pay', 'qtdemux', 'h264parse'))")
    if not os.path.exists(SYSTEM_PYTHON) or subprocess.run([SYSTEM_PYTHON, "-c", check], capture_output=True).returncode:
        skip_or_fail("GStreamer's RTSP server is not installed (apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 "
                     "gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly)")


@pytest.fixture()
def rtsp_server(gst_rtsp):
    """``start(*args, port=None, clock_offset_s=None) -> (url, process)`` starts a server on 127.0.0.1 (a fresh
    port unless given) and waits for it to listen. Each runs in a process group of its own (faketime runs the
    server as its child); every group started is killed afterwards (resumed first if a test stopped it)."""
    started: list[subprocess.Popen] = []

    def start(*args: str, port: int | None = None, clock_offset_s: float | None = None) -> tuple[str, subprocess.Popen]:
        port = port or free_port()
        command = [SYSTEM_PYTHON, str(SERVER), "--port", str(port), *args]
        env = dict(os.environ)
        if clock_offset_s is not None:
            faketime = shutil.which("faketime")
            if faketime is None:
                skip_or_fail("faketime is not installed (apt-get install faketime)")
            command = [faketime, "-f", f"{clock_offset_s:+.0f}s", *command]
            env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, text=True,
                                   start_new_session=True)
        started.append(process)
        ready = process.stdout.readline().strip()
        assert ready == "ready", f"RTSP server did not start: {ready!r} {process.stderr.read() if process.poll() is not None else ''}"
        return f"rtsp://127.0.0.1:{port}/cam", process

    try:
        yield start
    finally:
        for process in started:
            for signum in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.killpg(process.pid, signum)
                except ProcessLookupError:  # the group is gone (a test killed its only process)
                    break
            process.wait(timeout=10)
            for pipe in (process.stdout, process.stderr):
                pipe.close()


def recipe(**stream):
    overrides = {"encoder.dim": 32, "compress": "", "stream.backoff_s": 0.2, "stream.backoff_max_s": 0.4,
                 "stream.rtsp_transport": "tcp", "stream.read_timeout": 3.0, "stream.open_timeout": 5.0}
    overrides.update({f"stream.{key}": value for key, value in stream.items()})
    return load_recipe(None, overrides)


def rows(directory: Path) -> list[dict]:
    shards = sorted(directory.glob("shard-*.parquet"))
    return [row for shard in shards for row in pq.read_table(shard, columns=ROW_COLUMNS).to_pylist()]


def window_log(directory: Path, statuses: tuple[str, ...] = ("written",)) -> list[dict]:
    """The windows of ``_stream_windows.jsonl`` whose last status is in ``statuses``, in order: a window's lines are its events (handled, with
    its times; then written, with its shard), merged, the last status counting."""
    path = directory / STREAM_WINDOWS
    entries = {}
    for line in path.read_text().split("\n")[:-1] if path.exists() else []:  # [:-1]: a line still being written
        entry = json.loads(line)
        entries[entry["window"]] = {**entries.get(entry["window"], {}), **entry}
    return [entry for entry in entries.values() if entry.get("status") in statuses]


HANDLED = ("pending", "written")  # while a stream runs, its windows are pending until their shard is finished


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def assert_numbered_once(got: list[dict]) -> None:
    assert [r["clip_index"] for r in got] == list(range(len(got)))
    assert len({r["sample_id"] for r in got}) == len(got)


# -- transports -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_rtp_over_udp_and_over_tcp_deliver_every_window(rtsp_server, tmp_path, transport):
    # the server allows only this transport: the stream works only if rtsp_transport reaches FFmpeg
    url, _ = rtsp_server("--transport", transport)
    stats = run_stream(url, recipe(rtsp_transport=transport, max_reconnects=0), tmp_path, progress=False, max_windows=3)
    assert (stats.windows_written, stats.windows_dropped, stats.sessions, stats.disconnect_count) == (3, 0, 1, 0)
    got = rows(tmp_path)
    assert_numbered_once(got)
    np.testing.assert_allclose([r["clip_start"] for r in got], [0.0, 1.0, 2.0], atol=0.05)  # 25-frame GOPs at 25 fps
    assert all(r["n_tokens"] > 0 for r in got)


def test_the_wrong_transport_is_refused_by_the_server(rtsp_server, tmp_path):
    url, _ = rtsp_server("--transport", "tcp")
    # (max_windows only bounds the test if the option were ignored: FFmpeg would then fall back to TCP)
    stats = run_stream(url, recipe(rtsp_transport="udp", max_reconnects=1), tmp_path, progress=False, max_windows=1)
    assert stats.gave_up and stats.windows_written == 0 and "unavailable" in stats.disconnects[0]


# -- wall clock -----------------------------------------------------------------------------------------------


def test_a_window_is_capture_timed_only_when_its_first_and_last_frames_are():
    from codecpatch.stream import FrameClock, WindowClock

    assert WindowClock.of(FrameClock(10.0, 12.5), FrameClock(11.0, 13.5)) == WindowClock(10.0, 11.0, "capture")
    assert WindowClock.of(FrameClock(None, 12.5), FrameClock(11.0, 13.5)) == WindowClock(12.5, 13.5, "receive")
    assert WindowClock(1796105060.25, 1796105061.0, "capture").as_datetimes()[0] == \
        datetime(2026, 12, 1, 6, 4, 20, 250000, tzinfo=timezone.utc)


def test_windows_carry_the_capture_time_from_sender_reports_else_the_receive_time(rtsp_server, tmp_path):
    url, _ = rtsp_server(clock_offset_s=SENDER_CLOCK_OFFSET_S)  # the camera's clock is an hour behind ours
    before = time.time()
    stats = run_stream(url, recipe(max_reconnects=0), tmp_path, progress=False, max_windows=7)
    after = time.time()
    got = rows(tmp_path)
    assert stats.windows_written == len(got) == 7
    sources = [r["wallclock_source"] for r in got]
    # GStreamer's first sender report comes 1-4 s in: the windows before it have receive times (RTP times
    # anchored at the receive time where the reader kept them: not here, its timestamps are estimated), then
    # capture times
    assert sources[0] in ("receive", "receive_pts") and sources[-1] == "capture"
    assert sources == sorted(sources, key=["receive", "receive_pts", "capture"].index)
    assert not any(r["times_estimated"] and s == "receive_pts" for r, s in zip(got, sources))
    for row in got:
        start, end = row["wallclock_start"].timestamp(), row["wallclock_end"].timestamp()
        assert row["wallclock_start"].tzinfo is not None
        if row["wallclock_source"] == "capture":  # the sender's clock, mapped from RTP time
            assert before + SENDER_CLOCK_OFFSET_S - 1 < start <= end < after + SENDER_CLOCK_OFFSET_S
            assert end - start == pytest.approx(row["clip_end"] - row["clip_start"], abs=2e-3)
        else:  # our clock: when decoded, or RTP time anchored at the receive time
            assert before <= start <= end <= after
            if row["wallclock_source"] == "receive_pts":
                assert end - start == pytest.approx(row["clip_end"] - row["clip_start"], abs=2e-3)
    captured = [r for r in got if r["wallclock_source"] == "capture"]
    gaps = np.diff([r["wallclock_start"].timestamp() for r in captured])
    np.testing.assert_allclose(gaps, np.diff([r["clip_start"] for r in captured]), atol=2e-3)
    # the window log says the same, as ISO 8601 UTC
    log = window_log(tmp_path)
    assert [e["wallclock_source"] for e in log] == sources
    for entry, row in zip(log, got):
        logged = datetime.strptime(entry["wallclock_start"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        assert logged == row["wallclock_start"]


def test_batch_rows_and_shards_without_wallclock_columns_stay_readable(tmp_path):
    from codecpatch.shards import TokenShardDataset

    out = tmp_path / "file"
    run_stream(B_FRAME_CLIP, recipe(), out, progress=False)  # a file: receive times
    got = rows(out)
    assert {r["wallclock_source"] for r in got} == {"receive"}
    # a shard from before the columns existed reads as it did
    old = tmp_path / "old"
    old.mkdir()
    for shard in out.glob("shard-*.parquet"):
        table = pq.read_table(shard)
        pq.write_table(table.drop_columns(["wallclock_start", "wallclock_end", "wallclock_source"]), old / shard.name)
    shutil.copy(out / "_manifest.json", old / "_manifest.json")
    samples = list(TokenShardDataset(old))
    assert len(samples) == len(got) and "wallclock_start" not in samples[0]


# -- a server that goes away, stalls, or is asked for the wrong thing -------------------------------------------


def test_a_server_that_goes_away_and_comes_back_continues_the_numbering_without_duplicates(rtsp_server, tmp_path):
    port = free_port()
    _, first = rtsp_server(port=port)
    url = f"rtsp://127.0.0.1:{port}/cam"
    thread, outcome = in_thread(run_stream, url, recipe(max_reconnects=20), tmp_path, progress=False)
    try:
        wait_for(lambda: len(window_log(tmp_path, HANDLED)) >= 2, 30, "two windows from the first server")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        time.sleep(1.0)  # away for a while: reconnect attempts fail
        rtsp_server(port=port)
        wait_for(lambda: sum(e["session"] == 1 for e in window_log(tmp_path, HANDLED)) >= 3, 30, "three windows from the second server")
        outcome["stop"].set()
        thread.join(timeout=30)
        assert not thread.is_alive() and "error" not in outcome, outcome
    finally:
        outcome["stop"].set()
    stats = outcome["value"]
    assert stats.sessions == 2 and stats.disconnect_count >= 1 and not stats.gave_up
    got = rows(tmp_path)
    assert len(got) == stats.windows_written >= 5
    assert_numbered_once(got)
    log = window_log(tmp_path)
    assert [e["window"] for e in log] == [r["clip_index"] for r in got]
    sessions = [e["session"] for e in log]
    assert sessions == sorted(sessions) and set(sessions) == {0, 1}
    # the second server's stream starts over at time 0: its windows come once each, after the first's
    restart = sessions.index(1)
    assert got[restart]["clip_start"] == pytest.approx(0.0, abs=0.05)
    assert all(later["clip_start"] > earlier["clip_start"] for earlier, later in zip(got[restart:], got[restart + 1:]))


def test_a_stalled_server_ends_the_read_after_the_read_timeout(rtsp_server, tmp_path):
    url, server = rtsp_server()
    thread, outcome = in_thread(run_stream, url, recipe(read_timeout=1.5, max_reconnects=0), tmp_path, progress=False)
    try:
        wait_for(lambda: len(window_log(tmp_path, HANDLED)) >= 1, 30, "a window")
        os.killpg(server.pid, signal.SIGSTOP)  # the server freezes: the connection stays open, nothing arrives
        stalled_at = time.monotonic()
        thread.join(timeout=20)
        ended_after = time.monotonic() - stalled_at
        assert not thread.is_alive() and "error" not in outcome, outcome
    finally:
        outcome["stop"].set()
        os.killpg(server.pid, signal.SIGCONT)
    stats = outcome["value"]
    assert stats.gave_up and stats.disconnects[0].startswith("stalled")
    assert 1.5 <= ended_after < 1.5 + 5.0  # the read timeout, plus the window in flight and the shard close (a loaded machine)
    got = rows(tmp_path)
    assert len(got) == stats.windows_written >= 1  # what came before the stall is kept
    assert_numbered_once(got)


def test_a_wrong_path_is_a_clear_permanent_error_and_exit_2(rtsp_server, tmp_path):
    from click.testing import CliRunner

    from codecpatch.cli import main

    url, _ = rtsp_server()
    wrong = url.replace("/cam", "/nope")
    started = time.monotonic()
    # (a limit on reconnects only so that a retried error ends the test: a permanent one must exit 2 at once)
    result = CliRunner().invoke(main, ["stream", wrong, "--output", str(tmp_path / "out"), "--max-reconnects", "2", "--no-progress"])
    assert result.exit_code == 2, result.output
    assert wrong in result.output and "404 Not Found" in result.output
    assert time.monotonic() - started < 15  # not retried


@pytest.mark.slow
def test_credentials_in_the_url_are_redacted_everywhere(rtsp_server, tmp_path):
    url, _ = rtsp_server("--user", "admin", "--password", "hunter2")
    secret_url = url.replace("rtsp://", "rtsp://admin:hunter2@")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "codecpatch.cli", "stream", secret_url, "--output", str(out), "--max-windows", "2",
               "--rtsp-transport", "tcp", "--encoder-dim", "32", "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(rows(out)) == 2  # the login worked
    public = "rtsp://***@127.0.0.1"
    assert public in done.stderr  # the logs name the source, without its credentials
    for text in (done.stdout, done.stderr, *(path.read_bytes().decode("latin-1") for path in out.iterdir())):
        assert "hunter2" not in text and "admin:" not in text
    assert {r["video_id"] for r in pq.read_table(next(out.glob("shard-*.parquet")), columns=["video_id"]).to_pylist()} == \
        {url.replace("rtsp://", "rtsp://***@")}
    assert json.loads((out / STREAM_STATS).read_text())["source"].startswith(public)
    # a wrong password: refused at once (exit 2), and the error does not repeat it either
    wrong = [*command[:4], secret_url.replace("hunter2", "letmein"), *command[5:], "--max-reconnects", "2"]
    refused = subprocess.run(wrong, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "401 Unauthorized" in refused.stderr
    assert "letmein" not in refused.stdout + refused.stderr and public in refused.stderr


# -- B-frames ---------------------------------------------------------------------------------------------------


def test_b_frames_over_rtsp_give_the_same_vectors_and_tokens_as_the_file(rtsp_server, tmp_path):
    url, _ = rtsp_server("--file", str(B_FRAME_CLIP))
    with VideoReader(B_FRAME_CLIP, residual="none") as reader:
        expected = [(f.pict_type, f.motion_vectors) for f in reader]
    received = []
    with VideoReader(url, residual="none", read_timeout=3.0, open_timeout=5.0,
                     container_options={"rtsp_transport": "tcp"}) as reader:
        for frame in reader:
            received.append((frame.pict_type, frame.motion_vectors))
            if len(received) == len(expected):
                break
    assert [p for p, _ in received] == [p for p, _ in expected] and "B" in {p for p, _ in expected}
    for (_, got), (_, want) in zip(received, expected):
        np.testing.assert_array_equal(got, want)
    # through the whole stream path: the same tokens, window for window, as the file read as a stream
    url, _ = rtsp_server("--file", str(B_FRAME_CLIP))
    live = run_stream(url, recipe(max_reconnects=0), tmp_path / "rtsp", progress=False, max_windows=2)
    run_stream(B_FRAME_CLIP, recipe(), tmp_path / "file", progress=False)
    assert live.windows_written == 2
    live_rows, file_rows = (pq.read_table(sorted((tmp_path / name).glob("shard-*.parquet"))[0], columns=["tokens", "frame_types"]).to_pylist()
                            for name in ("rtsp", "file"))
    assert len(live_rows) == len(file_rows) == 2 and live_rows == file_rows
