"""Live streaming: windowing, the bounded queue's policies, rolling shards, and loopback TCP/UDP senders
(FFmpeg CLI) with disconnects and SIGTERM. Every wait is bounded in time."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from codecpatch.decode import CodecFrame
from codecpatch.errors import VideoNotFoundError
from codecpatch.patchify import iter_clip_samples
from codecpatch.pipeline import ClipPipeline, load_recipe
from codecpatch.shards import Manifest
from codecpatch.stream import FrameClock, ReceiveAnchor, StreamSession, WindowClock, WindowPolicy, Windower, run_stream

from .conftest import SAMPLES

GOP = 25  # frames per GOP of the camera clip (1 s at 25 fps)
GOPS = 6


@pytest.fixture(scope="session")
def camera_clip(ffmpeg, tmp_path_factory) -> Path:
    """6 s, 25 fps, 320x240 H.264 with a key frame every 25 frames and no B-frames: a camera's stream."""
    path = tmp_path_factory.mktemp("camera") / "camera.mp4"
    subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-stream_loop", "2", "-i", str(SAMPLES / "sprites_h264_p.mp4"),
                    "-c:v", "libx264", "-g", str(GOP), "-keyint_min", str(GOP), "-sc_threshold", "0", "-bf", "0",
                    "-refs", "1", "-preset", "ultrafast", "-an", str(path)], check=True, timeout=60)
    return path


def recipe(**stream):
    overrides = {"encoder.dim": 32, "compress": "", "stream.backoff_s": 0.2, "stream.backoff_max_s": 0.4}
    overrides.update({f"stream.{key}": value for key, value in stream.items()})
    return load_recipe(None, overrides)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def send(ffmpeg: str, clip: Path, url: str, *, realtime: bool = True) -> subprocess.Popen:
    """Stream ``clip`` as MPEG-TS to ``url`` (a TCP url with ?listen=1 waits for the receiver to connect)."""
    pace = ["-re"] if realtime else []
    return subprocess.Popen([ffmpeg, "-loglevel", "error", *pace, "-i", str(clip), "-c", "copy", "-f", "mpegts", url],
                            stdin=subprocess.DEVNULL)


def in_thread(function, *args, **kwargs):
    """Run ``function`` on a thread; returns (thread, result dict with "value" or "error"). ``outcome["stop"]``
    is passed as ``stop=`` so a failing test can end the run."""
    outcome: dict = {"stop": threading.Event()}
    kwargs.setdefault("stop", outcome["stop"])

    def target():
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as error:  # surfaced by the test
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def rows(directory: Path) -> list[dict]:
    shards = sorted(directory.glob("shard-*.parquet"))
    return [row for shard in shards for row in pq.read_table(shard, columns=["sample_id", "clip_index", "clip_start", "frame_types", "n_tokens", "times_estimated"]).to_pylist()]


def udp_port_bound(port: int) -> bool:
    """True once some socket on this machine is bound to UDP ``port`` (from /proc/net/udp)."""
    with open("/proc/net/udp") as table:
        return any(line.split()[1].endswith(f":{port:04X}") for line in list(table)[1:])


def frame(index: int, time_s: float, key: bool = False) -> CodecFrame:
    return CodecFrame(index=index, pts=index, time=time_s, pict_type="I" if key else "P", key_frame=key, width=32, height=32,
                      motion_source="none", n_vectors=0, motion_vectors=None, block_motion=None, residual_energy=None, rgb=None)


# -- windowing (pure) ----------------------------------------------------------------------------------------


def cut(policy: WindowPolicy, frames: list[CodecFrame]) -> list[list[int]]:
    windower, windows = Windower(policy), []
    for f in frames:
        finished = windower.add(f)
        if finished:
            windows.append([x.index for x in finished])
    tail = windower.flush()
    return windows + ([[x.index for x in tail]] if tail else [])


def test_gop_windows_cut_before_each_key_frame_and_merge_short_ones():
    frames = [frame(i, i / 10, key=i in (0, 5, 7, 15)) for i in range(20)]
    assert cut(WindowPolicy("gop"), frames) == [list(range(0, 5)), [5, 6], list(range(7, 15)), list(range(15, 20))]
    # a key frame 0.2 s after the window start does not cut when min_seconds is 0.5
    merged = cut(WindowPolicy("gop", min_seconds=0.5), frames)
    assert merged == [list(range(0, 5)), list(range(5, 15)), list(range(15, 20))]


