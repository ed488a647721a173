"""The ``codecpatch`` command line. Thin: builds option dataclasses and prints results."""

from __future__ import annotations

import gc
import os
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, NoReturn

import click

from . import __version__
from .decode import DecodeOptions, VideoReader, redact
from .errors import VideoError
from ._flags import FLAG_NAMES, overrides as _given_overrides, recipe_flags

if TYPE_CHECKING:  # inspect's summary is imported where it runs: start-up is what the other commands need
    from .summary import StreamSummary

_EXIT_BAD_INPUT = 2
_EXIT_GAVE_UP = 3


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _fail(message: str) -> NoReturn:
    """Bad input: one line on stderr, exit status 2, no traceback."""
    click.echo(f"error: {message}", err=True)
    sys.exit(_EXIT_BAD_INPUT)


def _echo_json(value) -> None:
    """Print ``value`` as one JSON document on stdout."""
    import json  # here: only --json prints JSON, and importing json costs every start-up ~1.2 ms

    click.echo(json.dumps(value))


def _printed_as_json(video: str, records: list[dict], as_json: bool) -> bool:
    """Fail when no clip came out; with ``--json`` print one object per clip (an array for several)."""
    if not records:
        _fail(f"{video}: no frame could be decoded")
    if as_json:
        _echo_json(records[0] if len(records) == 1 else records)
    return as_json


class _OneLineErrors(click.Group):
    """Every user mistake, click's own (a missing option, a bad choice) included, is one line
    ``error: ...`` on stderr with exit status 2: no usage block, no traceback."""

    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.ClickException as error:
            if isinstance(error, getattr(click.exceptions, "NoArgsIsHelpError", ())):  # bare `codecpatch`: the help
                error.show()
                sys.exit(_EXIT_BAD_INPUT)
            message = " ".join(error.format_message().split())
            click.echo(f"error: {message}", err=True)
            sys.exit(_EXIT_BAD_INPUT if isinstance(error, click.UsageError) else error.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="codecpatch")
def main() -> None:
    """codecpatch: video -> compact visual tokens, using what the codec already knows."""


@main.command()
@click.argument("video")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document: the summary and one record per frame.")
@click.option("--motion", type=click.Choice(["auto", "codec", "flow", "none"]), default="auto", show_default=True,
              help="Motion source: codec vectors, optical flow, auto (codec when the codec exports vectors), none.")
@click.option("--residual", type=click.Choice(["mc", "diff", "none"]), default="mc", show_default=True,
              help="Residual energy: motion-compensated (mc), plain frame difference, or none.")
@click.option("--block-size", type=click.Choice(["4", "8", "16"]), default="8", show_default=True, help="Motion/residual grid cell, pixels.")
@click.option("--strict", is_flag=True, help="Fail on the first undecodable packet instead of skipping it.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Open/read timeout for network sources, seconds.")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when stderr is a terminal).")
def inspect(video: str, as_json: bool, motion: str, residual: str, block_size: str, strict: bool, timeout: float,
            progress: bool | None) -> None:
    """Decode VIDEO and summarise what the codec knows: types, GOPs, motion, residual."""
    options = DecodeOptions(
        motion=motion, residual=residual, block_size=int(block_size), keep_vectors=False,
        on_error="raise" if strict else "skip", open_timeout=timeout, read_timeout=timeout,
    )
    from tqdm import tqdm  # here, not at the top: only this command shows a bar (importing it costs ~60 ms)

    from .summary import FrameRecord, summarize

    try:
        with VideoReader(video, options) as reader:
            show = sys.stderr.isatty() if progress is None else progress
            frames = tqdm(reader, desc="decoding", unit="frame", disable=not show, leave=False)
            records = [FrameRecord.from_frame(frame) for frame in frames]
            summary = summarize(reader.info, reader.report, records)
    except VideoError as error:
        _fail(str(error))
    if as_json:
        _echo_json({"summary": summary.to_dict(), "frames": [asdict(r) for r in records]})
    else:
        click.echo(format_summary(summary))
    if not records:  # the summary says what was found; a source without a single frame is still bad input
        _fail(f"{redact(video)}: no frame could be decoded ({reader.report.packets_skipped} undecodable packets skipped)")


def _same_file(a: str, b: str) -> bool:
    """Both paths exist and are one file (a link or another spelling of the same path included)."""
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def _write_error(out: str, error: Exception) -> str:
    """The message for an output that could not be written: it names the file (an OSError's own text may not)."""
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        return f"{out}: cannot write (its folder {folder} does not exist or is not a folder)"
    if isinstance(error, OSError) and error.strerror:
        return f"{out}: cannot write ({error.strerror})"
    return str(error) if out in str(error) else f"{out}: {error}"


