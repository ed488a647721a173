"""Running a recipe over many inputs: in-process or on Ray, resumable, with deadlines, progress and stats.

Results are committed to the shards in input order whatever order workers finish in, so the output is the
same for any worker count. A video still running after the deadline has its worker process killed (native
decode hangs cannot be interrupted in-process) and is recorded as timed out.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from ..decode import redact_text
from ..shards import ShardWriter
from ._inputs import InputVideo
from ._process import VideoResult, _vit, encode_and_compress, limit_threads, process_video, token_dim
from ._recipe import Recipe

STATS = "_stats.json"


@dataclass
class RunStats:
    """Counts and timings of a run (saved as ``_stats.json`` beside the shards)."""

    inputs: int = 0
    skipped_done: int = 0
    processed: int = 0
    failed: int = 0
    clips: int = 0
    frames: int = 0
    n_dense: int = 0
    n_patches: int = 0
    n_tokens: int = 0
    seconds: float = 0.0
    stage_seconds: dict = field(default_factory=lambda: defaultdict(float))
    errors_by_kind: Counter = field(default_factory=Counter)
    partial: int = 0  # inputs whose decode was partial (their rows say complete = False, or were rejected)
    partial_inputs: dict = field(default_factory=dict)  # video_id -> reasons, with limits.partial = "flag"
    resources: dict = field(default_factory=dict)  # per stage: what was declared to Ray, and where encoders run

    def add(self, result: VideoResult) -> None:
        if result.error:
            self.failed += 1
            self.errors_by_kind[result.error[1]] += 1
        else:
            self.processed += 1
        self.partial += bool(result.partial)
        if result.flagged:
            self.partial_inputs[result.video_id] = result.partial
        self.clips += len(result.rows)
        self.frames += result.frames
        self.n_dense += result.n_dense
        self.n_patches += result.n_patches
        self.n_tokens += result.n_tokens
        for stage, seconds in result.stage_seconds.items():
            self.stage_seconds[stage] += seconds

    def to_dict(self) -> dict:
        data = {k: v for k, v in self.__dict__.items()}
        data["stage_seconds"] = {k: round(v, 3) for k, v in self.stage_seconds.items()}
        data["errors_by_kind"] = dict(self.errors_by_kind)
        data["videos_per_second"] = round((self.processed + self.failed) / self.seconds, 3) if self.seconds else None
        data["tokens_per_second"] = round(self.n_tokens / self.seconds, 1) if self.seconds else None
        return data


def run(recipe: Recipe, inputs: list[InputVideo], output: str | os.PathLike, *, progress: bool | None = None,
        recipe_record: dict | None = None) -> RunStats:
    """Process ``inputs`` into shards under ``output``; a rerun skips inputs already committed."""
    output = Path(output)
    writer = ShardWriter(output, token_dim(recipe), target_bytes=int(recipe.output.shard_mb * 2**20),
                         patch_pixels=3 * recipe.patchify.patch ** 2 if recipe.output.store_pixels else None,
                         with_text=any(i.text for i in inputs), recipe=recipe_record or recipe.model_dump())
    stats = RunStats(inputs=len(inputs))
    todo = [i for i in inputs if i.video_id not in writer.done]
    stats.skipped_done = len(inputs) - len(todo)
    started = time.perf_counter()
    show = (os.isatty(2) if progress is None else progress)
    bar = tqdm(total=len(todo), unit="video", disable=not show, dynamic_ncols=True)
    try:
        if recipe.execution.workers == 0:
            stats.resources = {"in_process": {"runs": "decode, patchify, encode, compress"}}
        results = _in_process(todo, recipe) if recipe.execution.workers == 0 else _on_ray(todo, recipe, stats)
        for result in results:
            if result.error:
                writer.add_error(result.video_id, *result.error)
            else:
                writer.add_input(result.video_id, result.rows)
            stats.add(result)
            elapsed = time.perf_counter() - started
            bar.set_postfix(clips=stats.clips, tok_s=f"{stats.n_tokens / max(elapsed, 1e-9):.0f}", errors=stats.failed)
            bar.update(1)
    finally:
        bar.close()
        writer.close()
        stats.seconds = time.perf_counter() - started
        (output / STATS).write_text(json.dumps(stats.to_dict(), indent=2) + "\n")
    return stats


def _in_process(todo: list[InputVideo], recipe: Recipe) -> Iterator[VideoResult]:
    for item in todo:
        yield process_video(item, recipe)


def _on_ray(todo: list[InputVideo], recipe: Recipe, stats: "RunStats") -> Iterator[VideoResult]:
    """Submit one task per video (bounded in flight), yield results in input order."""
    import ray

    execution = recipe.execution
    split = execution.encode_gpus > 0
    local_cpus = execution.workers * execution.decode_cpus + (execution.encoders * execution.encode_cpus if split else 0)
    started_here = _start_ray(execution.address, local_cpus, execution.gpus)
    try:
        # One task per worker at a time by default: a queued task would already be counting down its deadline.
        limit = execution.max_in_flight or max(execution.workers, 1)
        task = ray.remote(num_cpus=execution.decode_cpus, max_retries=execution.retries)(_process_in_worker)
        encoders: list = [None]
        if split:  # the encode stage: long-lived actors that hold the model on their GPU
            _check_encode_resources(execution, ray.cluster_resources())
            # An actor that dies (or is killed at a video's deadline) is restarted, without limit: a clip that
            # kills it every time fails its own video after ``retries`` retried calls, and the per-video
            # deadline bounds the rest.
            actor = ray.remote(num_cpus=execution.encode_cpus, num_gpus=execution.encode_gpus, max_restarts=-1,
                               max_task_retries=execution.retries)(EncodeStage)
            encoders = [actor.remote(recipe) for _ in range(execution.encoders)]
        stats.resources = {"decode": {"CPU": execution.decode_cpus, "tasks_at_once": limit,
                                      "runs": "decode, patchify" + ("" if split else ", encode, compress")}}
        if split:
            placements = [e.placement.remote() for e in encoders]
            placed, waiting = ray.wait(placements, num_returns=len(placements), timeout=_PLACEMENT_TIMEOUT_S)
            if waiting:
                raise RuntimeError(f"{len(waiting)} of {len(encoders)} encoder actors (each {execution.encode_gpus:g} GPU, "
                                   f"{execution.encode_cpus:g} CPU) could not be placed within {_PLACEMENT_TIMEOUT_S} s; "
                                   f"the cluster has {ray.cluster_resources()}")
            stats.resources["encode"] = {"CPU": execution.encode_cpus, "GPU": execution.encode_gpus, "actors": len(encoders),
                                         "runs": "encode, compress", "placement": ray.get(placed)}
        stats.resources["cluster"] = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
        next_encoder = 0  # handed out round-robin per submitted video
        encoder_of: dict[int, object] = {}
        in_flight: dict = {}  # ref -> (index, submitted at)
        finished: dict[int, VideoResult] = {}
        # Results are committed in input order, so finished-but-unwritten results wait in memory: submission
        # stays within a window ahead of the next result to write (memory stays flat), and inside the
        # window the biggest files go first so that no worker idles at the end on one long video.
        window = 8 * limit
        sizes = [_file_size(item.path) for item in todo]
        submitted: set[int] = set()
        next_yield = 0
        recipe_ref = ray.put(recipe)
        while next_yield < len(todo):
            while len(in_flight) < limit:
                candidates = [i for i in range(next_yield, min(len(todo), next_yield + window)) if i not in submitted]
                if not candidates:
                    break
                index = max(candidates, key=lambda i: (sizes[i], -i))
                encoder_of[index] = encoders[next_encoder % len(encoders)]
                next_encoder += 1
                in_flight[task.remote(todo[index], recipe_ref, encoder_of[index])] = (index, time.monotonic())
                submitted.add(index)
            ready = ray.wait(list(in_flight), num_returns=1, timeout=1.0)[0] if in_flight else []
            for ref in ready:
                index, _ = in_flight.pop(ref)
                try:
                    finished[index] = ray.get(ref)
                except (ray.exceptions.RayError, OSError) as error:
                    finished[index] = VideoResult(todo[index].video_id, error=("worker", type(error).__name__, redact_text(f"{todo[index].path}: {error}", todo[index].path)))
            now = time.monotonic()
            for ref, (index, submitted_at) in list(in_flight.items()):
                if now - submitted_at > execution.deadline_s:
                    ray.cancel(ref, force=True)  # kills the worker process: native decode hangs stop too
                    in_flight.pop(ref)
                    if split:  # its encode call may still be running there: restart the actor so others do not queue behind it
                        ray.kill(encoder_of[index], no_restart=False)
                    finished[index] = VideoResult(todo[index].video_id, error=(
                        "worker", "timeout", f"{todo[index].public_path}: still running after {execution.deadline_s:g} s, worker killed"))
            while next_yield in finished:
                yield finished.pop(next_yield)
                next_yield += 1
    finally:
        if started_here:
            ray.shutdown()


_PLACEMENT_TIMEOUT_S = 120


def _check_encode_resources(execution, cluster: dict) -> None:
    """Refuse at once an encode stage the cluster cannot hold (Ray would wait for it forever, silently)."""
    wanted_gpus = execution.encoders * execution.encode_gpus
    if cluster.get("GPU", 0) < execution.encode_gpus or (execution.address is None and cluster.get("GPU", 0) < wanted_gpus):
        raise RuntimeError(f"the encode stage wants {execution.encoders} actor(s) x {execution.encode_gpus:g} GPU = "
                           f"{wanted_gpus:g} GPU, but Ray has {cluster.get('GPU', 0):g} (set execution.gpus to declare GPUs "
                           "to a local Ray, or lower encoders / encode_gpus)")


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _process_in_worker(item: InputVideo, recipe: Recipe, encode_stage=None) -> VideoResult:
    """A Ray task (the decode stage) holding ``execution.decode_cpus`` CPUs: the libraries' own thread pools
    are held to that many threads (two workers on two cores with OpenCV, FFmpeg and torch each spawning
    per-core threads fight for the cores). With ``encode_stage`` (an EncodeStage actor) the clips' patches are
    encoded and compressed there instead of here."""
    threads = max(1, int(recipe.execution.decode_cpus))
    limit_threads(threads)
    encoder = None
    if encode_stage is not None:
        import ray

        def encoder(patches):
            call = encode_stage.encode.remote(patches.pixels, patches.positions, patches.sample_index, patches.geometry.grid)
            try:
                return ray.get(call)
            except ray.exceptions.RayTaskError as error:  # the clip's own failure in the actor: report it as such
                cause = getattr(error, "cause", None)
                if isinstance(cause, Exception):
                    raise cause from None
                raise
    return process_video(item, recipe, encoder=encoder)  # decoder threads: the recipe's, as in-process


class EncodeStage:
    """A Ray actor for the encode stage: loads the recipe's encoder once (on its GPU when Ray assigned one
    and CUDA is there) and encodes + compresses the patches of one clip per call."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        limit_threads(max(1, int(recipe.execution.encode_cpus)))
        if recipe.encoder.name == "vit":
            _vit(recipe)  # loads the model now (on the actor's GPU when it has one), not on the first clip

    def encode(self, pixels, positions, sample_index, grid):
        return encode_and_compress(self.recipe, pixels, positions, sample_index, grid)

    def placement(self) -> dict:
        """Where this actor runs: the GPU ids Ray assigned and the encoder's torch device."""
        import ray

        device = "cpu"
        if self.recipe.encoder.name == "vit":
            device = str(next(_vit(self.recipe).parameters()).device)
        return {"gpu_ids": [str(g) for g in ray.get_gpu_ids()], "device": device}


def _start_ray(address: str | None, cpus: float, gpus: float | None = None) -> bool:
    """Join ``address`` or start a quiet local Ray (no dashboard, own temp dir, no auth token in $HOME)."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        return True
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    temp_dir = tempfile.mkdtemp(prefix="cpray", dir="/tmp")  # Ray socket paths must stay under 107 bytes
    ray.init(num_cpus=max(1, math.ceil(cpus)), num_gpus=gpus, include_dashboard=False, log_to_driver=False, configure_logging=False,
             _temp_dir=temp_dir, runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled"}})
    return True
