"""Ready pipelines: recipes (pipelines/*.toml), inputs, one-video processing and the resumable runner."""

from ._inputs import (SKIPPED, VIDEO_SUFFIXES, InputScan, InputVideo, SkippedEntry, iter_inputs, list_inputs, parse_extensions,
                      scan_inputs)
from ._plan import RunPlan, format_plan, plan_run
from ._process import VideoResult, process_video
from ._recipe import Recipe, RecipeError, load_recipe
from ._fingerprint import row_fingerprint
from ._interrupts import Interrupted
from ._runner import ExecutionChoice, RunStats, choose_execution, run

__all__ = ["SKIPPED", "VIDEO_SUFFIXES", "ExecutionChoice", "InputScan", "InputVideo", "Interrupted", "Recipe", "RecipeError",
           "RunPlan", "RunStats", "SkippedEntry", "VideoResult", "choose_execution", "format_plan", "iter_inputs", "list_inputs",
           "load_recipe", "parse_extensions", "plan_run", "process_video", "row_fingerprint", "run", "scan_inputs"]