def format_summary(summary: StreamSummary) -> str:
    """Human-readable multi-line summary."""
    gops = summary.gop_lengths
    gop_text = f"{len(gops)} GOPs, length min/mean/max {min(gops)}/{sum(gops) / len(gops):.1f}/{max(gops)}" if gops else "none"
    sizes = ", ".join(f"{w}x{h}" for w, h in summary.sizes) or f"{summary.width}x{summary.height}"
    types = " ".join(f"{t}={n}" for t, n in sorted(summary.type_counts.items()))
    sources = " ".join(f"{s}={n}" for s, n in sorted(summary.motion_sources.items()))
    fps = f"{summary.fps:.3f}" if summary.fps else "unknown"
    header_fps = f"{summary.header_fps:.3f}" if summary.header_fps else "none"
    duration = f"{summary.duration_s:.2f} s" if summary.duration_s is not None else "unknown"
    residual = f"{summary.mean_residual_energy:.2f}" if summary.mean_residual_energy is not None else "n/a"
    lines = [
        f"source        {summary.source}",
        f"codec         {summary.codec} in {summary.container}",
        f"size          {sizes}",
        f"fps           {fps} measured (header {header_fps}, times from {summary.timestamps})",
        f"frames        {summary.frames} decoded (header {summary.header_frames or 'n/a'})",
        f"duration      {duration}",
        f"picture types {types}",
        f"GOPs          {gop_text}",
        f"motion source {sources}",
        f"motion energy {summary.mean_motion_energy:.3f} px/block (mean)",
        f"residual      {residual} luma levels/block (mean)",
        f"complete      {'yes' if summary.complete else 'NO'}"
        + (f", {summary.packets_skipped} undecodable packets skipped" if summary.packets_skipped else "")
        + (f", {summary.corrupt_frames} frames concealed by the decoder" if summary.corrupt_frames else ""),
    ]
    lines += [f"warning       {w}" for w in summary.warnings]
    lines += [f"error         {e}" for e in summary.errors[:10]]
    return "\n".join(lines)


@main.command()
@click.argument("video")
@click.argument("output")
@click.option("--gop", type=int, default=16, show_default=True, help="Fixed GOP length, frames.")
@click.option("--crf", type=int, default=18, show_default=True, help="x264 constant rate factor (lower = better).")
@click.option("--fps", type=int, default=25, show_default=True, help="Output frame rate (frames are re-timed).")
@click.option("--max-side", type=int, default=None, help="Scale so the longer side is at most this many pixels.")
def transcode(video: str, output: str, gop: int, crf: int, fps: int, max_side: int | None) -> None:
    """Re-encode VIDEO as P-only, one-reference, fixed-GOP H.264 (exact codec vectors for any input)."""
    from .decode import transcode_for_vectors  # the encoding side is loaded where it runs (codecpatch.decode)

    try:
        result = transcode_for_vectors(video, output, gop=gop, crf=crf, fps=fps, max_side=max_side)
    except (VideoError, ValueError) as error:  # a bad source, or an output it cannot write
        _fail(str(error))
    except OSError as error:  # writing the output failed (permissions, a full disk, ...)
        _fail(_write_error(output, error))
    click.echo(f"wrote {result.path}: {result.frames} frames, {result.width}x{result.height}, GOP {gop}, P-only, ref=1")


_RECIPE_OPTION = click.option("--recipe", "recipe_path", type=click.Path(dir_okay=False), default=None,
                              help="Recipe (e.g. pipelines/batch.toml) whose settings the flags override (default: built-in defaults).")


def _recipe(recipe_path: str | None, params: dict, defaults: dict | None = None):
    """The recipe of a command: the file (or the defaults), ``defaults`` (the command's own, under the
    file), then the recipe flags the user gave (taken out of ``params``). A bad value is a user error."""
    from .pipeline import RecipeError, load_recipe

    given = _given_overrides(params)
    try:
        return load_recipe(recipe_path, {**(defaults or {}), **given}, FLAG_NAMES)
    except RecipeError as error:
        _fail(str(error))


def _one_clip_unless_given(recipe_path: str | None, params: dict) -> dict:
    """patchify, encode and viz look at the whole video (one clip) unless a recipe or --clip-seconds /
    --clip-frames says otherwise."""
    if recipe_path is None and params.get("clips__seconds") is None and params.get("clips__frames") is None:
        return {"clips.seconds": 0}
    return {}


