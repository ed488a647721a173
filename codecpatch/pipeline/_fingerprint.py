"""What makes two runs' rows comparable: the recipe settings that change rows, as a flat dict.

A shard folder stores this fingerprint in its manifest; resuming with a different one is refused (rows of
two configurations would mix silently). Everything is included except the keys below that only change how
or where the work runs, so a setting added later changes the fingerprint by default (the safe side).
"""

from __future__ import annotations

from ._recipe import Recipe

#: Settings that do not change any row: scheduling, shard sizes and timing, and the live-source plumbing. One
#: exception, kept out on purpose: the decoder's thread count (``execution.decode_cpus``, ``stream.decoder_threads``)
#: changes how FFmpeg conceals a *damaged* file's frames (``DecodeOptions.threads``; clean files decode the same),
#: and refusing a resume for it would tie a folder to the machine that started it (README: "Same rows wherever a
#: video runs").
_NOT_IN_ROWS_PREFIXES = ("execution.",)
_NOT_IN_ROWS = {"output.shard_mb", "output.commit_seconds", "output.s3_endpoint", "stream.queue", "stream.when_behind", "stream.realtime",
                "stream.rotate_seconds", "stream.open_timeout", "stream.read_timeout", "stream.probesize",
                "stream.analyzeduration_s", "stream.max_reconnects", "stream.backoff_s", "stream.backoff_max_s",
                "stream.threads", "stream.decoder_threads"}

#: Keys added to the recipe, or whose default changed, after outputs were written, with the value the rows of
#: those outputs were made with. A key at that value is left out, so the fingerprint of an existing output (and
#: its resume) is unchanged; any other value counts. The shard writers get this table as ``implied``: a folder
#: whose recorded fingerprint lacks a key was made with this value, so a run with another one (a new default,
#: such as block_size 16, residual_stride 2 and flow_max_side 80 since 0.2) is refused there instead of mixing rows.
LEGACY_VALUES: dict[str, object] = {
    "patchify.timeline_slots": 64, "patchify.exact_size": None, "patchify.motion_weight": 0.5, "patchify.static_motion_px": 0.5,
    "patchify.static_residual": 2.0, "patchify.block_size": 8, "patchify.residual_stride": 1,
    "patchify.flow_max_side": 0, "frozen.merge_after": 0,
}


#: Settings of the per-frame codec analysis (motion and residual). Only codec-mode patch selection reads what
#: it computes: the chunk and image modes decode no motion or residual, and a frozen-encoder run encodes evenly
#: spaced whole frames, so there these keys are left out (a 0.1 folder of those kinds resumes at 0.2's defaults).
_CODEC_ANALYSIS = ("patchify.block_size", "patchify.residual_stride", "patchify.flow_max_side")


def _flatten(data: dict, prefix: str = "") -> dict:
    flat: dict = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def row_fingerprint(recipe: Recipe) -> dict:
    """{"section.key": value} of every recipe setting that changes the rows a run writes (JSON values)."""
    analysed = recipe.patchify.mode == "codec" and not recipe.frozen.enabled
    return {key: value for key, value in _flatten(recipe.model_dump(mode="json")).items()
            if key not in _NOT_IN_ROWS and not key.startswith(_NOT_IN_ROWS_PREFIXES)
            and not (key in LEGACY_VALUES and value == LEGACY_VALUES[key])
            and (analysed or key not in _CODEC_ANALYSIS)}
