"""Ready pipelines: recipes (pipelines/*.toml), inputs, one-video processing and the resumable runner."""

from ._inputs import InputVideo, ignored_files, list_inputs
from ._plan import RunPlan, format_plan, plan_run
from ._process import VideoResult, process_video
from ._recipe import Recipe, RecipeError, load_recipe
from ._runner import RunStats, run

__all__ = ["InputVideo", "Recipe", "RecipeError", "RunPlan", "RunStats", "VideoResult", "format_plan", "ignored_files",
           "list_inputs", "load_recipe", "plan_run", "process_video", "run"]