def _clip_pipeline(recipe_path: str | None, params: dict):
    """The ClipPipeline of patchify and viz: their recipe (``_recipe``, one clip per video unless it says
    otherwise). Given no recipe and no recipe flag, that is the default recipe with one clip per video, which
    needs no validating: ``ClipPipeline.whole_videos()`` (it spares the command the recipe model's import)."""
    from .pipeline import ClipPipeline

    if recipe_path is None and not _given_overrides(dict(params)):
        return ClipPipeline.whole_videos()
    return ClipPipeline(_recipe(recipe_path, params, _one_clip_unless_given(recipe_path, params)))


def _clip_record(samples, patches, fidelity: dict | None) -> dict:
    """The JSON object ``patchify --json`` prints for one clip."""
    info = patches.info
    record = {
        "source": info.source, "clip_index": info.clip_index, "clip_start": round(info.time_start, 6),
        "clip_end": round(info.time_end, 6), "times_estimated": info.times_estimated,
        "sizes": [f"{w}x{h}" for w, h in info.sizes], "frame_start": info.frame_start, "frame_end": info.frame_end,
        "mode": patches.mode, "budget": patches.budget, "n_budget": patches.n_budget,
        "n_dense": patches.n_dense, "n_picture": patches.n_picture, "n_kept": patches.n_kept,
        "keep_ratio": round(patches.n_kept / patches.n_dense, 6), "area_fraction": round(patches.area_fraction, 6),
        "grid": list(patches.grid), "canvas": [patches.geometry.canvas_height, patches.geometry.canvas_width],
        "frame_indices": patches.frame_indices.tolist(), "timeline": patches.timeline.tolist(),
        "picture_types": list(samples.picture_types), "positions": patches.positions.tolist(),
        "kept_per_frame": patches.kept_per_frame.tolist(),
        "whole_frames": [{"t": t, "reason": reason} for t, reason in patches.whole_frames],
        "static_fallback": patches.static_fallback, "motion_sources": sorted(set(samples.motion_sources)),
        "warnings": list(samples.warnings),
    }
    if fidelity is not None:
        record["psnr"] = {name: f.psnr_or_none() for name, f in fidelity.items()}
        record["ssim"] = {name: round(f.ssim, 4) for name, f in fidelity.items()}
    return record


def _fidelity(samples, patches, seed: int) -> dict:
    from .metrics import compare_selections, selection_fidelity

    if patches.mode == "codec":
        whole = [t for t, reason in patches.whole_frames if reason != "static fallback"]
        return compare_selections(samples, patches.kept, whole, seed)
    return {patches.mode: selection_fidelity(samples, patches.kept, "hold")}


@main.command()
@click.argument("video")
@_RECIPE_OPTION
@recipe_flags("patchify", "clips")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per clip (an array when there are several).")
@click.option("--no-fidelity", is_flag=True, help="Skip the rebuild/PSNR measurement (faster).")
def patchify(video: str, recipe_path: str | None, as_json: bool, no_fidelity: bool, **params) -> None:
    """Choose the patches of VIDEO (or an image) that become tokens, and measure what they carry.
    Without --recipe, --clip-seconds or --clip-frames the whole video is one clip."""
    pipeline = _clip_pipeline(recipe_path, params)
    records = []
    try:
        for samples in pipeline.clips(video):
            patches = pipeline.patchify(samples)
            fidelity = None if no_fidelity else _fidelity(samples, patches, pipeline.config.seed)
            records.append(_clip_record(samples, patches, fidelity))
    except VideoError as error:
        _fail(str(error))
    if _printed_as_json(video, records, as_json):
        return
    for record in records:
        psnr = record.get("psnr")
        psnr_text = "  ".join(f"{k} {v} dB" for k, v in psnr.items()) if psnr else "not measured"
        whole = ", ".join(f"t={w['t']} ({w['reason']})" for w in record["whole_frames"][:6])
        click.echo(
            f"clip {record['clip_index']}  {record['clip_start']:.2f}-{record['clip_end']:.2f} s  frames {record['frame_start']}-{record['frame_end'] - 1}\n"
            f"  grid T,H,W     {record['grid']}  ({record['n_dense']} dense tokens, {record['n_picture']} hold picture)\n"
            f"  kept           {record['n_kept']} tokens covering {100 * record['area_fraction']:.2f}% of the picture's area, budget {record['budget']}\n"
            f"  whole frames   {whole or 'none'}{' (static fallback)' if record['static_fallback'] else ''}\n"
            f"  kept per frame {record['kept_per_frame']}\n"
            f"  PSNR           {psnr_text}"
        )
        for warning in record["warnings"]:
            click.echo(f"  warning        {warning}")


