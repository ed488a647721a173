"""Everyday use as a new user meets it (issue 13): one-line errors, the budget grammar, recipe typos, empty
inputs, --strict, --dry-run / --limit, ``show``, what ``viz`` draws, the stream's tail window, and times
that are seconds in every row."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from codecpatch.cli import main
from codecpatch.patchify import Budget, PatchifyConfig, iter_clip_samples, patchify_samples
from codecpatch.pipeline import RecipeError, load_recipe
from codecpatch.shards import Manifest, read_row, shard_paths

from .conftest import REPO, SAMPLES


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def codecpatch(*args) -> Ran:
    """The command line in this process (click's runner: exit status, stdout and stderr apart)."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout, result.stderr)


def codecpatch_process(*args) -> subprocess.CompletedProcess:
    """The command line as a user's shell runs it."""
    return subprocess.run([sys.executable, "-m", "codecpatch.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def assert_one_line_error(result, *expected: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


FAST = ("--workers", "0", "--no-progress")


# -- (a), (b): user mistakes and the budget grammar -------------------------------------------------------

def test_budget_grammar_names_every_unit_and_refuses_a_bare_integer():
    assert Budget.parse("0.125") == Budget.parse("12.5%") == Budget.parse("fraction=0.125") == Budget(0.125, "fraction")
    assert Budget.parse("2t") == Budget.parse("tokens=2") == Budget.parse("2 tokens") == Budget(2, "tokens")
    assert Budget.parse("8f") == Budget.parse("frames=8") == Budget.parse("8 frames") == Budget(8, "frames")
    assert Budget.parse(0.25) == Budget(0.25, "fraction") and Budget.parse("1.0") == Budget(1.0, "fraction")
    for ambiguous in ("2", 2, "1500", 1500, "1"):
        with pytest.raises(ValueError, match="ambiguous.*2t|ambiguous"):
            Budget.parse(ambiguous)
    with pytest.raises(ValueError, match="1500t"):
        Budget.parse("1500")
    for bad in ("150%", "1.5", "0%", "abc", "tokens=2.5", "fraction=3"):
        with pytest.raises(ValueError, match="budget"):
            Budget.parse(bad)
    for text in ("0.125", "1.0", "8f", "2t", "0.03125"):
        assert str(Budget.parse(text)) == text  # the shard's budget column parses back to the same budget


def test_user_mistakes_are_one_line_errors_with_status_2(tmp_path):
    clip = SAMPLES / "sprites_h264_p.mp4"
    line = assert_one_line_error(codecpatch_process("patchify", clip, "--budget", "abc"), "--budget", "'abc'")
    assert "Traceback" not in line
    assert_one_line_error(codecpatch("patchify", clip, "--budget", "2"), "--budget", "ambiguous", "2t")
    assert_one_line_error(codecpatch("patchify", clip, "--size", "100"), "size must be a positive multiple")
    assert_one_line_error(codecpatch("patchify", clip, "--mode", "dense"), "--mode")
    assert_one_line_error(codecpatch("batch", "--output", tmp_path / "o"), "--input")
    assert_one_line_error(codecpatch("nonsense"), "nonsense")
    # a value that came from a flag is reported under the flag, not under the recipe file
    line = assert_one_line_error(codecpatch("run", REPO / "pipelines" / "batch.toml", "--input", clip, "--output", tmp_path / "o",
                                            "--budget", "150%"), "--budget", "150%")
    assert "batch.toml" not in line
    line = assert_one_line_error(codecpatch("run", REPO / "pipelines" / "batch.toml", "--input", clip, "--output", tmp_path / "o",
                                            "--compress", "tome:0.5"), "--compress")
    assert "batch.toml" not in line
    assert not (tmp_path / "o").exists()
    assert codecpatch("--help").returncode == 0 and "--dry-run" in codecpatch("run", "--help").stdout


# -- (c): recipe keys --------------------------------------------------------------------------------------

def test_a_misspelled_recipe_key_names_the_closest_known_one(tmp_path):
    recipe = tmp_path / "typo.toml"
    recipe.write_text('[patchify]\nbudgte = "0.1"\n[execution]\nworkres = 2\n')
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe)
    message = str(caught.value)
    assert "unknown key 'budgte' (did you mean 'budget'?)" in message
    assert "unknown key 'workres' (did you mean 'workers'?)" in message
    assert "Extra inputs" not in message and str(recipe) in message
    assert_one_line_error(codecpatch("run", recipe, "--input", SAMPLES, "--output", tmp_path / "o"),
                          "patchify.budgte: unknown key 'budgte' (did you mean 'budget'?)")
    bare = tmp_path / "bare.toml"
    bare.write_text("[patchify]\nbudget = 2\n")  # a TOML integer is as ambiguous as the text
    with pytest.raises(RecipeError, match="ambiguous"):
        load_recipe(bare)


# -- (d), (e): empty inputs, --strict, --dry-run, --limit -----------------------------------------------

def test_an_empty_input_folder_is_an_error_saying_so(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(codecpatch("batch", "--input", empty, "--output", tmp_path / "o", *FAST), "no input videos", "it is empty")
    (empty / "notes.txt").write_text("not a video")
    assert_one_line_error(codecpatch("batch", "--input", empty, "--output", tmp_path / "o", *FAST),
                          "1 skipped: 1 extension not selected")
    assert not (tmp_path / "o").exists()


@pytest.fixture()
def three_inputs(tmp_path):
    """Two good clips, one file that is not a video but has a video suffix, and a note that is ignored."""
    root = tmp_path / "videos"
    root.mkdir()
    shutil.copy(SAMPLES / "sprites_h264_p.mp4", root / "a.mp4")
    shutil.copy(SAMPLES / "static_h264_p.mp4", root / "b.mp4")
    (root / "c.mp4").write_text("not a video\n")
    (root / "README.txt").write_text("where these came from\n")
    return root


def test_dry_run_and_limit_show_and_do_what_a_run_would(three_inputs, tmp_path):
    out = tmp_path / "out"
    args = ("batch", "--input", three_inputs, "--output", out, "--encoder-dim", "32", *FAST)
    dry = codecpatch(*args, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would run (3):\n  a.mp4\n  b.mp4\n  c.mp4\nalready done (0):" in dry.stdout
    assert "README.txt: extension not selected (.txt is not in the input extensions" in dry.stdout and not out.exists()

    first = codecpatch(*args, "--limit", "1")
    assert first.returncode == 0, first.stderr
    assert "1 processed" in first.stdout and "2 left by --limit" in first.stdout
    assert "\n1 input: 1 processed, 0 failed, 0 already done, 2 left by --limit;" in first.stdout  # not "1 inputs"
    assert Manifest.read(out).inputs_done == ["a.mp4"]

    dry = codecpatch(*args, "--dry-run", "--limit", "1")
    assert "would run (1):\n  b.mp4\nalready done (1):\n  a.mp4\n" in dry.stdout
    assert "c.mp4: over --limit" in dry.stdout

    rest = codecpatch(*args)  # c.mp4 fails and is recorded; without --strict that is still status 0
    assert rest.returncode == 0 and "2 processed" not in rest.stdout and "1 failed" in rest.stdout
    dry = codecpatch(*args, "--dry-run")
    assert "would run (0):" in dry.stdout and "c.mp4: failed in an earlier run (decode/" in dry.stdout

    strict = codecpatch(*args, "--strict")  # nothing left to run, but the folder holds a failure
    assert strict.returncode == 4 and "--strict: 1 input failed" in strict.stderr
    assert "0 processed, 0 failed, 2 already done, 1 failed in an earlier run;" in strict.stdout  # c.mp4 is not done


# -- (f): show a stored row -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pixel_shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("pixels") / "out"
    result = codecpatch("run", REPO / "pipelines" / "training_shards.toml", "--input", SAMPLES / "sprites_h264_p.mp4", "--output", out,
                        *FAST)
    assert result.returncode == 0, result.stderr
    return out


def test_show_draws_a_stored_rows_kept_patches_where_they_were(pixel_shards, tmp_path):
    row = read_row(pixel_shards, sample_id="sprites_h264_p.mp4#0")
    assert row.grid == (16, 16) and len(row.pixels) == len(row.positions) > 0  # 224 / 14
    from codecpatch.viz import draw_stored_row

    tiles = draw_stored_row(row.pixels, row.positions, row.frame_types, row.grid, row.slots)
    assert tiles.shape == (len(row.frame_types), 224, 224, 3)
    slot_to_tile = {int(s): t for t, s in enumerate(row.slots)}
    kept = np.zeros((len(row.slots), 16, 16), bool)
    for (slot, r, c), pixels in zip(row.positions.tolist(), row.pixels):
        kept[slot_to_tile[slot], r, c] = True
        inner = tiles[slot_to_tile[slot], r * 14 + 1 : r * 14 + 13, c * 14 + 1 : c * 14 + 13]  # inside the outline
        expected = pixels.reshape(3, 14, 14).transpose(1, 2, 0)[1:13, 1:13]
        if slot_to_tile[slot] != 0 or r < 14:  # the label covers the bottom rows
            assert np.array_equal(inner, expected)
    t, r, c = np.argwhere(~kept[1:, :12])[0]  # a dropped patch (not stored): dark
    assert (tiles[t + 1, r * 14 + 1 : r * 14 + 13, c * 14 + 1 : c * 14 + 13] == 16).all()

    png = tmp_path / "row.png"
    shown = codecpatch("show", pixel_shards, "--sample", "sprites_h264_p.mp4#0", "--out", png)
    assert shown.returncode == 0, shown.stderr and png.exists()
    by_index = codecpatch("show", pixel_shards, "--index", "0", "--out", tmp_path / "same.png")
    assert by_index.returncode == 0 and np.array_equal(cv2.imread(str(png)), cv2.imread(str(tmp_path / "same.png")))
    assert_one_line_error(codecpatch("show", pixel_shards, "--index", "7", "--out", png), "row 7", "hold 1 row (0-0)")
    assert_one_line_error(codecpatch("show", pixel_shards, "--sample", "nope#3", "--out", png), "no row", "'nope#3'")


def test_show_says_when_no_pixels_were_stored(tmp_path):
    out = tmp_path / "out"
    assert codecpatch("batch", "--input", SAMPLES / "sprites_h264_p.mp4", "--output", out, "--encoder-dim", "32", *FAST).returncode == 0
    assert_one_line_error(codecpatch("show", out, "--index", "0", "--out", tmp_path / "x.png"), "without their pixels", "--store-pixels")


# -- (h): what viz draws -----------------------------------------------------------------------------------

def test_viz_draws_kept_patches_as_they_are_and_dims_dropped_ones():
    from codecpatch.viz import _ARROW_COLOUR, _DIM, draw_selection, moving_patches

    config = PatchifyConfig(frames=8, budget=Budget(0.25))
    samples = next(iter_clip_samples(SAMPLES / "sprites_h264_p.mp4", config))
    patches = patchify_samples(samples, config)
    frames = samples.canvas_frames()
    assert (draw_selection(samples, patches) == np.array(_ARROW_COLOUR, np.uint8)).all(axis=-1).any()  # the sprites move
    drawn = draw_selection(samples, patches, arrow_gain=0.0)  # brightness only: no arrow crosses a patch
    motion = np.full((samples.n_samples, 2, 14, 14), 0.2, np.float32)  # jitter everywhere ...
    motion[:, 0, 3:5, 6:9] = 3.0  # ... and a 3 px move on six patches
    moving = moving_patches(motion, static_clip=False)
    assert moving.sum() == 6 * samples.n_samples and moving[:, 3:5, 6:9].all()
    assert not moving_patches(motion, static_clip=True).any()
    assert not moving_patches(motion, False, kept=np.zeros_like(moving)).any()
    checked = {True: 0, False: 0}
    for t in range(1, samples.n_samples):
        for r in range(2, 11):  # away from the labels at the top and bottom
            for c in range(14):
                inner = (t, slice(r * 16 + 2, r * 16 + 5), slice(c * 16 + 2, c * 16 + 5))  # top-left corner, away from arrows
                got, truth = drawn[inner].astype(int), frames[inner].astype(int)
                if patches.kept[t, r, c] and np.array_equal(got, truth):
                    checked[True] += 1
                elif not patches.kept[t, r, c] and np.abs(got - (truth * _DIM).astype(np.uint8)).max() <= 1:
                    checked[False] += 1
    kept_count = int(patches.kept[1:, 2:11].sum())
    assert checked[True] == kept_count > 0  # kept: their own pixels
    assert checked[False] == 7 * 9 * 14 - kept_count  # dropped: dimmed


def test_viz_on_a_static_clip_says_why_frames_are_whole_and_draws_no_arrows(tmp_path):
    from codecpatch.viz import _ARROW_COLOUR, caption, draw_selection

    config = PatchifyConfig(frames=8)
    samples = next(iter_clip_samples(SAMPLES / "static_h264_p.mp4", config))
    patches = patchify_samples(samples, config)
    assert patches.static_fallback
    assert "static clip (motion and residual below noise): budget spent on" in caption(patches, None)
    drawn = draw_selection(samples, patches)
    assert not (drawn == np.array(_ARROW_COLOUR, np.uint8)).all(axis=-1).any()  # no arrow pixel anywhere
    out = tmp_path / "static.png"
    result = codecpatch("viz", SAMPLES / "static_h264_p.mp4", "--out", out, "--frames", "8")
    assert result.returncode == 0, result.stderr
    sheet = cv2.imread(str(out))
    title_bar = sheet[:30]
    assert title_bar.shape[1] == sheet.shape[1] and (title_bar > 200).any()  # the caption is drawn


def test_viz_caption_is_never_clipped_or_overdrawn():
    from codecpatch.viz import contact_sheet, title_lines

    tiles = np.zeros((2, 64, 64, 3), np.uint8)
    title = "clip.mp4  clip 0  codec  budget 0.125: 1225/9800 tokens (12.5%)  PSNR codec 45.5 dB  uniform 33.6 dB  random 39.2 dB"
    lines = title_lines(title, width=2 * 68)
    assert " ".join(" ".join(lines).split()) == " ".join(title.split())  # every word once, in order
    sheet = contact_sheet(tiles, title, columns=2)
    assert sheet.shape[0] == 64 + 4 + 8 + 22 * len(lines)


# -- (i): the stream's tail window ------------------------------------------------------------------------

def test_a_stopped_streams_tail_window_joins_the_last_shard(tmp_path):
    from codecpatch.stream import run_stream

    recipe = load_recipe(None, {"encoder.dim": 32, "stream.realtime": True, "patchify.frames": 8})
    stop = threading.Event()
    timer = threading.Timer(1.3, stop.set)  # mid-way through the second GOP of a 2-s clip
    timer.start()
    try:
        stats = run_stream(SAMPLES / "sprites_h264_p.mp4", recipe, tmp_path, stop=stop, progress=False)
    finally:
        timer.cancel()
    manifest = Manifest.read(tmp_path)
    assert stats.windows_written == 2 and stats.windows_incomplete == 1
    assert [s["rows"] for s in manifest.shards] == [2]  # not [1, 1]: the tail has no shard of its own


# -- (j): times in seconds in every row -------------------------------------------------------------------

def test_a_stream_without_timestamps_gets_estimated_seconds_null_fps_and_its_sizes(shared_videos, tmp_path):
    out = tmp_path / "out"
    result = codecpatch("batch", "--input", shared_videos / "traffic_reschange_vp9.ivf", "--output", out, "--encoder-dim", "32",
                        *FAST)
    assert result.returncode == 0, result.stderr
    [row] = pq.read_table(shard_paths(out)).to_pylist()
    assert row["times_estimated"] is True and row["fps"] is None  # null in Parquet, not NaN
    assert row["clip_start"] == 0.0 and row["clip_end"] == pytest.approx(499 / 25)  # 500 frames at the assumed 25 fps
    assert len(row["sizes"]) == 5 and row["sizes"][0] == f"{row['width']}x{row['height']}"
    timed = codecpatch("batch", "--input", SAMPLES / "sprites_h264_p.mp4", "--output", tmp_path / "timed", "--encoder-dim", "32", *FAST)
    assert timed.returncode == 0
    [row] = pq.read_table(shard_paths(tmp_path / "timed")).to_pylist()
    assert row["times_estimated"] is False and row["fps"] == 25.0 and row["sizes"] == ["320x240"]


# -- (k): every column described ---------------------------------------------------------------------------

def test_the_manifest_and_readme_describe_every_column(tmp_path):
    from codecpatch.shards import COLUMNS, ShardWriter, token_schema

    names = token_schema(8, 3 * 4 * 4, with_text=True).names
    assert set(names) == set(COLUMNS)
    assert all("null" in COLUMNS[name] for name in names)  # each says what null means
    ShardWriter(tmp_path, 8).close()
    assert Manifest.read(tmp_path).columns == COLUMNS
    table = (REPO / "README.md").read_text().split("| column | type, unit | null means |")[1].split("\n\n")[0]
    described = {name for line in table.splitlines() if line.startswith("|")
                 for name in line.split("|")[1].replace("`", "").replace(",", " ").split()}
    assert set(names) <= described


# -- (g): README's DataLoader snippet prints what README shows ------------------------------------------

def test_readme_dataloader_snippet_prints_what_readme_shows(tmp_path):
    readme = (REPO / "README.md").read_text()
    command = "codecpatch run pipelines/batch.toml --input sample_videos/ --output out/samples --workers 0"
    assert f"`{command}`" in readme
    after = readme.split("this is a training loop's input:")[1]
    snippet = after.split("```python\n")[1].split("```")[0]
    shown = after.split("```text\n")[1].split("```")[0]
    made = codecpatch("run", REPO / "pipelines" / "batch.toml", "--input", SAMPLES, "--output", tmp_path / "out" / "samples",
                      "--workers", "0", "--no-progress")
    assert made.returncode == 0, made.stderr
    printed = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == shown
