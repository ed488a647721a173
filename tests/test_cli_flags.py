"""The command line's start-up shortcuts stay true to the recipe model: the flag table written from it, and
the default pipeline that ``codecpatch patchify VIDEO`` builds without validating a recipe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import SAMPLES


def test_the_flag_table_is_written_from_the_recipe_model():
    """codecpatch/_recipe_fields.py is exactly what ``python -m codecpatch._flags`` writes from the model
    now (keys, kinds, defaults as written, descriptions): change a recipe field, then run that command."""
    from codecpatch import _recipe_fields
    from codecpatch._flags import recipe_table, render_table

    assert Path(_recipe_fields.__file__).read_text() == render_table(recipe_table()), \
        "the recipe model changed: run `python -m codecpatch._flags` to write codecpatch/_recipe_fields.py again"


def test_every_recipe_key_has_a_flag_with_the_fields_type_and_help():
    """The flags built from the table: one per recipe key, typed and described as the field is."""
    import click

    from codecpatch import cli
    from codecpatch._flags import FLAG_NAMES
    from codecpatch.pipeline import Recipe

    keys = {"compress"} | {f"{section}.{name}" for section, field in Recipe.model_fields.items() if section != "compress"
                           for name in field.annotation.model_fields}
    assert set(FLAG_NAMES) == keys
    options = {option: param for param in cli.run_recipe.params for option in param.opts}
    assert isinstance(options["--block-size"].type, click.Choice) and options["--block-size"].type.choices == ("4", "8", "16")
    assert options["--frames"].type is click.INT and options["--motion-weight"].type is click.FLOAT
    assert options["--keep-first"].is_bool_flag and options["--keep-first"].secondary_opts == ["--no-keep-first"]
    assert options["--frames"].help == "frames sampled per clip (chunks in chunk mode) (default 64; recipe: patchify.frames)"
    assert options["--deadline"].help.endswith("(default 600; recipe: execution.deadline_s)")


def test_the_whole_video_pipeline_is_the_default_recipes():
    """``ClipPipeline.whole_videos()`` (no recipe validated) decodes and patchifies as the pipeline of the
    default recipe with one clip per video does, and its recipe, built on first use, is that recipe."""
    from codecpatch.pipeline import ClipPipeline, load_recipe
    from codecpatch.pipeline._clip import WHOLE_VIDEOS

    quick, full = ClipPipeline.whole_videos(), ClipPipeline(load_recipe(None, {"clips.seconds": 0}))
    assert WHOLE_VIDEOS == {"clips.seconds": 0}
    assert vars(quick).keys() == vars(full).keys()  # an attribute added to __init__ is set by whole_videos too
    assert (quick.config, quick.limits, quick.decoder_threads) == (full.config, full.limits, full.decoder_threads)
    assert quick._recipe is None  # not built yet
    assert quick.recipe == full.recipe and (quick.chain, quick.encoder_spec) == (full.chain, full.encoder_spec)


def test_cli_start_up_loads_no_recipe_model():
    """Importing the CLI and running ``patchify --no-fidelity VIDEO`` leave pydantic unloaded (~80 ms of
    start-up); a recipe flag validates the recipe, so it loads it."""
    code = ("import sys; from codecpatch.cli import main\n"
            "print('pydantic' in sys.modules, file=sys.stderr)\n"
            "try: main(['patchify', '--no-fidelity', *sys.argv[1:]], standalone_mode=False)\n"
            "except SystemExit: pass\n"
            "print('pydantic' in sys.modules, file=sys.stderr)")
    video = str(SAMPLES / "pan_h264_p.mp4")
    for extra, expected in (([], ["False", "False"]), (["--frames", "8"], ["False", "True"])):
        result = subprocess.run([sys.executable, "-c", code, *extra, video], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert "clip 0" in result.stdout
        assert result.stderr.split()[-2:] == expected, (extra, result.stderr)