@main.command()
@click.argument("video")
@_RECIPE_OPTION
@recipe_flags("patchify", "clips", "encoder", "compress")
@click.option("--text", "texts", multiple=True, help="Text query for DUET T2V (repeatable).")
@click.option("--t2v", type=float, default=0.5, show_default=True, help="Fraction of tokens T2V keeps for the --text queries.")
@click.option("--text-tower", default=None, help="Local CLIP or SigLIP checkpoint folder with tokenizer (default: the vit:PATH folder).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per clip (an array when there are several).")
def encode(video: str, recipe_path: str | None, texts: tuple[str, ...], t2v: float, text_tower: str | None, as_json: bool,
           **params) -> None:
    """Patchify VIDEO, encode the kept patches as tokens and compress them; report each stage.
    Without --recipe, --clip-seconds or --clip-frames the whole video is one clip."""

    from .pipeline import ClipPipeline
    from .tokens import random_prune, relative_rebuild_error, stride_prune

    recipe = _recipe(recipe_path, params, _one_clip_unless_given(recipe_path, params))
    pipeline = ClipPipeline(recipe)
    try:
        pipeline.model  # noqa: B018 - load it now: a bad checkpoint is a user error before any decoding
        pipeline.check_patch()
    except (OSError, ValueError, KeyError) as error:
        raise click.BadParameter(str(error), param_hint="--encoder") from error
    if texts:
        try:
            pipeline.with_texts(list(texts), t2v, text_tower)
        except (OSError, ValueError) as error:
            raise click.BadParameter(str(error), param_hint="--text-tower" if text_tower else "--text") from error
    records = []
    try:
        for samples in pipeline.clips(video):
            clip = pipeline.process(samples, video_id=video, source=video)
            patches, tokens, compressed = clip.patches, clip.encoded, clip.tokens
            ratio = compressed.n_tokens / max(tokens.n_tokens, 1)
            # Reference: the encoder's token for every kept patch (after Xray, fused patches share one).
            reference = tokens.tokens[tokens.absorbed_into]
            fidelity = {"relative_error": round(relative_rebuild_error(reference, compressed), 6)}
            if recipe.compress or texts:
                fidelity["random"] = round(relative_rebuild_error(reference, random_prune(tokens, ratio)), 6)
                fidelity["stride"] = round(relative_rebuild_error(reference, stride_prune(tokens, ratio)), 6)
            records.append({
                "source": patches.info.source, "clip_index": patches.info.clip_index,
                "n_dense": patches.n_dense, "n_picture": patches.n_picture, "n_patches": patches.n_kept,
                "area_fraction": round(patches.area_fraction, 6), "n_tokens": compressed.n_tokens,
                "dim": compressed.dim,
                "stages": [{"name": "patchify", "n_in": patches.n_dense, "n_out": patches.n_kept, "seconds": None}]
                + [{"name": st.name, "n_in": st.n_in, "n_out": st.n_out, "seconds": round(st.seconds, 6)} for st in compressed.stages],
                "fidelity": fidelity,
            })
    except VideoError as error:
        _fail(str(error))
    if _printed_as_json(video, records, as_json):
        return
    for record in records:
        click.echo(f"clip {record['clip_index']}: {record['n_dense']} dense -> {record['n_patches']} patches covering "
                   f"{100 * record['area_fraction']:.2f}% of the picture's area -> {record['n_tokens']} tokens of dim {record['dim']}")
        for stage in record["stages"]:
            seconds = f"{1000 * stage['seconds']:.1f} ms" if stage["seconds"] is not None else ""
            click.echo(f"  {stage['name']:28} {stage['n_in']:7d} -> {stage['n_out']:7d}  {seconds}")
        click.echo("  relative rebuild error " + "  ".join(f"{k} {v:.4f}" for k, v in record["fidelity"].items()))


_EXIT_INPUTS_FAILED = 4  # --strict: the run finished, but some inputs failed (recorded in _errors/)
_EXIT_INTERRUPTED_HELP = "SIGINT (Ctrl-C) or SIGTERM: what finished is committed, exit status 130 or 143 (128 + signal)"


