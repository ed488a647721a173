"""Ready pipelines: recipes (pipelines/*.toml), inputs, the ClipPipeline a recipe builds, one-video processing, error
policies and the resumable runner.

Each name is imported from its module on first use, so that a command imports only what it runs: ``patchify``
needs the recipe and ``ClipPipeline``, not the shard store (pyarrow, pandas) or the runner.
"""

from __future__ import annotations

import importlib

#: Where each public name lives (module under this package).
_HOMES = {
    "SKIPPED": "_inputs", "VIDEO_SUFFIXES": "_inputs", "InputScan": "_inputs", "InputVideo": "_inputs",
    "SkippedEntry": "_inputs", "iter_inputs": "_inputs", "list_inputs": "_inputs", "parse_extensions": "_inputs",
    "scan_inputs": "_inputs",
    "RunPlan": "_plan", "StreamPlan": "_plan", "format_plan": "_plan", "plan_run": "_plan", "plan_stream": "_plan",
    "ClipEncoder": "_clip", "ClipPipeline": "_clip", "ClipResult": "_clip", "limit_threads": "_clip",
    "ErrorPolicy": "_errors", "record_and_continue": "_errors", "reraise": "_errors",
    "VideoResult": "_process", "process_video": "_process",
    "Recipe": "_recipe", "RecipeError": "_recipe", "load_recipe": "_recipe",
    "row_fingerprint": "_fingerprint",
    "Interrupted": "_interrupts",
    "Stats": "_stats", "write_json_atomic": "_stats",
    "ExecutionChoice": "_runner", "RunStats": "_runner", "check_output": "_runner", "choose_execution": "_runner",
    "run": "_runner",
}


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))


__all__ = sorted(_HOMES)