def test_seconds_windows_close_on_their_last_frame_and_max_seconds_bounds_a_gop():
    frames = [frame(i, i * 0.25, key=i == 0) for i in range(12)]
    windower = Windower(WindowPolicy("seconds", seconds=1.0))
    closed_at = [i for i, f in enumerate(frames) if windower.add(f)]
    assert closed_at == [3, 7, 11]  # the window is out with its 4th frame, not when the 5th arrives
    assert cut(WindowPolicy("gop", max_seconds=1.0), frames) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


def test_timestamps_going_back_end_the_window():
    frames = [frame(0, 5.0, True), frame(1, 5.1), frame(2, 0.0), frame(3, 0.1)]  # a sender restarted
    assert cut(WindowPolicy("gop"), frames) == [[0, 1], [2, 3]]


def test_the_receive_anchor_keeps_the_least_delayed_offset_and_re_anchors_on_a_jump():
    anchor = ReceiveAnchor(max_skew_s=1.0)
    assert anchor.at(0.0, 100.5) == (100.5, 0)  # the first frame anchors (it came after probing)
    assert anchor.at(0.04, 100.6) == (100.5, 0)  # later than the mapping: the offset stays
    assert anchor.at(1.0, 101.2) == (100.2, 0)  # earlier than the mapping: less delayed, the offset drops
    for i in range(1, 41):  # a burst of 1.6 s of buffered frames in 0.1 s lowers the offset, no break
        offset, epoch = anchor.at(1.0 + 0.04 * i, 101.2 + 0.0025 * i)
    assert (offset, epoch) == (pytest.approx(100.2 - 1.5), 0)
    assert anchor.at(0.0, 103.0) == (103.0, 1)  # timestamps went back (a restarted sender): a new epoch
    assert anchor.at(5.0, 108.5) == (103.0, 1)
    assert anchor.at(9.0, 108.6) == (99.6, 2)  # 4 s of stream time in 0.1 s: timestamps jumped ahead
    assert anchor.at(9.04, 110.7) == (110.7 - 9.04, 3)  # 2 s later than the mapping: drift, re-anchored
    # a window's span is its stream-time span through its last frame's offset, unless an epoch lies inside it
    first, last = FrameClock(None, 100.5, 0.0, 100.5, 0), FrameClock(None, 101.2, 1.0, 100.2, 0)
    assert WindowClock.of(first, last) == WindowClock(100.2, 101.2, "receive_pts")
    assert WindowClock.of(first, FrameClock(None, 103.0, 0.0, 103.0, 1)) == WindowClock(100.5, 103.0, "receive")
    assert WindowClock.of(FrameClock(None, 100.5), last) == WindowClock(100.5, 101.2, "receive")  # no timestamps


# -- sessions on files ---------------------------------------------------------------------------------------


def test_stream_windows_give_the_same_tokens_as_the_batch_path_on_the_same_frames(camera_clip):
    r = recipe()
    with StreamSession(camera_clip, r) as session:
        results = list(session.results())
    assert [res.n_frames for res in results] == [GOP] * GOPS
    assert all(res.error is None for res in results)
    pipeline = ClipPipeline(r)  # the batch worker's stage object, on clips of one GOP
    config = pipeline.config = replace(pipeline.config, clip_seconds=None, clip_frames=GOP)
    batch = [pipeline.process(s, video_id="x", source=str(camera_clip)) for s in iter_clip_samples(camera_clip, config)]
    assert len(batch) == GOPS
    for live, clip in zip(results, batch):
        assert live.clip.row.clip_index == clip.row.clip_index
        np.testing.assert_array_equal(live.clip.tokens.positions.numpy(), clip.tokens.positions.numpy())
        np.testing.assert_array_equal(live.clip.tokens.tokens.numpy(), clip.tokens.tokens.numpy())