def _run_pipeline(recipe_path: str | None, input_spec: str, output: str, overrides: dict, flags: dict) -> None:
    """Validate, stream the inputs, plan and run; ``flags``: progress, dry_run, limit, strict, overwrite.

    The inputs (a list of any length, a folder, a glob or an object-store prefix) are read as a stream once,
    a unit at a time (``iter_inputs``): never held whole, never stat'ed up front. The output is checked
    (settings, schema version, ledger) before any work, the dry run included."""
    from itertools import chain

    from .pipeline import (SKIPPED, InputScan, Interrupted, RecipeError, check_output, format_plan, iter_inputs, load_recipe,
                           parse_extensions, plan_stream, run)
    from .shards import FolderInUseError, RecipeMismatchError, Store

    walk_skipped: list = []  # entries a folder walk or glob did not process (filled as the stream is read)
    try:
        recipe = load_recipe(recipe_path, overrides, FLAG_NAMES)
        recipe.encoder.check_checkpoint()
        stream = iter_inputs(input_spec, parse_extensions(recipe.inputs.extensions), endpoint=recipe.output.s3_endpoint,
                             skipped=walk_skipped)
        first = next(stream, None)
    except (RecipeError, FileNotFoundError, ValueError) as error:
        _fail(str(error))
    if first is None:
        scan = InputScan(skipped=walk_skipped, count=0)
        seen = scan.summary().replace("0 inputs, ", "") if scan.skipped else "it is empty"
        _fail(f"{input_spec}: no input videos ({seen}); nothing to do")
    inputs = chain([first], stream)

    def skipped() -> list[tuple[str, str]]:
        return [(_shown_path(entry.path, input_spec), f"{entry.reason} ({entry.detail})" if entry.detail else entry.reason)
                for entry in sorted(walk_skipped, key=lambda entry: entry.path)]

    try:
        # --overwrite deletes what the output holds, mismatched or not
        unit_inputs = recipe.execution.unit_inputs if flags["overwrite"] else check_output(recipe, output)
        if flags["dry_run"]:
            plan = plan_stream(inputs, output, unit_inputs=unit_inputs, limit=flags["limit"], endpoint=recipe.output.s3_endpoint)
    except (RecipeMismatchError, ValueError) as error:  # other settings, or a folder written by another schema version
        _fail(str(error))
    if flags["dry_run"]:
        click.echo(format_plan(plan, skipped(), show=_PLAN_SHOWN))
        click.echo(f"{_plural(plan.inputs, 'input')} in {_plural(plan.units, 'unit')} of {unit_inputs}")
        click.echo(f"dry run: nothing written to {output}")
        return
    try:
        stats = run(recipe, inputs, output, progress=flags["progress"], overwrite=flags["overwrite"], limit=flags["limit"])
    except (RecipeMismatchError, FolderInUseError) as error:
        _fail(str(error))
    except OSError as error:  # the output folder cannot be made or written (a file on its path, no permission, ...)
        _fail(_write_error(output, error))
    except Interrupted as interrupt:
        click.echo(f"{interrupt.signal_name}: stopped; everything that finished is committed to {output} "
                   "(rerun the same command to resume)", err=True)
        sys.exit(interrupt.exit_status)
    scan = InputScan(skipped=sorted(walk_skipped, key=lambda entry: entry.path), count=stats.inputs)
    scan.write_skipped(Store(output, recipe.output.s3_endpoint))  # after the run: the folder is ours (the writer's lock) and exists
    summary = stats.to_dict()
    left = f", {summary['over_limit']} left by --limit" if summary["over_limit"] else ""
    failed_before = min(summary["failed_before"], summary["skipped_done"])  # skipped like done ones, but not done
    earlier = f", {failed_before} failed in an earlier run" if failed_before else ""
    if scan.skipped:  # without skips that line would only repeat the next one's count
        click.echo(f"{scan.summary()} (see {output}/{SKIPPED})")
    click.echo(f"{_plural(summary['inputs'] - summary['over_limit'], 'input')}: {summary['processed']} processed, "
               f"{summary['failed']} failed, "
               f"{summary['skipped_done'] - failed_before} already done{earlier}{left}; {summary['clips']} clips, "
               f"{summary['n_tokens']} tokens "
               f"in {summary['seconds']:.1f} s -> {output} [{summary['execution']}]")
    if summary.get("partial"):
        click.echo(f"  partial decodes: {summary['partial']} (rows with complete = false; recipe limits.partial = "
                   f"{recipe.limits.partial})")
    for kind, count in summary["errors_by_kind"].items():
        click.echo(f"  errors: {kind} x{count} (see {output}/_errors/)")
    failed = summary["failed"] + failed_before
    if flags["strict"] and failed:
        click.echo(f"error: --strict: {_plural(failed, 'input')} failed (see {output}/_errors/)", err=True)
        sys.exit(_EXIT_INPUTS_FAILED)


#: How many names the dry run lists per group (then "... and N more").
_PLAN_SHOWN = 50

