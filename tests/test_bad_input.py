"""Bad input: every case gives a typed error naming the file, or a clean partial result; nothing hangs or leaks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import av
import numpy as np
import pytest

from codecpatch.decode import VideoReader, read_frames
from codecpatch.errors import (
    CorruptVideoError,
    EmptyVideoError,
    InvalidVideoError,
    NoVideoStreamError,
    SourceTimeoutError,
    VideoError,
    VideoNotFoundError,
    VideoOpenError,
)

from .conftest import REPO, SAMPLES

CLIP = SAMPLES / "sprites_h264_p.mp4"


def expect_error(path, error_type, *words):
    with pytest.raises(error_type) as caught:
        list(read_frames(path))
    message = str(caught.value)
    assert str(path) in message
    for word in words:
        assert word in message
    assert isinstance(caught.value, VideoError) and caught.value.kind
    return caught.value


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    assert expect_error(path, EmptyVideoError, "empty").kind == "empty_file"


def test_missing_file_and_directory(tmp_path):
    error = expect_error(tmp_path / "missing.mp4", VideoNotFoundError, "no such file")
    assert isinstance(error, FileNotFoundError)
    expect_error(tmp_path, VideoOpenError, "directory")


def test_text_file_renamed_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 50)
    expect_error(path, InvalidVideoError, "not a recognised video")


def write_audio_only(path) -> None:
    """An AAC-only file (0.64 s of silence) at ``path`` (container from the suffix: .m4a, .mp4, ...)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def faststart_copy(source, destination) -> None:
    """``source`` remuxed with its moov index first (so a cut copy keeps its index)."""
    with av.open(str(source)) as src, av.open(str(destination), "w", options={"movflags": "faststart"}) as output:
        out_stream = output.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = out_stream
                output.mux(packet)


def test_audio_only_file(tmp_path):
    path = tmp_path / "tone.m4a"
    write_audio_only(path)
    expect_error(path, NoVideoStreamError, "no video stream", "audio")