def test_a_slow_consumer_drops_the_oldest_windows_and_counts_them(camera_clip):
    with StreamSession(camera_clip, recipe(queue=1, when_behind="drop_oldest")) as session:
        seen = []
        for window in session.windows():
            if window is None:
                continue
            if not seen:  # hold the first window until the decoder has finished the file: it must drop
                deadline = time.monotonic() + 30
                while not session.counters.ended and time.monotonic() < deadline:
                    time.sleep(0.02)
            seen.append(window.index)
    dropped = list(session.counters.dropped_indices)
    assert session.counters.ended == "source ended"
    assert len(seen) == 2 and seen[-1] == GOPS - 1  # the one in hand and the newest; the rest were dropped
    assert sorted(seen + dropped) == list(range(GOPS)) and session.counters.dropped == len(dropped) == GOPS - 2


@pytest.mark.parametrize("when_behind", ["drop_oldest", "block"])
def test_leaving_the_loop_early_releases_the_decoder(camera_clip, when_behind):
    session = StreamSession(camera_clip, recipe(queue=1, when_behind=when_behind))
    for _ in session.results():
        break  # no context manager: leaving the loop alone must stop the decode thread
    session._thread.join(timeout=10)
    assert not session._thread.is_alive()
    assert session.counters.ended == "stopped"


@pytest.mark.parametrize("when_behind", ["block", "auto"])  # auto = block for a file read at full speed
def test_back_pressure_loses_nothing(camera_clip, when_behind):
    with StreamSession(camera_clip, recipe(queue=1, when_behind=when_behind)) as session:
        seen = []
        for window in session.windows():
            if window is not None:
                seen.append(window.index)
                time.sleep(0.1)
    assert seen == list(range(GOPS)) and session.counters.dropped == 0


def test_rerun_into_the_same_folder_continues_the_window_numbering(camera_clip, tmp_path):
    first = run_stream(camera_clip, recipe(), tmp_path, progress=False)
    second = run_stream(camera_clip, recipe(), tmp_path, progress=False)
    assert (first.windows_written, second.windows_written, second.first_window) == (GOPS, GOPS, GOPS)
    got = rows(tmp_path)
    assert [r["clip_index"] for r in got] == list(range(2 * GOPS))
    assert len({r["sample_id"] for r in got}) == 2 * GOPS
    manifest = Manifest.read(tmp_path)
    assert manifest.streams[str(camera_clip)]["windows"] == 2 * GOPS
    assert sum(s["rows"] for s in manifest.shards) == 2 * GOPS


def test_an_unreadable_file_source_fails_with_its_name(tmp_path):
    with pytest.raises(VideoNotFoundError, match="missing.mp4"):
        run_stream(tmp_path / "missing.mp4", recipe(), tmp_path / "out", progress=False)


def test_a_window_with_frames_the_decoder_concealed_is_incomplete(tmp_path):
    """A damaged file as the source: the windows holding frames the decoder filled in say so (complete False,
    counted in windows_incomplete), the others stay complete."""
    from .test_bad_input import corrupt_copy

    damaged = tmp_path / "damaged.mp4"
    corrupt_copy(SAMPLES / "sprites_mpeg4.mp4", damaged, seed=0, hits=25)
    stats = run_stream(damaged, recipe(realtime=False), tmp_path / "out", progress=False)
    records = [json.loads(line) for line in (tmp_path / "out" / "_stream_windows.jsonl").read_text().splitlines()]
    complete = {r["window"]: r["complete"] for r in records if "complete" in r}  # one entry per window (then its commit)
    assert stats.windows_written == len(complete) > 1
    assert stats.windows_incomplete == sum(not c for c in complete.values()) > 0


