"""The codecpatch command line, run as a user would (a subprocess of the installed console script's module)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from .conftest import SAMPLES


def codecpatch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "codecpatch.cli", *args], capture_output=True, text=True, timeout=120)


def test_inspect_prints_a_summary():
    result = codecpatch("inspect", str(SAMPLES / "sprites_h264_b.mp4"))
    assert result.returncode == 0, result.stderr
    for expected in ("h264", "320x240", "50 decoded", "GOPs", "motion source codec=50", "complete      yes"):
        assert expected in result.stdout


def test_inspect_json_has_one_record_per_frame(manifest):
    result = codecpatch("inspect", str(SAMPLES / "sprites_h264_p.mp4"), "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    frames, summary = document["frames"], document["summary"]
    assert len(frames) == summary["frames"] == 50
    assert {"index", "time", "type", "n_mvs", "motion_energy", "residual_energy", "motion_source"} <= frames[0].keys()
    assert [f["type"] for f in frames if f["type"] == "I"] == ["I", "I"]
    assert frames[0]["residual_energy"] is None and frames[1]["residual_energy"] is not None
    assert summary["gop_lengths"] == [25, 25] and summary["type_counts"] == {"I": 2, "P": 48}
    assert summary["fps"] == 25.0 and summary["duration_s"] == 2.0
    # sprites of 48x48 px moving 3, 2 and ~2.2 px/frame over a static background
    assert 0.1 < summary["mean_motion_energy"] < 1.0


def test_inspect_hevc_reports_flow():
    result = codecpatch("inspect", str(SAMPLES / "sprites_hevc.mp4"), "--json")
    summary = json.loads(result.stdout)["summary"]
    assert summary["motion_sources"] == {"none": 1, "flow": 49}


def test_inspect_bad_file_exits_2_naming_it(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_text("nope")
    result = codecpatch("inspect", str(bad))
    assert result.returncode == 2
    assert str(bad) in result.stderr and "not a recognised video" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_output_that_cannot_be_written_exits_2_naming_it(tmp_path):
    """A file where the output folder (batch) or the output's folder (transcode, viz) should be: one line naming
    the output, no traceback, nothing written; viz refuses to draw over its own video."""
    blocker = tmp_path / "a_file"
    blocker.write_bytes(b"x")
    for args in (("batch", "--input", str(SAMPLES / "pan_h264_p.mp4"), "--output", str(blocker / "out"), "--workers", "0"),
                 ("transcode", str(SAMPLES / "pan_h264_p.mp4"), str(blocker / "out.mp4")),
                 ("viz", str(SAMPLES / "pan_h264_p.mp4"), "--out", str(blocker / "out.png")),
                 ("viz", str(SAMPLES / "pan_h264_p.mp4"), "--out", str(blocker / "out.mp4"))):
        result = codecpatch(*args)
        assert result.returncode == 2 and str(blocker / "out") in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert os.listdir(tmp_path) == ["a_file"]
    video = tmp_path / "video.mp4"
    video.write_bytes((SAMPLES / "pan_h264_p.mp4").read_bytes())
    result = codecpatch("viz", str(video), "--out", str(video))
    assert result.returncode == 2 and "is VIDEO itself" in result.stderr
    assert video.read_bytes() == (SAMPLES / "pan_h264_p.mp4").read_bytes()


def test_inspect_of_a_file_without_a_decodable_frame_prints_its_summary_and_exits_2(tmp_path):
    bad = tmp_path / "garbage.png"  # FFmpeg's image demuxer opens it; no packet decodes
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    result = codecpatch("inspect", str(bad))
    assert result.returncode == 2 and "frames        0 decoded" in result.stdout, (result.stdout, result.stderr)
    assert f"{bad}: no frame could be decoded" in result.stderr and "Traceback" not in result.stderr


def test_transcode_command(tmp_path):
    out = tmp_path / "p_only.mp4"
    result = codecpatch("transcode", str(SAMPLES / "sprites_h264_b.mp4"), str(out), "--gop", "10")
    assert result.returncode == 0, result.stderr
    summary = json.loads(codecpatch("inspect", str(out), "--json").stdout)["summary"]
    assert summary["gop_lengths"] == [10] * 5 and set(summary["type_counts"]) == {"I", "P"}


def test_patchify_json_has_the_keys_scripts_rely_on():
    result = codecpatch("patchify", str(SAMPLES / "sprites_h264_b.mp4"), "--mode", "codec", "--budget", "0.125",
                        "--frames", "32", "--size", "224", "--patch", "16", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert isinstance(record, dict)
    for key in ("n_dense", "n_kept", "grid", "frame_indices", "positions", "kept_per_frame", "psnr"):
        assert key in record
    assert record["grid"] == [32, 14, 14] and record["n_dense"] == 32 * 196
    assert record["n_kept"] == len(record["positions"]) == sum(record["kept_per_frame"]) <= round(0.125 * 32 * 196)
    assert set(record["psnr"]) == {"codec", "uniform", "random"}
    assert record["psnr"]["codec"] > record["psnr"]["uniform"]
    assert len(record["frame_indices"]) == 32 and record["frame_indices"][0] == 0 and record["frame_indices"][-1] == 49


def test_patchify_prints_an_array_for_several_clips_and_fails_cleanly(tmp_path):
    result = codecpatch("patchify", str(SAMPLES / "sprites_h264_p.mp4"), "--clip-frames", "25", "--frames", "8",
                        "--no-fidelity", "--json")
    records = json.loads(result.stdout)
    assert [r["frame_start"] for r in records] == [0, 25] and all("psnr" not in r for r in records)
    text = codecpatch("patchify", str(SAMPLES / "sprites_h264_p.mp4"), "--mode", "chunk", "--frames", "4")
    assert text.returncode == 0 and "whole frames" in text.stdout
    bad = tmp_path / "x.mp4"
    bad.write_bytes(b"")
    failed = codecpatch("patchify", str(bad))
    assert failed.returncode == 2 and "empty" in failed.stderr


def test_viz_writes_a_png_and_an_mp4(tmp_path):
    """The PNG shows each sampled frame with kept patches at their own brightness and dropped ones dimmed,
    at the positions the same selection through the Python API keeps."""
    import cv2
    import numpy as np

    from codecpatch.pipeline import ClipPipeline, load_recipe
    from codecpatch.viz import _DIM

    video = SAMPLES / "sprites_h264_b.mp4"
    png = tmp_path / "sel.png"
    result = codecpatch("viz", str(video), "--out", str(png), "--frames", "8", "--budget", "0.25", "--columns", "4")
    assert result.returncode == 0, result.stderr
    sheet = cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB)

    pipeline = ClipPipeline(load_recipe(None, {"patchify.frames": 8, "patchify.budget": "0.25", "clips.seconds": 0}))
    samples = next(iter(pipeline.clips(video)))
    patches = pipeline.patchify(samples)
    frames = samples.canvas_frames()  # (8, 224, 224, 3): 8 tiles, 4 per row, under the title bar
    size, patch = frames.shape[1], samples.geometry.patch
    bar = sheet.shape[0] - 2 * (size + 4)
    matched = {True: [0, 0], False: [0, 0]}  # kept / dropped -> [as drawn, patches looked at]
    for t in range(1, 8):
        top, left = bar + (t // 4) * (size + 4), (t % 4) * (size + 4)
        tile = sheet[top:top + size, left:left + size].astype(int)
        for r in range(2, 12):  # away from the labels at the top and bottom
            for c in range(14):
                inner = (slice(r * patch + 1, (r + 1) * patch - 1), slice(c * patch + 1, (c + 1) * patch - 1))  # inside the outline
                truth = frames[t][inner]
                kept = bool(patches.kept[t, r, c])
                expected = truth.astype(int) if kept else (truth * _DIM).astype(np.uint8).astype(int)
                # most pixels exactly as expected: a thin motion arrow may cross a few of them
                matched[kept][0] += int(np.median(np.abs(tile[inner] - expected).max(axis=-1)) <= 1)
                matched[kept][1] += 1
    assert matched[True][1] > 0 and matched[False][1] > 0
    assert matched[True] == [matched[True][1]] * 2  # kept: their own pixels
    assert matched[False] == [matched[False][1]] * 2  # dropped: dimmed to _DIM of their brightness

    mp4 = tmp_path / "sel.mp4"
    assert codecpatch("viz", str(video), "--out", str(mp4), "--frames", "12").returncode == 0
    summary = json.loads(codecpatch("inspect", str(mp4), "--json").stdout)["summary"]
    assert summary["frames"] == 12
    assert codecpatch("viz", str(video), "--out", str(tmp_path / "x.gif")).returncode != 0


def test_encode_reports_stages_tokens_and_fidelity():
    result = codecpatch("encode", str(SAMPLES / "sprites_h264_b.mp4"), "--mode", "codec", "--budget", "0.125",
                        "--frames", "16", "--encoder", "pixel:64", "--compress", "apet:0.25", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert [s["name"] for s in record["stages"]] == ["patchify", "pixel:64", "apet:0.25"]
    assert record["dim"] == 64 and record["n_tokens"] == record["stages"][-1]["n_out"] < record["n_patches"]
    assert record["fidelity"]["relative_error"] < record["fidelity"]["random"]
    bad = codecpatch("encode", str(SAMPLES / "sprites_h264_b.mp4"), "--compress", "tome:0.5")
    assert bad.returncode == 2 and "unknown compressor" in bad.stderr


def test_the_command_line_and_the_python_api_give_the_same_rows(tmp_path):
    """CLI = API: `codecpatch batch` writes exactly the rows `process_video` returns for the same settings
    given as flags and as recipe keys, and `codecpatch encode` counts the same tokens per clip."""
    import shutil

    import numpy as np
    import pyarrow.parquet as pq

    from codecpatch.pipeline import list_inputs, load_recipe, process_video
    from codecpatch.shards import Manifest

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLES / "sprites_h264_b.mp4", folder / "a.mp4")
    flags = {"--frames": "16", "--budget": "0.25", "--encoder": "pixel:64", "--compress": "apet:0.5", "--clip-frames": "25",
             "--fusion": "max", "--no-keep-first": None}
    argv = [part for flag, value in flags.items() for part in ([flag] if value is None else [flag, value])]
    out = tmp_path / "out"
    result = codecpatch("batch", "--input", str(folder), "--output", str(out), "--workers", "0", *argv)
    assert result.returncode == 0, result.stderr
    table = pq.read_table([out / s["file"] for s in Manifest.read(out).shards]).sort_by("clip_index").to_pylist()

    recipe = load_recipe(None, {"patchify.frames": 16, "patchify.budget": "0.25", "encoder.name": "pixel:64",
                                "compress": "apet:0.5", "clips.frames": 25, "patchify.fusion": "max", "patchify.keep_first": False})
    api = process_video(list_inputs(folder)[0], recipe)
    assert api.error is None and len(api.rows) == len(table) == 2
    for row, written in zip(api.rows, table):
        assert (written["clip_index"], written["n_selected"], written["encoder"], written["compressors"]) == \
            (row.clip_index, row.n_selected, "pixel:64", "apet:0.5")
        np.testing.assert_array_equal(np.asarray(written["tokens"], np.float16).reshape(row.tokens.shape), row.tokens)
        np.testing.assert_array_equal(np.asarray(written["positions"]).reshape(row.positions.shape), row.positions)

    encoded = codecpatch("encode", str(SAMPLES / "sprites_h264_b.mp4"), *argv, "--json")
    assert encoded.returncode == 0, encoded.stderr
    records = json.loads(encoded.stdout)
    assert [r["n_tokens"] for r in records] == [len(row.tokens) for row in api.rows]
    assert [r["n_patches"] for r in records] == [row.n_selected for row in api.rows]


def test_the_console_script_exits_with_mains_status_and_skips_the_shutdown_collection():
    """``console_main`` (the installed ``codecpatch`` script) is ``main`` plus a frozen collector at the end: the same
    output and exit status, and Python's shutdown no longer walks every object the imports made."""
    probe = ("import atexit, gc, sys; atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0)); "
             "from codecpatch.cli import console_main; sys.exit(console_main())")
    version = subprocess.run([sys.executable, "-c", probe, "--version"], capture_output=True, text=True, timeout=120)
    assert version.returncode == 0, version.stderr
    assert "codecpatch" in version.stdout and version.stdout.rstrip().endswith("frozen True")
    bad = subprocess.run([sys.executable, "-c", probe, "inspect", "/no/such/video.mp4"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: /no/such/video.mp4")
    assert bad.stdout.rstrip() == "frozen True"
