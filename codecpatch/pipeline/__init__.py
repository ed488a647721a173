"""Ready pipelines: recipes (pipelines/*.toml), inputs, one-video processing and the resumable runner."""

from ._inputs import VIDEO_SUFFIXES, InputScan, InputVideo, SkippedEntry, list_inputs, parse_extensions, scan_inputs
from ._process import VideoResult, process_video
from ._recipe import Recipe, RecipeError, load_recipe
from ._runner import RunStats, run

__all__ = ["VIDEO_SUFFIXES", "InputScan", "InputVideo", "SkippedEntry", "parse_extensions", "scan_inputs", "Recipe", "RecipeError", "RunStats", "VideoResult", "list_inputs", "load_recipe", "process_video", "run"]