def test_a_file_source_without_a_decodable_frame_exits_2_naming_it(tmp_path):
    bad = tmp_path / "garbage.png"  # FFmpeg's image demuxer opens it; no packet decodes
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    result = subprocess.run([sys.executable, "-m", "codecpatch.cli", "stream", str(bad), "--output", str(tmp_path / "out"),
                             "--no-realtime", "--no-progress"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and f"{bad}: no frame could be decoded" in result.stderr, result.stderr


# -- loopback network senders --------------------------------------------------------------------------------


def test_tcp_stream_writes_rows_while_it_runs_and_every_window_once(ffmpeg, camera_clip, tmp_path):
    port = free_port()
    sender = send(ffmpeg, camera_clip, f"tcp://127.0.0.1:{port}?listen=1")
    try:
        thread, outcome = in_thread(run_stream, f"tcp://127.0.0.1:{port}", recipe(max_reconnects=2, rotate_seconds=0.5),
                                    tmp_path, progress=False)
        deadline = time.monotonic() + 20
        while not list(tmp_path.glob("shard-*.parquet")) and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.05)
        assert list(tmp_path.glob("shard-*.parquet")), f"no shard finished while streaming {outcome}"
        assert sender.poll() is None, "the first shard should appear while the sender is still sending"
        thread.join(timeout=30)
        assert not thread.is_alive() and "error" not in outcome, outcome
    finally:
        outcome["stop"].set()
        sender.kill()
        sender.wait()
    stats = outcome["value"]
    got = rows(tmp_path)
    assert len(got) == GOPS == stats.windows_written
    assert [len(r["frame_types"]) for r in got] == [GOP] * GOPS and all(r["frame_types"][0] == "I" for r in got)
    starts = [r["clip_start"] for r in got]
    np.testing.assert_allclose(np.diff(starts), 1.0, atol=1e-6)  # one window per GOP, none twice, none missing
    assert stats.windows_dropped == 0 and stats.latency(0.95) is not None
    assert json.loads((tmp_path / "_stream_stats.json").read_text())["windows_written"] == GOPS


@pytest.mark.parametrize("muxer, estimated", [("mpegts", False), ("h264", True)])
def test_tcp_windows_say_whether_times_are_estimated_and_map_timestamps_to_wall_clock(ffmpeg, camera_clip, tmp_path, muxer, estimated):
    """MPEG-TS carries timestamps: stream times are real and windows' wall-clock spans are their stream-time
    spans (anchored at the receive time). A raw Annex-B H.264 elementary stream has none: times are frame
    indices over the rate (times_estimated) and wall-clock times are receive times."""
    port = free_port()
    before = time.time()
    sender = subprocess.Popen([ffmpeg, "-loglevel", "error", "-re", "-i", str(camera_clip), "-c", "copy", "-f", muxer,
                               f"tcp://127.0.0.1:{port}?listen=1"], stdin=subprocess.DEVNULL)
    try:
        stats = run_stream(f"tcp://127.0.0.1:{port}", recipe(max_reconnects=3), tmp_path, progress=False, max_windows=4)
    finally:
        sender.kill()
        sender.wait()
    after = time.time()
    columns = ["clip_start", "clip_end", "fps", "times_estimated", "wallclock_start", "wallclock_end", "wallclock_source"]
    got = [row for shard in sorted(tmp_path.glob("shard-*.parquet")) for row in pq.read_table(shard, columns=columns).to_pylist()]
    assert stats.windows_written == len(got) == 4
    assert [r["times_estimated"] for r in got] == [estimated] * 4
    assert all(r["fps"] is None or np.isfinite(r["fps"]) for r in got)  # null, never NaN, when unknown
    assert {r["wallclock_source"] for r in got} == {"receive" if estimated else "receive_pts"}
    starts = []
    for row in got:
        start, end = row["wallclock_start"].timestamp(), row["wallclock_end"].timestamp()
        assert before <= start <= end <= after
        if not estimated:  # no decode jitter: the span is the stream-time span
            assert end - start == pytest.approx(row["clip_end"] - row["clip_start"], abs=2e-3)
        starts.append(start)
    assert starts == sorted(starts)


@pytest.mark.parametrize("protocol", ["http", "rtmp"])
def test_http_and_rtmp_feeds_deliver_every_window(ffmpeg, camera_clip, tmp_path, protocol):
    port = free_port()
    served = {"http": (["-f", "mpegts", "-listen", "1"], f"http://127.0.0.1:{port}/live.ts"),
              "rtmp": (["-f", "flv", "-listen", "1"], f"rtmp://127.0.0.1:{port}/live/cam")}
    options, url = served[protocol]
    sender = subprocess.Popen([ffmpeg, "-loglevel", "error", "-i", str(camera_clip), "-c", "copy", *options, url],
                              stdin=subprocess.DEVNULL)  # FFmpeg serves one client, as fast as it reads
    try:
        stats = run_stream(url, recipe(max_reconnects=2), tmp_path, progress=False)
    finally:
        sender.kill()
        sender.wait()
    got = rows(tmp_path)
    assert stats.sessions == 1 and len(got) == stats.windows_written == GOPS
    np.testing.assert_allclose(np.diff([r["clip_start"] for r in got]), 1.0, atol=1e-6)


def test_udp_stream_ends_on_the_read_timeout_with_every_window(ffmpeg, camera_clip, tmp_path):
    port = free_port()
    thread, outcome = in_thread(run_stream, f"udp://127.0.0.1:{port}?fifo_size=1000000&overrun_nonfatal=1",
                                recipe(max_reconnects=0, read_timeout=1.5), tmp_path, progress=False)
    deadline = time.monotonic() + 20  # the receiver binds first: UDP is not buffered for a late listener
    while not udp_port_bound(port) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert udp_port_bound(port)
    sender = send(ffmpeg, camera_clip, f"udp://127.0.0.1:{port}?pkt_size=1316")
    try:
        thread.join(timeout=30)
        assert not thread.is_alive() and "error" not in outcome, outcome
    finally:
        outcome["stop"].set()
        sender.kill()
        sender.wait()
    stats = outcome["value"]
    assert stats.gave_up and stats.disconnects and "stalled" in stats.disconnects[0]
    got = rows(tmp_path)
    assert len(got) == GOPS
    np.testing.assert_allclose(np.diff([r["clip_start"] for r in got]), 1.0, atol=1e-6)


def test_a_killed_sender_leads_to_a_reconnect_and_more_rows(ffmpeg, camera_clip, tmp_path):
    port = free_port()
    url = f"tcp://127.0.0.1:{port}?listen=1"
    first = send(ffmpeg, camera_clip, url)
    thread, outcome = in_thread(run_stream, f"tcp://127.0.0.1:{port}", recipe(max_reconnects=3, read_timeout=2.0), tmp_path,
                                progress=False)
    second = None
    try:
        time.sleep(2.6)  # two GOPs and a bit of the third
        first.kill()
        first.wait()
        second = send(ffmpeg, camera_clip, url, realtime=False)
        thread.join(timeout=40)
        assert not thread.is_alive() and "error" not in outcome, outcome
    finally:
        outcome["stop"].set()
        for sender in (first, second):
            if sender is not None:
                sender.kill()
                sender.wait()
    stats = outcome["value"]
    assert stats.sessions == 2
    got = rows(tmp_path)
    assert len(got) == stats.windows_written >= 2 + GOPS
    assert [r["clip_index"] for r in got] == list(range(len(got)))  # numbering goes on across the reconnect
    # the second sender's stream starts over: its GOPs arrive complete, once each
    restarted = [i for i in range(1, len(got)) if got[i]["clip_start"] < got[i - 1]["clip_start"]]
    assert len(restarted) == 1
    assert len(got) - restarted[0] == GOPS


@pytest.mark.slow
def test_sigterm_finishes_the_window_and_leaves_a_complete_readable_shard(camera_clip, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "codecpatch.cli", "stream", str(camera_clip), "--realtime", "--output", str(out),
               "--rotate-seconds", "1", "--encoder-dim", "32", "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not list(out.glob("shard-*.parquet")) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert list(out.glob("shard-*.parquet")) and process.poll() is None
        time.sleep(0.6)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "SIGTERM" in stderr and "windows" in stdout
    assert not list(out.glob("*.tmp"))
    manifest = Manifest.read(out)
    got = rows(out)
    assert sum(s["rows"] for s in manifest.shards) == len(got) >= 2
    assert [r["clip_index"] for r in got] == list(range(len(got)))
    assert len(got) < GOPS  # it stopped early, and said why
    stats = json.loads((out / "_stream_stats.json").read_text())
    assert stats["ended"] == "stopped" and stats["windows_written"] == len(got)
    # the window being decoded at the signal was finished (shorter) and written, not lost
    assert stats["windows_incomplete"] == 1
    log = [json.loads(line) for line in (out / "_stream_windows.jsonl").read_text().splitlines()]
    handled = [entry for entry in log if entry["status"] == "pending"]
    assert [entry["window"] for entry in handled] == list(range(len(got)))
    assert handled[-1]["complete"] is False and all(e["complete"] for e in handled[:-1])
    assert sorted(e["window"] for e in log if e["status"] == "written") == list(range(len(got)))  # all durable at the end


def test_cli_names_a_bad_source_and_exits_2(tmp_path):
    from click.testing import CliRunner

    from codecpatch.cli import main

    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    result = CliRunner().invoke(main, ["stream", str(text), "--output", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 2
    assert "notes.mp4" in result.output and "not a recognised video" in result.output


def test_the_recipes_frame_size_limit_refuses_a_stream_source(ffmpeg, camera_clip, tmp_path):
    """[limits] max_pixels guards streams too (a file at once; a live feed at once, not by reconnecting forever);
    the limits a live feed would reach by running (max_seconds, max_frames) do not apply to streams."""
    from click.testing import CliRunner

    from codecpatch.cli import main
    from codecpatch.errors import LimitExceededError

    toml = tmp_path / "small.toml"
    toml.write_text("[limits]\nmax_pixels = 1000\nmax_frames = 10\nmax_seconds = 0.5\n")
    result = CliRunner().invoke(main, ["stream", str(camera_clip), "--recipe", str(toml), "--output", str(tmp_path / "out"),
                                       "--no-progress"])
    assert result.exit_code == 2 and "max_pixels" in result.output, result.output
    assert not list((tmp_path / "out").glob("shard-*.parquet"))

    port = free_port()
    sender = send(ffmpeg, camera_clip, f"tcp://127.0.0.1:{port}?listen=1")
    started = time.monotonic()
    try:
        with pytest.raises(LimitExceededError, match="max_pixels"):
            run_stream(f"tcp://127.0.0.1:{port}", recipe().model_copy(update={"limits": load_recipe(toml).limits}), tmp_path / "live",
                       progress=False)
    finally:
        sender.kill()
        sender.wait()
    assert time.monotonic() - started < 15

    running_limits_only = load_recipe(toml).limits.model_copy(update={"max_pixels": 0})
    # A live feed that grows past the limit mid-way ends at once too, instead of reconnecting forever.
    small, large = tmp_path / "small.ts", tmp_path / "large.ts"
    for path, size, offset in ((small, "320x240", "0"), (large, "640x480", "2")):
        subprocess.run([ffmpeg, "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc=size={size}:rate=25:duration=2",
                        "-c:v", "libx264", "-g", "25", "-bf", "0", "-preset", "ultrafast", "-output_ts_offset", offset,
                        "-f", "mpegts", str(path)], check=True, timeout=60)
    growing = tmp_path / "growing.ts"
    growing.write_bytes(small.read_bytes() + large.read_bytes())
    port = free_port()
    sender = send(ffmpeg, growing, f"tcp://127.0.0.1:{port}?listen=1", realtime=False)
    started = time.monotonic()
    limits = load_recipe(None).limits.model_copy(update={"max_pixels": 320 * 240})
    try:
        with pytest.raises(LimitExceededError, match="decoded frame size 640x480"):
            run_stream(f"tcp://127.0.0.1:{port}", recipe().model_copy(update={"limits": limits}), tmp_path / "grows",
                       progress=False)
    finally:
        sender.kill()
        sender.wait()
    assert time.monotonic() - started < 15

    allowed = recipe().model_copy(update={"limits": running_limits_only})
    stats = run_stream(camera_clip, allowed, tmp_path / "long", progress=False)
    assert stats.windows_written == GOPS and sum(len(r["frame_types"]) for r in rows(tmp_path / "long")) > 10


def test_stream_rows_say_when_their_times_are_estimated_as_batch_rows_do(ffmpeg, camera_clip, tmp_path):
    """A raw H.264 stream has no timestamps: its windows' times are counted from frame indices, and the rows
    say so (times_estimated), as the batch pipeline's rows of the same file do; a timed source's do not."""
    raw = tmp_path / "camera.264"
    subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(camera_clip), "-c", "copy", "-bsf:v", "h264_mp4toannexb",
                    str(raw)], check=True, timeout=60)
    run_stream(raw, recipe(), tmp_path / "raw", progress=False)
    run_stream(camera_clip, recipe(), tmp_path / "timed", progress=False)
    raw_rows, timed_rows = rows(tmp_path / "raw"), rows(tmp_path / "timed")
    assert len(raw_rows) == len(timed_rows) == GOPS
    assert [r["times_estimated"] for r in raw_rows] == [True] * GOPS
    assert [r["times_estimated"] for r in timed_rows] == [False] * GOPS
    assert [r["clip_start"] for r in raw_rows] == pytest.approx([r["clip_start"] for r in timed_rows])


def test_a_stop_during_a_stall_ends_within_the_read_timeout(tmp_path, silent_tcp_server):
    thread, outcome = in_thread(run_stream, f"tcp://127.0.0.1:{silent_tcp_server}", recipe(read_timeout=2.0, open_timeout=2.0),
                                tmp_path, progress=False)
    time.sleep(0.5)  # connected, nothing arrives
    stopped_at = time.monotonic()
    outcome["stop"].set()
    thread.join(timeout=15)
    assert not thread.is_alive() and "error" not in outcome, outcome
    assert time.monotonic() - stopped_at < 4.0  # open/read timeout (2 s) + 1 s grace at most
    assert outcome["value"].windows_written == 0 and Manifest.read(tmp_path).shards == []


def test_size_rotation_gives_one_shard_per_window_when_they_are_small(camera_clip, tmp_path):
    stats = run_stream(camera_clip, load_recipe(None, {"encoder.dim": 32, "output.shard_mb": 0.0001}), tmp_path, progress=False)
    manifest = Manifest.read(tmp_path)
    assert stats.shards == len(manifest.shards) == GOPS and [s["rows"] for s in manifest.shards] == [1] * GOPS


def test_max_windows_stops_exactly(camera_clip, tmp_path):
    stats = run_stream(camera_clip, recipe(), tmp_path, progress=False, max_windows=2)
    assert stats.windows_written == 2 and len(rows(tmp_path)) == 2
    assert Manifest.read(tmp_path).streams[str(camera_clip)]["windows"] == 2


def test_failed_windows_are_recorded_and_a_restart_does_not_reuse_their_numbers(camera_clip, tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                           image_size=32, patch_size=8)
    transformers.CLIPVisionModel(config).save_pretrained(tmp_path / "tower")
    # an 8-px tower fed 16-px patches: every window fails in the encoder, the stream goes on
    broken = load_recipe(None, {"encoder.name": "vit", "encoder.path": str(tmp_path / "tower")})
    out = tmp_path / "out"
    first = run_stream(camera_clip, broken, out, progress=False, max_windows=3)
    second = run_stream(camera_clip, broken, out, progress=False, max_windows=2)
    assert (first.windows_failed, second.windows_failed, second.first_window) == (3, 2, 3)
    errors = pq.read_table(out / "_errors.parquet").to_pylist()
    assert [e["input"] for e in errors] == [f"{camera_clip}#{i}" for i in range(5)]
    assert all(e["stage"] == "encode+compress" for e in errors)
    assert Manifest.read(out).streams[str(camera_clip)]["windows"] == 5


def test_credentials_in_a_url_never_reach_the_rows(tmp_path, caplog, monkeypatch):
    """A stream from a URL with a user, a password and a token: no row, error record, window log, stats
    file or log line holds the password or the token, a failing window's message included."""
    import functools
    import http.server
    import logging
    import shutil

    from codecpatch.pipeline import ClipPipeline
    from codecpatch.stream import default_stream_id, redact

    url = "rtsp://admin:hunter2@cam.local:554/live?channel=1&token=abc123"
    assert redact(url) == "rtsp://***@cam.local:554/live?channel=1&token=***"
    assert default_stream_id(url) == "rtsp://***@cam.local:554/live"
    assert redact("/dev/video0") == "/dev/video0"

    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(SAMPLES / "sprites_h264_p.mp4", served / "cam.mp4")  # index first: FFmpeg reads it over plain HTTP

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    password, token = "pa55wordXYZ", "t0kenSECRET42"
    source = f"http://admin:{password}@127.0.0.1:{server.server_address[1]}/cam.mp4?token={token}"
    process = ClipPipeline.process

    def fails_on_window_1(self, samples, **kwargs):  # an error whose message repeats the full source
        if samples.info.clip_index == 1:
            raise RuntimeError(f"could not encode {source}")
        return process(self, samples, **kwargs)

    monkeypatch.setattr(ClipPipeline, "process", fails_on_window_1)
    out = tmp_path / "out"
    try:
        with caplog.at_level(logging.DEBUG):
            stats = run_stream(source, recipe(when_behind="block", max_reconnects=0, window="seconds", window_seconds=0.5),
                               out, progress=False, max_windows=3)
    finally:
        server.shutdown()
        server.server_close()
    assert (stats.windows_written, stats.windows_failed) == (2, 1)
    table = pq.read_table([out / s["file"] for s in Manifest.read(out).shards]).to_pylist()
    errors = pq.read_table(out / "_errors.parquet").to_pylist()
    assert len(table) == 2 and len(errors) == 1 and "could not encode http://***@" in errors[0]["message"]
    assert all(row["source"].startswith("http://***@") and "token=***" in row["source"] for row in table)
    texts = [str(table), str(errors), caplog.text] + [path.read_bytes().decode("latin-1") for path in out.rglob("*") if path.is_file()]
    assert "could not encode" in caplog.text  # the failure was logged, redacted
    for text in texts:
        assert password not in text and token not in text


def test_a_typo_in_the_protocol_fails_at_once_instead_of_retrying_forever(tmp_path):
    from codecpatch.errors import VideoOpenError

    started = time.monotonic()
    with pytest.raises(VideoOpenError, match="rtps://"):
        run_stream("rtps://127.0.0.1/cam", recipe(), tmp_path, progress=False)
    assert time.monotonic() - started < 10


def window_log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "_stream_windows.jsonl").read_text().splitlines()]


