"""Ready pipelines: recipes (pipelines/*.toml), inputs, the ClipPipeline a recipe builds, one-video processing, error
policies and the resumable runner."""

from ._inputs import (SKIPPED, VIDEO_SUFFIXES, InputScan, InputVideo, SkippedEntry, iter_inputs, list_inputs, parse_extensions,
                      scan_inputs)
from ._plan import RunPlan, StreamPlan, format_plan, plan_run, plan_stream
from ._clip import ClipEncoder, ClipPipeline, ClipResult, limit_threads
from ._errors import ErrorPolicy, record_and_continue, reraise
from ._process import VideoResult, process_video
from ._recipe import Recipe, RecipeError, load_recipe
from ._fingerprint import row_fingerprint
from ._interrupts import Interrupted
from ._stats import Stats, write_json_atomic
from ._runner import ExecutionChoice, RunStats, check_output, choose_execution, run

__all__ = ["SKIPPED", "VIDEO_SUFFIXES", "ClipEncoder", "ClipPipeline", "ClipResult", "ErrorPolicy", "ExecutionChoice", "InputScan", "InputVideo", "Interrupted", "Recipe", "RecipeError",
           "RunPlan", "StreamPlan", "plan_stream", "RunStats", "SkippedEntry", "Stats", "VideoResult", "check_output", "choose_execution", "format_plan", "iter_inputs", "list_inputs",
           "limit_threads", "load_recipe", "parse_extensions", "plan_run", "process_video", "record_and_continue", "reraise",
           "row_fingerprint", "run", "scan_inputs", "write_json_atomic"]
