"""Ready pipelines: recipes (pipelines/*.toml), inputs, one-video processing and the resumable runner."""

from ._inputs import (SKIPPED, VIDEO_SUFFIXES, InputScan, InputVideo, SkippedEntry, list_inputs, parse_extensions,
                      scan_inputs)
from ._plan import RunPlan, format_plan, plan_run
from ._process import VideoResult, process_video
from ._recipe import Recipe, RecipeError, load_recipe
from ._runner import RunStats, run

__all__ = ["SKIPPED", "VIDEO_SUFFIXES", "InputScan", "InputVideo", "Recipe", "RecipeError", "RunPlan", "RunStats", "SkippedEntry",
           "VideoResult", "format_plan", "list_inputs", "load_recipe", "parse_extensions", "plan_run",
           "process_video", "run", "scan_inputs"]