def test_a_window_is_written_only_once_its_shard_is_finished(camera_clip, tmp_path):
    run_stream(camera_clip, load_recipe(None, {"encoder.dim": 32, "output.shard_mb": 0.0001}), tmp_path, progress=False, max_windows=3)
    log = window_log(tmp_path)
    assert [(e["window"], e["status"]) for e in log] == [(0, "pending"), (0, "written"), (1, "pending"), (1, "written"),
                                                         (2, "pending"), (2, "written")]
    for entry in (e for e in log if e["status"] == "written"):  # the shard it names holds it
        assert pq.read_table(tmp_path / entry["shard"]).column("clip_index").to_pylist() == [entry["window"]]


@pytest.mark.slow
def test_sigkill_loses_only_pending_windows_and_the_restart_names_them(camera_clip, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "codecpatch.cli", "stream", str(camera_clip), "--realtime", "--output", str(out),
               "--rotate-seconds", "2", "--encoder-dim", "32", "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            log = window_log(out) if (out / "_stream_windows.jsonl").exists() else []
            written = [e["window"] for e in log if e["status"] == "written"]
            if written and any(e["status"] == "pending" and e["window"] > max(written) for e in log):
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=20)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL, "the stream ended before it could be killed"
    log = window_log(out)
    written = {e["window"] for e in log if e["status"] == "written"}
    lost = sorted({e["window"] for e in log if e["status"] == "pending"} - written)
    assert written and lost
    assert {r["clip_index"] for r in rows(out)} == written  # what the log calls written is exactly what is in shards
    restarted = run_stream(camera_clip, recipe(), out, progress=False, max_windows=1)
    assert restarted.windows_lost_before == lost and restarted.first_window == max(lost) + 1
    log = window_log(out)
    assert sorted(e["window"] for e in log if e["status"] == "lost") == lost
    assert sorted(r["clip_index"] for r in rows(out)) == sorted(written | {max(lost) + 1})
    again = run_stream(camera_clip, recipe(), out, progress=False, max_windows=1)
    assert again.windows_lost_before == []  # reported once


def test_log_lines_are_printed_above_the_progress_bar_not_through_it(camera_clip, tmp_path, capsys):
    import logging

    handler = logging.StreamHandler(sys.stderr)  # as the CLI sets up logging
    handler.setFormatter(logging.Formatter("LOG %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        run_stream(camera_clip, recipe(), tmp_path, progress=True, max_windows=2)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "LOG " in err and "win" in err
    for position in [i for i in range(len(err)) if err.startswith("LOG ", i)]:
        assert position == 0 or err[position - 1] in "\r\n", repr(err[max(0, position - 40):position + 20])
