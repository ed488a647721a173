"""What makes two runs' rows comparable: the recipe settings that change rows, as a flat dict.

A shard folder stores this fingerprint in its manifest; resuming with a different one is refused (rows of
two configurations would mix silently). Everything is included except the keys below that only change how
or where the work runs, so a setting added later changes the fingerprint by default (the safe side).
"""

from __future__ import annotations

from ._recipe import Recipe

#: Settings that do not change any row: scheduling, shard sizes and timing, and the live-source plumbing.
_NOT_IN_ROWS_PREFIXES = ("execution.",)
_NOT_IN_ROWS = {"output.shard_mb", "output.commit_seconds", "output.s3_endpoint", "stream.queue", "stream.when_behind", "stream.realtime",
                "stream.rotate_seconds", "stream.open_timeout", "stream.read_timeout", "stream.probesize",
                "stream.analyzeduration_s", "stream.max_reconnects", "stream.backoff_s", "stream.backoff_max_s",
                "stream.threads", "stream.decoder_threads"}

#: Keys added to the recipe after outputs were written: while they hold their default they are left out, so
#: the fingerprint of an existing output (and its resume) is unchanged; any other value counts.
_ADDED_LATER = ("patchify.timeline_slots", "patchify.exact_size", "patchify.motion_weight", "patchify.static_motion_px",
                "patchify.static_residual", "patchify.block_size")


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
    defaults = _flatten(Recipe().model_dump(mode="json"))
    return {key: value for key, value in _flatten(recipe.model_dump(mode="json")).items()
            if key not in _NOT_IN_ROWS and not key.startswith(_NOT_IN_ROWS_PREFIXES)
            and not (key in _ADDED_LATER and value == defaults[key])}