def test_mp4_truncated_before_its_index(tmp_path):
    path = tmp_path / "cut.mp4"
    path.write_bytes(CLIP.read_bytes()[: CLIP.stat().st_size // 2])  # PyAV writes the moov index last
    expect_error(path, InvalidVideoError, "moov", "truncated")


def test_mp4_truncated_after_its_index_gives_a_partial_result(tmp_path):
    faststart = tmp_path / "faststart.mp4"
    faststart_copy(CLIP, faststart)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(faststart.read_bytes()[: int(faststart.stat().st_size * 0.6)])
    with VideoReader(cut, on_error="skip") as reader:
        frames = list(reader)
    assert 5 < len(frames) < 50
    assert reader.report.frames_decoded == len(frames)
    assert any("truncated" in warning for warning in reader.report.warnings)


def test_raw_stream_truncated_mid_frame_decodes_what_is_there(tmp_path, shared_videos):
    path = tmp_path / "cut.264"
    source = shared_videos / "bbb_360p_h264_ipb.264"
    path.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with VideoReader(path) as reader:
        frames = list(reader)
    assert 50 < len(frames) < 337 and reader.report.complete
    assert [f.index for f in frames] == list(range(len(frames)))


def corrupt_copy(source, destination, seed=0, hits=200):
    """Overwrite ``hits`` 64-byte runs of the coded video (the middle of the file: this clip's mdat; its
    moov index sits in the last 0.5% and stays intact)."""
    data = bytearray(source.read_bytes())
    rng = np.random.default_rng(seed)
    for position in rng.integers(len(data) // 10, int(len(data) * 0.9), hits):
        data[position : position + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    destination.write_bytes(bytes(data))


def test_corrupted_file_skip_policy_finishes_and_counts(tmp_path, shared_videos):
    path = tmp_path / "corrupt.mp4"
    corrupt_copy(shared_videos / "bbb_720p_h264_ip.mp4", path)
    started = time.monotonic()
    with VideoReader(path, on_error="skip", residual="none") as reader:
        frames = list(reader)
    assert time.monotonic() - started < 60
    assert len(frames) > 300 and reader.report.complete
    assert reader.report.packets_skipped > 0 and reader.report.corrupt_frames > 0
    assert len(reader.report.errors) == reader.report.packets_skipped


def test_corrupted_file_raise_policy_names_file_and_progress(tmp_path, shared_videos):
    path = tmp_path / "corrupt.mp4"
    corrupt_copy(shared_videos / "bbb_720p_h264_ip.mp4", path)
    seen = 0
    with pytest.raises(CorruptVideoError) as caught:
        for _ in read_frames(path, on_error="raise", residual="none"):
            seen += 1
    assert caught.value.frames_decoded == seen
    assert str(path) in str(caught.value) and "after" in str(caught.value)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_three_hundred_opens_leak_no_file_descriptors():
    for _ in range(5):  # warm up lazily opened library handles
        list(read_frames(CLIP, residual="none"))
    before = open_fds()
    for i in range(300):
        if i % 3 == 0:
            list(read_frames(CLIP, residual="none"))  # read to the end
        elif i % 3 == 1:
            frames = read_frames(CLIP)
            next(frames)
            frames.close()  # caller stops early
        else:
            with VideoReader(CLIP):
                pass  # opened, never iterated
    assert open_fds() <= before


def test_silent_network_source_times_out_instead_of_hanging():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    accepted = []
    thread = threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        with pytest.raises(SourceTimeoutError) as caught:
            VideoReader(f"tcp://127.0.0.1:{port}", open_timeout=1.0, read_timeout=1.0)
        assert time.monotonic() - started < 10
        assert f"127.0.0.1:{port}" in str(caught.value)
    finally:
        for connection, _ in accepted:
            connection.close()
        server.close()


def resident_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_memory_stays_flat_while_exporting_vectors(shared_videos):
    """PyAV's frame.side_data caches a container that points back at the frame; without care every 720p
    frame (~0.6 MB) stays alive until a full garbage collection."""
    readings = []
    for frame in read_frames(shared_videos / "bbb_720p_h264_ip.mp4"):
        if frame.index in (40, 330):
            readings.append(resident_mib())
    assert readings[1] - readings[0] < 40, readings


# -- decode limits ------------------------------------------------------------------------------------------


def test_limits_refuse_from_the_header_before_decoding(tmp_path):
    from codecpatch.decode import DecodeLimits
    from codecpatch.errors import LimitExceededError

    huge = tmp_path / "huge.y4m"  # a 16000x16000 header with a few bytes: nothing may be decoded
    huge.write_bytes(b"YUV4MPEG2 W16000 H16000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + bytes(4096))
    with pytest.raises(LimitExceededError) as caught:
        VideoReader(huge, limits=DecodeLimits())
    error = caught.value
    assert error.kind == "limit_exceeded" and error.limit == "max_pixels" and error.value == 16000 * 16000
    assert str(huge) in str(error) and "16000x16000" in str(error) and "33,177,600" in str(error) and "--max-pixels" in str(error)
    for limits, name in ((DecodeLimits(max_file_mb=0.01), "max_file_mb"), (DecodeLimits(max_frames=10), "max_frames"),
                         (DecodeLimits(max_seconds=0.5), "max_seconds")):
        with pytest.raises(LimitExceededError) as caught:
            VideoReader(CLIP, limits=limits)  # 42 KB, 50 frames, 2 s
        assert caught.value.limit == name


def test_limits_are_checked_again_on_decoded_frames(shared_videos):
    """The header says 640x360; the stream grows to 1280x720 later (headers lie): refused on arrival."""
    from codecpatch.decode import DecodeLimits
    from codecpatch.errors import LimitExceededError

    with VideoReader(shared_videos / "traffic_reschange_vp9.ivf", residual="none", limits=DecodeLimits(max_pixels=500_000)) as reader:
        assert (reader.info.width, reader.info.height) == (640, 360)
        with pytest.raises(LimitExceededError, match="decoded frame size 1280x720"):
            list(reader)
        assert reader.report.frames_decoded > 0


def test_partial_decode_is_reported_and_a_clean_one_is_not(tmp_path, shared_videos):
    from codecpatch.pipeline import InputVideo, load_recipe, process_video

    recipe = load_recipe(None, {"patchify.frames": 8, "encoder.dim": 16})
    good = process_video(InputVideo(str(CLIP), "good"), recipe)
    assert good.rows and not good.partial and all(r.complete and r.packets_skipped == 0 for r in good.rows)
    assert sum(r.frames_decoded for r in good.rows) == 50
    damaged = tmp_path / "damaged.mp4"
    corrupt_copy(CLIP, damaged, seed=3, hits=6)
    result = process_video(InputVideo(str(damaged), "damaged"), recipe)
    assert result.rows and result.partial and result.flagged
    assert not any(r.complete for r in result.rows)


@pytest.mark.parametrize("name", ["bbb_360p_h264_ipb.264", "bear_180p_hevc.h265"])
def test_rows_of_a_corrupt_file_do_not_depend_on_where_it_ran(tmp_path, shared_videos, name):
    """In-process (--workers 0) and in a Ray worker the decoder gets the same settings: the worker's entry
    point is called directly here (same code as on Ray), and a 2-CPU recipe decodes with 2 threads in both."""
    from codecpatch.pipeline import InputVideo, load_recipe, process_video
    from codecpatch.pipeline._runner import _process_in_worker

    damaged = tmp_path / f"damaged{os.path.splitext(name)[1]}"
    corrupt_copy(shared_videos / name, damaged, seed=0, hits=8)
    for cpus in (1, 2):
        recipe = load_recipe(None, {"patchify.frames": 8, "encoder.dim": 16, "execution.decode_cpus": cpus, "clips.seconds": 0})
        item = InputVideo(str(damaged), "damaged")
        here, there = process_video(item, recipe), _process_in_worker(item, recipe)
        assert here.error is None and here.partial
        assert len(here.rows) == len(there.rows) > 0
        for a, b in zip(here.rows, there.rows):
            assert np.array_equal(a.tokens, b.tokens) and a.frame_types == b.frame_types


_DIGEST_ON_CPUS = """
import hashlib, os, sys
os.sched_setaffinity(0, {cpus})  # before FFmpeg counts the CPUs
digest = hashlib.sha1()
{body}
print(digest.hexdigest())
"""
_SAMPLES_DIGEST = """
from codecpatch.patchify import PatchifyConfig, iter_clip_samples
for samples in iter_clip_samples(sys.argv[1], PatchifyConfig(frames=8), **{settings}):
    for array in (samples.rgb, samples.motion_instant, samples.residual_instant, samples.frame_indices):
        digest.update(array.tobytes())
"""
_TRANSCODE_DIGEST = """
from codecpatch.decode import read_frames, transcode_for_vectors
result = transcode_for_vectors(sys.argv[1], sys.argv[2])
for frame in read_frames(result.path, rgb=True, residual="none"):
    digest.update(frame.rgb.tobytes())
"""


def _digest_on_cpus(body: str, cpus: set[int], *args) -> str:
    """sha1 that ``body`` (code updating ``digest``, reading ``sys.argv``) computes in a child process that sees
    only ``cpus``."""
    done = subprocess.run([sys.executable, "-c", _DIGEST_ON_CPUS.format(cpus=cpus, body=body), *map(str, args)],
                          capture_output=True, text=True, timeout=120, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _one_and_two_cpus() -> tuple[set[int], set[int]]:
    if not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs a process that can be held to one CPU and to two (Linux, >= 2 CPUs)")
    cpus = sorted(os.sched_getaffinity(0))
    return set(cpus[:1]), set(cpus[:2])


def test_a_damaged_file_gives_the_same_samples_whatever_cpus_the_machine_has(tmp_path):
    """FFmpeg conceals a damaged frame differently with decoder threading off (1 thread) and on, and its own
    choice of thread count (0) is one per CPU: the library's default (1 thread, as `codecpatch patchify` and
    the default recipe) gives the same samples in a process that sees one CPU and in one that sees two."""
    one_cpu, two_cpus = _one_and_two_cpus()
    damaged = tmp_path / "damaged.mp4"
    corrupt_copy(SAMPLES / "sprites_h264_b.mp4", damaged, seed=0, hits=8)
    default = _SAMPLES_DIGEST.format(settings={})
    assert _digest_on_cpus(default, one_cpu, damaged) == _digest_on_cpus(default, two_cpus, damaged)
    # The damage is one the threads change: FFmpeg's choice differs between the two machines.
    ffmpegs_choice = _SAMPLES_DIGEST.format(settings={"decoder_threads": 0})
    assert _digest_on_cpus(ffmpegs_choice, one_cpu, damaged) != _digest_on_cpus(ffmpegs_choice, two_cpus, damaged)


def test_a_damaged_file_transcodes_the_same_whatever_cpus_the_machine_has(tmp_path):
    """`codecpatch transcode` decodes with one thread too (it had FFmpeg's choice): the same frames out on one CPU
    and on two."""
    one_cpu, two_cpus = _one_and_two_cpus()
    damaged = tmp_path / "damaged.mp4"
    corrupt_copy(SAMPLES / "sprites_h264_p.mp4", damaged, seed=1, hits=1)
    out = tmp_path / "out.mp4"
    assert _digest_on_cpus(_TRANSCODE_DIGEST, one_cpu, damaged, out) == _digest_on_cpus(_TRANSCODE_DIGEST, two_cpus, damaged, out)


def test_a_transcode_that_fails_names_the_file_and_leaves_the_destination_as_it_was(tmp_path):
    from codecpatch.decode import transcode_for_vectors

    damaged, out = tmp_path / "damaged.mp4", tmp_path / "out.mp4"
    corrupt_copy(SAMPLES / "sprites_hevc.mp4", damaged, seed=0, hits=8)  # an HEVC packet FFmpeg refuses part-way
    with pytest.raises(CorruptVideoError) as caught:
        transcode_for_vectors(damaged, out)
    assert str(damaged) in str(caught.value) and caught.value.frames_decoded > 0
    assert os.listdir(tmp_path) == ["damaged.mp4"]  # no output, no temporary file
    out.write_bytes(b"kept")  # an earlier output survives a failed transcode, and a source that does not open
    for source, error in ((damaged, CorruptVideoError), (tmp_path / "missing.mp4", VideoNotFoundError)):
        with pytest.raises(error):
            transcode_for_vectors(source, out)
        assert out.read_bytes() == b"kept" and sorted(os.listdir(tmp_path)) == ["damaged.mp4", "out.mp4"]


@pytest.mark.parametrize("destination, words", [
    ("a_file/out.mp4", "does not exist or is not a folder"), ("a_folder", "is a folder"),
    ("out.txt", "no container format writes '.txt' files"), ("source.mp4", "is the source itself"),
])
def test_a_transcode_refuses_a_destination_it_cannot_write_before_decoding(tmp_path, destination, words):
    from codecpatch.decode import transcode_for_vectors

    (tmp_path / "a_file").write_bytes(b"x")
    (tmp_path / "a_folder").mkdir()
    source = tmp_path / "source.mp4"
    source.write_bytes((SAMPLES / "sprites_h264_p.mp4").read_bytes())
    with pytest.raises(ValueError, match=words) as caught:
        transcode_for_vectors(source, tmp_path / destination)
    assert str(tmp_path / destination) in str(caught.value)
    assert source.read_bytes() == (SAMPLES / "sprites_h264_p.mp4").read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["a_file", "a_folder", "source.mp4"]


def test_a_damaged_file_whose_metadata_is_not_utf8_is_invalid_data(tmp_path):
    """PyAV reads container metadata as UTF-8 while opening: damaged bytes there raised UnicodeDecodeError (a
    traceback in every command, an unnamed error kind in batch runs)."""
    damaged = tmp_path / "damaged.mp4"
    corrupt_copy(SAMPLES / "sprites_hevc.mp4", damaged, seed=2, hits=200)
    expect_error(damaged, InvalidVideoError, "unreadable metadata")


def test_frames_the_decoder_concealed_are_a_warning_of_every_clip(tmp_path):
    """A damaged MPEG-4 file decodes every packet, 18 of its frames filled in by the decoder: no error, so
    without this warning `codecpatch patchify` and `encode` said nothing (batch rows say it in `complete`). Each
    clip counts its own: a clip is yielded before the decode ends."""
    from codecpatch.patchify import PatchifyConfig, iter_clip_samples

    damaged = tmp_path / "damaged.mp4"
    corrupt_copy(SAMPLES / "sprites_mpeg4.mp4", damaged, seed=0, hits=25)
    with VideoReader(damaged, on_error="skip", residual="none") as reader:
        list(reader)
    concealed = reader.report.corrupt_frames
    assert concealed > 0 and reader.report.packets_skipped == 0
    clips = list(iter_clip_samples(damaged, PatchifyConfig(frames=8, clip_frames=25)))  # each clip says its own
    counts = [int(w.split()[1]) for c in clips for w in c.warnings if "concealed by the decoder" in w]
    assert len(clips) == 2 and len(counts) == 2 and sum(counts) == concealed
    clean = list(iter_clip_samples(SAMPLES / "sprites_mpeg4.mp4", PatchifyConfig(frames=8)))
    assert not any("concealed" in w for c in clean for w in c.warnings)


def test_input_walk_lists_every_entry_it_does_not_process(tmp_path):
    from codecpatch.pipeline import scan_inputs

    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "b.MKV").write_bytes(b"x")
    (tmp_path / "c.m4a").write_bytes(b"x")
    (tmp_path / "d.mp4").mkdir()
    (tmp_path / "d.mp4" / "inner.mov").write_bytes(b"x")
    os.symlink("nowhere.mp4", tmp_path / "broken.mp4")
    os.symlink("loop.mp4", tmp_path / "loop.mp4")
    os.symlink(tmp_path / "d.mp4", tmp_path / "linked_dir")
    os.mkfifo(tmp_path / "pipe.mp4")
    scan = scan_inputs(tmp_path)
    assert [i.video_id for i in scan.inputs] == ["a.mp4", "b.MKV", "d.mp4/inner.mov"]
    reasons = {os.path.basename(s.path): s.reason for s in scan.skipped}
    assert reasons == {"c.m4a": "extension not selected", "d.mp4": "directory with a video suffix", "broken.mp4": "broken symlink",
                       "loop.mp4": "symlink loop", "linked_dir": "symlink to a folder", "pipe.mp4": "not a regular file"}
    assert scan.seen == 9 and scan.summary().startswith("3 inputs, 6 skipped: ")
    only_m4a = scan_inputs(tmp_path, frozenset({".m4a"}))
    assert [i.video_id for i in only_m4a.inputs] == ["c.m4a"] and only_m4a.seen == 8  # d.mp4 is now a plain folder


def test_one_redaction_for_every_path():
    from codecpatch.decode import redact, redact_text
    from codecpatch.stream import redact as stream_redact

    url = "http://admin:pa55word@host:8080/x.mp4?token=abc123&size=2"
    assert stream_redact is redact
    assert redact(url) == "http://***@host:8080/x.mp4?token=***&size=2"
    message = f"{url}: could not open (rtsp://u:p@cam/live refused)"
    cleaned = redact_text(message, url)
    assert "pa55word" not in cleaned and "abc123" not in cleaned and "u:p@" not in cleaned and "host:8080/x.mp4" in cleaned
    assert redact("/data/videos/a.mp4") == "/data/videos/a.mp4"
