"""One video through the whole pipeline: its clips through a ClipPipeline into shard rows. Runs in a worker
(or in-process); what happens to a video that fails is the caller's error policy."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from ..decode import DecodeReport
from ..shards import SampleRow
from ._clip import ClipEncoder, ClipPipeline, ClipResult, limit_threads
from ._inputs import InputVideo
from ._recipe import Recipe

if TYPE_CHECKING:
    from ..tokens import TokenSet

__all__ = ["ClipEncoder", "ClipPipeline", "ClipResult", "VideoResult", "encode_and_compress", "limit_threads",
           "pipeline_for", "process_video", "token_dim"]


@dataclass
class VideoResult:
    """What processing one input produced.

    Attributes:
        video_id: the input's id.
        rows: one SampleRow per clip.
        error: (stage, kind, message) when the input failed.
        stage_seconds: time per stage, summed over clips.
        frames: decoded frames; n_dense / n_patches / n_tokens: token counts summed over clips.
        partial: why the decode was partial (empty when it was complete); the rows say so too
            (``complete`` = False) unless the recipe's ``limits.partial`` rejected them.
        flagged: the input is to be listed as partial in the run's stats (``limits.partial = "flag"``).
    """

    video_id: str
    rows: list[SampleRow] = field(default_factory=list)
    error: tuple[str, str, str] | None = None
    stage_seconds: dict = field(default_factory=dict)
    frames: int = 0
    n_dense: int = 0
    n_patches: int = 0
    n_tokens: int = 0
    partial: list[str] = field(default_factory=list)
    flagged: bool = False


_PIPELINES: dict = {}
#: Execution settings that schedule a run and never reach a ClipPipeline.
_SCHEDULING = {"workers", "address", "deadline_s", "retries", "unit_inputs", "max_in_flight", "encoders", "gpus"}


def pipeline_for(recipe: Recipe) -> ClipPipeline:
    """The ClipPipeline of ``recipe``, built once per process (a worker handles many videos of one recipe).
    Settings of how a run is scheduled (workers, units, deadlines, ...) do not build another one."""
    key = recipe.model_dump_json(exclude={"execution": _SCHEDULING})
    if key not in _PIPELINES:
        _PIPELINES.clear()  # one recipe at a time: a new one replaces the old
        _PIPELINES[key] = ClipPipeline(recipe)
    return _PIPELINES[key]


def token_dim(recipe: Recipe) -> int:
    """Width of the tokens ``recipe`` writes (see ClipPipeline.token_dim)."""
    return pipeline_for(recipe).token_dim


def encode_and_compress(recipe: Recipe, pixels, positions, sample_index, grid) -> tuple[TokenSet, dict]:
    """The encode stage of ``recipe`` (see ClipPipeline.encode)."""
    return pipeline_for(recipe).encode(pixels, positions, sample_index, grid)


def process_video(item: InputVideo, recipe: Recipe, decoder_threads: int | None = None, encoder: ClipEncoder | None = None,
                  on_error=None) -> VideoResult:
    """Patchify, encode and compress every clip of one video.

    ``decoder_threads`` caps FFmpeg's decoder threads (None = the recipe's, ``ClipPipeline.decoder_threads``;
    give another value only to study its effect: rows of damaged files may then differ); ``encoder``
    replaces the local encode + compress (a separate encode stage). ``on_error`` is the error policy
    (codecpatch.pipeline.record_and_continue by default: bad input becomes ``result.error``; ``reraise``
    raises). Rows and messages name the source with its credentials redacted; a partial decode is marked
    on every row (``complete`` = False) and in ``result.partial``, or rejected, as ``recipe.limits.partial`` says."""
    from ._errors import record_and_continue

    pipeline = pipeline_for(recipe) if encoder is None else ClipPipeline(recipe, encoder=encoder)
    policy = on_error or record_and_continue
    result = VideoResult(item.video_id)
    source = item.public_path
    report = DecodeReport()
    stages = ["decode"]
    timer = time.perf_counter()
    try:
        for samples in pipeline.clips(item.path, report=report, decoder_threads=decoder_threads):
            result.stage_seconds["decode"] = result.stage_seconds.get("decode", 0.0) + time.perf_counter() - timer
            clip = pipeline.process(samples, video_id=item.video_id, source=source, text=item.text, stages=stages)
            for name, seconds in clip.stage_seconds.items():
                result.stage_seconds[name] = result.stage_seconds.get(name, 0.0) + seconds
            result.rows.append(replace(clip.row, frames_decoded=samples.n_frames))
            result.frames += samples.n_frames
            result.n_dense += clip.row.n_dense
            result.n_patches += clip.row.n_selected
            result.n_tokens += clip.tokens.n_tokens
            stages.append("decode")
            timer = time.perf_counter()
        if not result.rows:
            result.error = ("decode", "no_frames", f"{source}: no frame could be decoded")
        else:
            _mark_completeness(result, report, recipe.limits.partial, source)
    except Exception as error:  # noqa: BLE001 - the policy decides (record, or raise)
        result.rows = []
        result.error = policy(error, stages[-1], item.path)
    return result


def _mark_completeness(result: VideoResult, report: DecodeReport, policy: str, source: str) -> None:
    """Write the decode's completeness on every row; apply the recipe's policy to a partial decode."""
    result.partial = report.partial_reasons()
    complete = not result.partial
    result.rows = [replace(row, packets_skipped=report.packets_skipped, complete=complete) for row in result.rows]
    result.flagged = bool(result.partial) and policy == "flag"
    if result.partial and policy == "reject":
        result.rows = []
        result.error = ("decode", "partial_decode", f"{source}: partial decode rejected (limits.partial = reject): "
                                                    + "; ".join(result.partial))
