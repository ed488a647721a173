"""The fuzz corpus: a folder of generated bad and odd inputs through ``codecpatch batch``. The assertion that
matters: every entry the input walk can see ends as rows, an error row, or a skipped entry with a reason,
never as nothing. Plus: partial decodes are marked on their rows, limits refuse before decoding, long
videos are split by default, and no credential reaches any output file."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from codecpatch.cli import main
from codecpatch.shards import Manifest, read_errors

from .conftest import SAMPLES
from .test_bad_input import faststart_copy, write_audio_only

GOOD = SAMPLES / "sprites_h264_p.mp4"


def _static_clip(path: Path, seconds: int, fps: int = 1) -> None:
    """A still 64x64 picture for ``seconds`` at ``fps`` (long, cheap to make and decode)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "g": "30"})
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        picture = np.full((64, 64, 3), 90, np.uint8)
        for index in range(seconds * fps):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def build_corpus(root: Path) -> dict[str, str]:
    """Write the corpus into ``root``; returns {entry name: what it is}. Every entry is a direct child."""
    root.mkdir(parents=True)
    made: dict[str, str] = {}

    def add(name: str, what: str) -> Path:
        made[name] = what
        return root / name

    shutil.copy(GOOD, add("good.mp4", "good clip"))
    add("zero.mp4", "zero bytes").write_bytes(b"")
    add("text.mp4", "text renamed .mp4").write_text("this is not a video\n" * 40)
    faststart = root.parent / "faststart.mp4"
    faststart_copy(GOOD, faststart)
    data = faststart.read_bytes()
    for percent in (5, 30, 60, 90, 99):
        add(f"cut_{percent:02d}.mp4", f"faststart mp4 truncated at {percent}%").write_bytes(data[: len(data) * percent // 100])
    for seed in range(4):
        flipped = bytearray(GOOD.read_bytes())
        rng = np.random.default_rng(seed)
        for position in rng.integers(len(flipped) // 10, int(len(flipped) * 0.9), 12):
            flipped[position] ^= 0xFF
        add(f"flipped_{seed}.mp4", "bytes flipped in the coded video").write_bytes(bytes(flipped))
    plain = GOOD.read_bytes()  # PyAV writes moov last: keep it, cut the mdat before it in half
    moov = plain.rindex(b"moov") - 4
    mdat = plain.index(b"mdat") - 4
    add("moov_end_cut_mdat.mp4", "moov at the end, mdat cut").write_bytes(plain[: mdat + (moov - mdat) // 2] + plain[moov:])
    add("cut_before_moov.mp4", "moov at the end, file cut before it").write_bytes(plain[: len(plain) // 2])
    write_audio_only(add("audio_only.mp4", "audio only, .mp4 suffix"))
    write_audio_only(add("tone.m4a", "audio only, .m4a"))
    image = root.parent / "image.png"
    import cv2

    cv2.imwrite(str(image), np.full((48, 64, 3), 200, np.uint8))
    shutil.copy(image, add("image.mp4", "PNG renamed .mp4"))
    add("huge.y4m", "16000x16000 declared").write_bytes(b"YUV4MPEG2 W16000 H16000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + bytes(4096))
    _static_clip(add("static_long.mp4", "static, 10 minutes at 1 fps"), 600)
    os.symlink("loop.mp4", add("loop.mp4", "symlink loop"))
    os.symlink("gone.mp4", add("dangling.mp4", "broken symlink"))
    os.symlink("good.mp4", add("alias.mp4", "symlink to a good clip"))
    add("folder.mp4", "directory with a video suffix").mkdir()
    add("notes.txt", "text file, not a video suffix").write_text("hello\n")
    return made


def _outputs(output: Path) -> tuple[dict, dict, dict]:
    """(rows by video_id, error rows by input, skipped by path) of a finished batch folder."""
    shards = [output / shard["file"] for shard in Manifest.read(output).shards]
    rows: dict[str, list[dict]] = {}
    for shard in shards:
        for row in pq.read_table(shard, columns=["video_id", "clip_index", "clip_start", "clip_end", "frames_decoded",
                                                  "packets_skipped", "complete"]).to_pylist():
            rows.setdefault(row["video_id"], []).append(row)
    errors = {e["input"]: e for e in read_errors(output)}
    skipped = {Path(s["path"]).name: s for s in json.loads((output / "_skipped.json").read_text())["skipped"]}
    return rows, errors, skipped


@pytest.mark.slow
def test_every_corpus_entry_ends_as_rows_an_error_or_a_skip(tmp_path):
    corpus = tmp_path / "corpus"
    made = build_corpus(corpus)
    output = tmp_path / "out"
    result = CliRunner().invoke(main, ["batch", "--input", str(corpus), "--output", str(output), "--workers", "0",
                                       "--encoder-dim", "32", "--no-progress"])
    assert result.exit_code == 0, result.output
    rows, errors, skipped = _outputs(output)
    outcome = {}
    for name in made:
        where = [kind for kind, table in (("rows", rows), ("error", errors), ("skipped", skipped)) if name in table]
        outcome[name] = where
    lost = [name for name, where in outcome.items() if not where]
    twice = [name for name, where in outcome.items() if len(where) > 1]
    print(f"\nfuzz corpus: tried {len(made)}, handled {len(made) - len(lost)}, lost {len(lost)}: {lost}")
    assert not lost and not twice, (lost, twice)
    assert all(entry["reason"] for entry in skipped.values())
    # The summary line names every skip.
    assert f"{len(rows) + len(errors)} inputs, {len(skipped)} skipped:" in result.output

    # Specific outcomes that matter.
    assert set(skipped) == {"loop.mp4", "dangling.mp4", "folder.mp4", "tone.m4a", "notes.txt"}
    assert skipped["loop.mp4"]["reason"] == "symlink loop" and skipped["dangling.mp4"]["reason"] == "broken symlink"
    assert skipped["folder.mp4"]["reason"] == "directory with a video suffix"
    assert errors["huge.y4m"]["kind"] == "limit_exceeded" and "max_pixels" in errors["huge.y4m"]["message"]
    assert errors["zero.mp4"]["kind"] == "empty_file" and errors["audio_only.mp4"]["kind"] == "no_video_stream"
    assert all(row["complete"] for row in rows["good.mp4"] + rows["alias.mp4"])
    # A cut file that still decodes says how much it lost; _stats.json counts and lists it.
    cut = rows["cut_60.mp4"]
    assert not any(row["complete"] for row in cut)
    good_frames = sum(row["frames_decoded"] for row in rows["good.mp4"])
    assert 0 < sum(row["frames_decoded"] for row in cut) < good_frames
    stats = json.loads((output / "_stats.json").read_text())["totals"]
    partial_ids = {vid for vid, video_rows in rows.items() if not video_rows[0]["complete"]}
    assert "cut_60.mp4" in partial_ids and stats["partial"] >= len(partial_ids)
    assert set(stats["partial_inputs"]) >= partial_ids
    # A long video is split by the default clip length (30 s), not one 600 s row.
    static = sorted(rows["static_long.mp4"], key=lambda r: r["clip_index"])
    assert len(static) == 20 and max(r["clip_end"] - r["clip_start"] for r in static) < 31


def test_partial_policy_reject_turns_partial_decodes_into_errors(tmp_path):
    corpus = tmp_path / "in"
    corpus.mkdir()
    shutil.copy(GOOD, corpus / "good.mp4")
    faststart = tmp_path / "faststart.mp4"
    faststart_copy(GOOD, faststart)
    data = faststart.read_bytes()
    (corpus / "cut.mp4").write_bytes(data[: len(data) * 6 // 10])
    output = tmp_path / "out"
    result = CliRunner().invoke(main, ["batch", "--input", str(corpus), "--output", str(output), "--workers", "0",
                                       "--encoder-dim", "32", "--no-progress", "--partial", "reject"])
    assert result.exit_code == 0, result.output
    rows, errors, _ = _outputs(output)
    assert set(rows) == {"good.mp4"} and errors["cut.mp4"]["kind"] == "partial_decode"
    assert "expected frames decoded" in errors["cut.mp4"]["message"]


def test_extension_filter_is_settable_and_skips_are_listed(tmp_path):
    corpus = tmp_path / "in"
    corpus.mkdir()
    shutil.copy(GOOD, corpus / "a.mp4")
    shutil.copy(GOOD, corpus / "b.mov")
    output = tmp_path / "out"
    result = CliRunner().invoke(main, ["batch", "--input", str(corpus), "--output", str(output), "--workers", "0",
                                       "--encoder-dim", "32", "--no-progress", "--extensions", ".mov"])
    assert result.exit_code == 0, result.output
    rows, errors, skipped = _outputs(output)
    assert set(rows) == {"b.mov"} and not errors
    assert skipped["a.mp4"]["reason"] == "extension not selected"
    assert "1 input, 1 skipped: 1 extension not selected" in result.output


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def http_folder(tmp_path):
    """A loopback HTTP server (ignoring credentials) serving a folder with the good clip; stopped after."""
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(GOOD, served / "clip.mp4")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_no_credential_reaches_any_output_file(tmp_path, http_folder):
    password, token = "pa55wordXYZ", "t0kenSECRET42"
    listing = tmp_path / "list.txt"
    listing.write_text(f"http://admin:{password}@{http_folder}/clip.mp4?token={token}\n"
                       f"http://admin:{password}@{http_folder}/missing.mp4?token={token}\n")
    output = tmp_path / "out"
    result = CliRunner().invoke(main, ["batch", "--input", str(listing), "--output", str(output), "--workers", "0",
                                       "--encoder-dim", "32", "--no-progress"])
    assert result.exit_code == 0, result.output
    rows, errors, _ = _outputs(output)
    assert len(rows) == 1 and len(errors) == 1  # one URL decoded, one recorded as an error
    assert all("***" in video_id for video_id in list(rows) + list(errors))
    files = [path for path in output.rglob("*") if path.is_file()]
    assert {p.suffix for p in files} >= {".parquet", ".json"}
    for path in files:
        texts = [path.read_bytes().decode("latin-1")]
        if path.suffix == ".parquet":  # compressed pages could hide a string: read the values too
            texts.append(str(pq.read_table(path).to_pylist()) + str(pq.read_metadata(path).metadata))
        for text in texts:
            assert password not in text and token not in text, path
    assert password not in result.output and token not in result.output


def test_shards_written_before_the_decode_columns_still_read(tmp_path):
    """An older shard (no frames_decoded / packets_skipped / complete) beside a new one: both read, the
    missing columns as None, and batches of both collate."""
    from codecpatch.shards import DECODE_COLUMNS, TokenShardDataset, collate_tokens

    corpus = tmp_path / "in"
    corpus.mkdir()
    shutil.copy(GOOD, corpus / "a.mp4")
    output = tmp_path / "out"
    result = CliRunner().invoke(main, ["batch", "--input", str(corpus), "--output", str(output), "--workers", "0",
                                       "--encoder-dim", "32", "--no-progress"])
    assert result.exit_code == 0, result.output
    shard = output / Manifest.read(output).shards[0]["file"]
    new = pq.read_table(shard)
    assert new.column("complete").to_pylist() == [True]
    pq.write_table(new.drop_columns(list(DECODE_COLUMNS)), shard)  # as an older version wrote it
    samples = list(TokenShardDataset(output))
    assert len(samples) == 1 and all(samples[0][name] is None for name in DECODE_COLUMNS)
    assert collate_tokens(samples + [dict(samples[0], complete=True)])["complete"] == [None, True]
    chosen = list(TokenShardDataset(output, columns=["sample_id", "tokens", "complete"]))
    assert chosen[0]["complete"] is None and chosen[0]["sample_id"] == "a.mp4#0"


@pytest.mark.slow
def test_corrupt_files_give_the_same_rows_with_workers_0_and_2(tmp_path, shared_videos):
    """The issue's check end to end: in-process and two Ray workers write identical tokens for damaged files."""
    from .test_bad_input import corrupt_copy

    corpus = tmp_path / "in"
    corpus.mkdir()
    shutil.copy(GOOD, corpus / "good.mp4")
    for seed, name in enumerate(["bbb_360p_h264_ipb.264", "bear_180p_hevc.h265", "nasa_jwst_180p_h264_ipb.mp4"]):
        corrupt_copy(shared_videos / name, corpus / f"damaged_{seed}{Path(name).suffix}", seed=seed, hits=8)
    tokens = []
    for workers in ("0", "2"):
        output = tmp_path / f"out{workers}"
        result = CliRunner().invoke(main, ["batch", "--input", str(corpus), "--output", str(output), "--workers", workers,
                                           "--encoder-dim", "32", "--no-progress"])
        assert result.exit_code == 0, result.output
        table = pq.read_table([output / s["file"] for s in Manifest.read(output).shards], columns=["sample_id", "tokens", "complete"])
        tokens.append({row["sample_id"]: (row["tokens"], row["complete"]) for row in table.to_pylist()})
    assert len(tokens[0]) >= 4 and tokens[0] == tokens[1]
    assert sum(1 for _, complete in tokens[0].values() if not complete) >= 2  # the damage was real