_RUN_OPTIONS = [
    click.option("--input", "input_spec", required=True, help="Folder, glob, LIST.txt (path[TAB]text) or LIST.parquet."),
    click.option("--output", required=True, type=click.Path(file_okay=False), help="Shard folder (a rerun resumes it)."),
    click.option("--overwrite", is_flag=True, help="Delete what an earlier run wrote to --output and start again (needed "
                                                   "when its settings differ from this run's)."),
    click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal)."),
    click.option("--dry-run", is_flag=True, help="List what would run, what is already done and what is skipped (and why); write nothing."),
    click.option("--limit", type=click.IntRange(min=1), default=None, help="Process at most N inputs not yet done (try a recipe on a few)."),
    click.option("--strict", is_flag=True, help=f"Exit with status {_EXIT_INPUTS_FAILED} when any input failed (this run or an earlier one)."),
]
#: The recipe sections a batch run reads; each key is a flag (codecpatch._flags).
_RUN_SECTIONS = ("clips", "inputs", "limits", "patchify", "encoder", "compress", "output", "execution")


def _shown_path(path: str, input_spec: str) -> str:
    """``path`` relative to a folder input (as ids are), else as it is."""
    return os.path.relpath(path, input_spec) if os.path.isdir(input_spec) else path


def _run_options(command):
    for option in reversed(_RUN_OPTIONS):
        command = option(command)
    return recipe_flags(*_RUN_SECTIONS)(command)


@main.command(name="run", epilog=_EXIT_INTERRUPTED_HELP)
@click.argument("recipe", type=click.Path(dir_okay=False))
@_run_options
def run_recipe(recipe: str, input_spec: str, output: str, progress, dry_run, limit, strict, overwrite, **flags) -> None:
    """Run a pipeline recipe (pipelines/*.toml) over a video dataset into Parquet token shards; flags override its keys."""
    _run_pipeline(recipe, input_spec, output, _given_overrides(flags),
                  {"progress": progress, "dry_run": dry_run, "limit": limit, "strict": strict, "overwrite": overwrite})


@main.command(epilog=_EXIT_INTERRUPTED_HELP)
@_run_options
def batch(input_spec: str, output: str, progress, dry_run, limit, strict, overwrite, **flags) -> None:
    """The batch pipeline with flags only (recipe defaults for everything not given)."""
    _run_pipeline(None, input_spec, output, _given_overrides(flags),
                  {"progress": progress, "dry_run": dry_run, "limit": limit, "strict": strict, "overwrite": overwrite})


@main.command()
@click.argument("source")
@click.option("--output", required=True, type=click.Path(file_okay=False), help="Shard folder (a restart continues it).")
@click.option("--recipe", "recipe_path", type=click.Path(dir_okay=False), default=None,
              help="Recipe (e.g. pipelines/camera.toml); flags override it. Without one: built-in defaults (768-d pixel "
                   "tokens, no compressor, 256 MB shards).")
@click.option("--id", "stream_id", default=None, help="video_id of the rows (default: the source without its query).")
@click.option("--max-windows", type=int, default=None, help="Stop after this many windows (default: no limit).")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds (default: no limit).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@click.option("--overwrite", is_flag=True, help="Delete what an earlier run wrote to --output and start again.")
@recipe_flags("stream", "patchify", "encoder", "compress", "limits", "output")
def stream(source: str, output: str, recipe_path: str | None, stream_id: str | None, max_windows, duration, progress, overwrite,
           **flags) -> None:
    """Stream a camera (/dev/videoN), a network URL (rtsp/rtmp/http/tcp/udp) or a file into rolling token shards.

    Ctrl-C or SIGTERM finishes the current window, closes the shard and exits with status 0. Exit status 3:
    a live source stayed away for --max-reconnects attempts (the shards written so far are complete)."""
    import logging
    import signal
    import threading

    from .shards import FolderInUseError, RecipeMismatchError
    from .stream import run_stream

    recipe = _recipe(recipe_path, flags)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    stop = threading.Event()

    def request_stop(signum, _frame) -> None:
        if stop.is_set():  # a second Ctrl-C: stop waiting
            raise KeyboardInterrupt
        logging.getLogger("codecpatch.stream").warning("%s: finishing the current window and closing the shard",
                                                       signal.Signals(signum).name)  # through the progress bar
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    try:
        stats = run_stream(source, recipe, output, stream_id=stream_id, max_windows=max_windows, duration_s=duration,
                           stop=stop, progress=progress, overwrite=overwrite)
    except (VideoError, RecipeMismatchError, FolderInUseError) as error:
        _fail(str(error))
    summary = stats.to_dict()
    p50, p95 = summary["latency_p50_s"], summary["latency_p95_s"]
    latency = f"latency p50 {1000 * p50:.0f} ms, p95 {1000 * p95:.0f} ms" if p50 is not None else "no window written"
    click.echo(f"{_plural(summary['windows_written'], 'window')} ({summary['frames']} frames, {summary['n_tokens']} tokens) in "
               f"{summary['seconds']:.1f} s; {summary['windows_dropped']} dropped, {summary['windows_failed']} failed, "
               f"{_plural(max(0, summary['sessions'] - 1), 'reconnect')}; {latency} -> {output} ({summary['ended'] or 'stopped'})")
    if stats.gave_up:
        sys.exit(_EXIT_GAVE_UP)
    if summary["frames"] == 0 and summary["ended"] == "source ended":  # not one frame before the source's end
        _fail(f"{redact(source)}: no frame could be decoded")


