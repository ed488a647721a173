"""Ready pipelines: recipes (pipelines/*.toml), inputs, one-video processing and the resumable runner."""

from ._inputs import InputVideo, list_inputs
from ._process import VideoResult, process_video
from ._recipe import Recipe, RecipeError, load_recipe
from ._fingerprint import row_fingerprint
from ._interrupts import Interrupted
from ._runner import ExecutionChoice, RunStats, choose_execution, run

__all__ = ["ExecutionChoice", "InputVideo", "Interrupted", "Recipe", "RecipeError", "RunStats", "VideoResult", "choose_execution",
           "list_inputs", "load_recipe", "process_video", "row_fingerprint", "run"]