@main.command()
@click.argument("video")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="FILE.png (grid of sampled frames) or FILE.mp4.")
@_RECIPE_OPTION
@recipe_flags("patchify", "clips")
@click.option("--columns", type=int, default=8, show_default=True, help="Tiles per row in the PNG.")
@click.option("--max-tiles", type=int, default=16, show_default=True, help="Sampled frames shown in the PNG.")
def viz(video: str, out: str, recipe_path: str | None, columns: int, max_tiles: int, **params) -> None:
    """Draw the selection: kept patches bright, dropped ones dimmed, motion arrows, budget and PSNR (first clip)."""
    from .viz import save_picture

    if _same_file(out, video):
        _fail(f"{out}: is VIDEO itself; write the picture elsewhere")
    pipeline = _clip_pipeline(recipe_path, params)
    try:
        samples = next(iter(pipeline.clips(video)), None)
    except VideoError as error:
        _fail(str(error))
    if samples is None:
        _fail(f"{video}: no frame could be decoded")
    patches = pipeline.patchify(samples)
    psnr = {name: f.psnr_or_none() for name, f in _fidelity(samples, patches, pipeline.config.seed).items()}
    try:
        path = save_picture(samples, patches, psnr, out, columns=columns, max_tiles=max_tiles)
    except (ValueError, OSError) as error:
        raise click.UsageError(_write_error(out, error)) from error
    click.echo(f"wrote {path} (clip 0: {patches.n_kept} tokens kept, {100 * patches.area_fraction:.1f}% of the picture's area)")


@main.command()
@click.argument("shards", type=click.Path(file_okay=False))
@click.option("--sample", "sample_id", default=None, help="sample_id of the row (VIDEO_ID#CLIP), or a video_id for its first clip.")
@click.option("--index", type=click.IntRange(min=0), default=None, help="Row number over the folder's finished shards, from 0.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="FILE.png (grid of sampled frames) or FILE.mp4.")
@click.option("--columns", type=int, default=8, show_default=True, help="Tiles per row in the PNG.")
@click.option("--max-tiles", type=int, default=16, show_default=True, help="Sampled frames shown in the PNG.")
def show(shards: str, sample_id: str | None, index: int | None, out: str, columns: int, max_tiles: int) -> None:
    """Draw one stored shard row: its kept patches (stored with --store-pixels) on the timeline, like viz."""
    from .shards import read_row
    from .viz import draw_stored_row, save_tiles

    if (sample_id is None) == (index is None):
        _fail("give one of --sample ID or --index N")
    try:
        row = read_row(shards, sample_id=sample_id, index=index)
    except KeyError as error:  # str(KeyError) is the repr of its message: take the message itself
        _fail(error.args[0])
    except (FileNotFoundError, IndexError, ValueError) as error:
        _fail(str(error))
    tiles = draw_stored_row(row.pixels, row.positions, row.frame_types, row.grid, row.slots)
    title = (f"{row.sample_id}  {row.mode}  budget {row.budget}: {len(row.pixels)}/{row.n_dense} patches "
             f"({100 * len(row.pixels) / max(row.n_dense, 1):.1f}%)  {row.clip_start:.2f}-{row.clip_end:.2f} s  (stored row; dropped patches are not stored)")
    try:
        path = save_tiles(tiles, title, out, columns=columns, max_tiles=max_tiles)
    except (ValueError, OSError) as error:
        _fail(_write_error(out, error))
    click.echo(f"wrote {path} ({row.sample_id}: {len(row.pixels)} patches on {len(row.slots)} sampled frames)")



def _fractions(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected comma-separated fractions, e.g. 0.125,0.25", param_hint=option) from None


@main.command(name="fidelity")
@click.argument("videos", nargs=-1, required=True)
@click.option("--encoder", required=True, help="vit:PATH, a local ViT checkpoint (e.g. a DINOv2 folder) that scores the selections.")
@click.option("--frames", type=int, default=16, show_default=True, help="Frames sampled per clip.")
@click.option("--max-side", type=int, default=224, show_default=True, help="Native-aspect canvas longer side, px (no letterbox).")
@click.option("--clip-seconds", type=float, default=None, help="Split each video into clips of this many seconds.")
@click.option("--budgets", default="0.03125,0.0625,0.125,0.25", show_default=True, help="Selection budgets, fractions of picture patches.")
@click.option("--keeps", default="0.5,0.25,0.125", show_default=True, help="Compressor keep ratios.")
@click.option("--compress-budget", type=float, default=0.25, show_default=True, help="Codec budget whose tokens the compressors shrink.")
@click.option("--segments", type=int, default=4, show_default=True, help="Time segments per clip (segment retrieval, frame localisation).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random selections.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def fidelity_command(videos: tuple[str, ...], encoder: str, frames: int, max_side: int, clip_seconds: float | None, budgets: str,
                     keeps: str, compress_budget: float, segments: int, seed: int, as_json: bool) -> None:
    """Score patch selections and compressors by what a real ViT loses (see codecpatch/fidelity.py)."""
    from .fidelity import FidelitySettings, evaluate_clips, format_table
    from .patchify import PatchifyConfig, iter_clip_samples
    from .tokens import load_vit

    name, _, path = encoder.partition(":")
    if name != "vit" or not path:
        raise click.BadParameter(f"{encoder!r}: expected vit:PATH", param_hint="--encoder")
    try:
        settings = FidelitySettings(_fractions(budgets, "--budgets"), compress_budget, _fractions(keeps, "--keeps"), segments, seed)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    try:
        model = load_vit(path)
    except (OSError, ValueError, KeyError) as error:
        raise click.BadParameter(str(error), param_hint="--encoder") from error
    config = PatchifyConfig(frames=frames, max_side=max_side, patch=model.config.patch, clip_seconds=clip_seconds, seed=seed)
    clips, errors = [], []
    for video in videos:  # a bad video is reported and skipped; the others are still scored
        try:
            clips.extend(iter_clip_samples(video, config))
        except VideoError as error:
            errors.append(str(error))
            click.echo(f"error: {error}", err=True)
    if not clips:
        _fail("no clip could be decoded from " + ", ".join(videos))
    result = {**evaluate_clips(model, clips, config, settings), "errors": errors,
              "settings": {"frames": frames, "max_side": max_side, "patch": model.config.patch, "clip_seconds": clip_seconds,
                           **asdict(settings)}}
    if as_json:
        _echo_json(result)
    else:
        click.echo(f"{_plural(len(result['clips']), 'clip')}; dense reference {1000 * result['dense_seconds']:.0f} ms per clip")
        click.echo(format_table(result["methods"]))
    if errors:
        sys.exit(_EXIT_BAD_INPUT)

@main.group(name="shards")
def shards_group() -> None:
    """Inspect and check batch shard outputs (a folder or a URI such as s3://bucket/prefix)."""


@shards_group.command(name="verify")
@click.argument("location")
@click.option("--no-rebuild", is_flag=True, help="Only check: leave _manifest.json as it is.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def shards_verify(location: str, no_rebuild: bool, as_json: bool) -> None:
    """Check LOCATION against its unit records (rows per shard from the footers, every input done exactly
    once, unreadable and orphaned files) and rebuild its summary _manifest.json. Exit status 1 on problems."""
    from dataclasses import asdict

    from .shards import verify

    try:
        report = verify(location, rebuild=not no_rebuild)
    except (FileNotFoundError, ValueError) as error:
        _fail(str(error))
    if as_json:
        _echo_json({**asdict(report), "ok": report.ok})
    else:
        click.echo("\n".join(report.lines()))
    if not report.ok:
        sys.exit(1)


def console_main() -> None:
    """The ``codecpatch`` console script: ``main`` as a process of its own, which ends when it returns.

    Python's shutdown runs a full garbage collection over every object alive, most of them made by the
    imports (numpy, PyAV, OpenCV, click): 15-20 ms of a 0.3-0.9 s ``codecpatch patchify`` on one core, for a
    process about to exit. Frozen objects are skipped. Only the console script does this: ``main`` called in
    a longer-lived process (tests, notebooks) leaves the collector alone. ``atexit`` handlers and
    ``weakref.finalize`` callbacks (temporary folders, Ray's shutdown) still run.
    """
    try:
        main()
    finally:
        gc.freeze()


if __name__ == "__main__":
    console_main()
