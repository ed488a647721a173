"""Running a recipe over many inputs: in-process or on Ray, resumable, with deadlines, progress and stats.

Results are committed to the shards as workers finish them (a slow video holds nothing back), and the open
shard is finished at least every ``output.commit_seconds``, so a killed run keeps all but that much work.
The rows are the same for any worker count; their order in the shards follows completion. A video still
running ``deadline_s`` after it started (worker start-up excluded) has its worker process killed (native
decode hangs cannot be interrupted in-process) and is recorded as timed out. SIGINT/SIGTERM stop a run
cleanly: what finished is committed, Ray and its temp folder are removed, and ``Interrupted`` carries the
exit status (128 + signal number).
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from ..decode import redact_text
from ..shards import ShardWriter
from ._fingerprint import row_fingerprint
from ._inputs import InputVideo
from ._interrupts import Interrupted, interrupts_raise
from ._local_ray import start_ray, stop_ray
from ._process import VideoResult, encode_and_compress, limit_threads, pipeline_for, process_video, token_dim
from ._recipe import Recipe
from ._stats import Stats, write_json_atomic

STATS = "_stats.json"
#: ``workers = "auto"`` starts Ray only for at least this many inputs to do (and two or more CPUs): starting
#: a local Ray costs 5-9 s, several videos' worth of in-process work.
AUTO_RAY_MIN_INPUTS = 8
#: A Ray task that has not even started this long after its deadline would have run out is timed out too.
_START_ALLOWANCE_S = 120


@dataclass(frozen=True)
class ExecutionChoice:
    """How a run executes: ``workers`` Ray workers (0 = in-process; None = as many as the joined cluster
    has CPUs) and why, in words."""

    workers: int | None
    reason: str


def choose_execution(execution, todo: int, cpus: int | None = None) -> ExecutionChoice:
    """Resolve ``execution.workers`` (an int or "auto") for ``todo`` inputs left on ``cpus`` CPUs."""
    cpus = cpus if cpus is not None else len(os.sched_getaffinity(0))
    if todo == 0:
        return ExecutionChoice(0, "nothing to do: Ray not started")
    if execution.workers != "auto":
        if execution.workers == 0:
            return ExecutionChoice(0, "in-process (workers = 0)")
        return ExecutionChoice(execution.workers, f"Ray, {execution.workers} workers (workers = {execution.workers})")
    if execution.address:
        return ExecutionChoice(None, f"Ray cluster at {execution.address}, one task per CPU (workers = auto)")
    per_cpu = max(1, int(cpus // execution.decode_cpus))
    if execution.encode_gpus > 0:
        return ExecutionChoice(per_cpu, f"Ray, {per_cpu} workers (workers = auto; encode_gpus needs Ray)")
    if cpus < 2:
        return ExecutionChoice(0, "in-process (workers = auto: one CPU)")
    if todo < AUTO_RAY_MIN_INPUTS:
        return ExecutionChoice(0, f"in-process (workers = auto: {todo} input{'s' * (todo != 1)} to do, Ray from {AUTO_RAY_MIN_INPUTS})")
    return ExecutionChoice(per_cpu, f"Ray, {per_cpu} workers (workers = auto: {todo} inputs, {cpus} CPUs)")


@dataclass
class RunStats(Stats):
    """Counts and timings of a run (saved as ``_stats.json`` beside the shards, all runs of the folder)."""

    started_at: str = ""
    execution: str = ""
    interrupted: str = ""
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
        self.add_stage_seconds(result.stage_seconds)

    def to_dict(self) -> dict:
        data = {k: v for k, v in self.__dict__.items()}
        data["stage_seconds"] = {k: round(v, 3) for k, v in self.stage_seconds.items()}
        data["errors_by_kind"] = dict(self.errors_by_kind)
        data["videos_per_second"] = round((self.processed + self.failed) / self.seconds, 3) if self.seconds else None
        data["tokens_per_second"] = round(self.n_tokens / self.seconds, 1) if self.seconds else None
        return data


#: Counts that ``_stats.json``'s totals sum over runs.
_SUMMED = ("processed", "failed", "partial", "clips", "frames", "n_dense", "n_patches", "n_tokens", "seconds")


def save_stats(output: Path, stats: RunStats) -> dict:
    """Append this run to ``_stats.json`` ({"runs": [one dict per run, oldest first], "totals": ...}) and
    write it atomically; returns what was written. Totals sum the runs' counts; ``inputs`` is the latest run's."""
    path = output / STATS
    runs: list[dict] = []
    try:
        previous = json.loads(path.read_text())
        runs = list(previous.get("runs", [])) if isinstance(previous, dict) else []
    except (OSError, ValueError):
        pass
    runs.append(stats.to_dict())
    totals: dict = {key: sum(run.get(key) or 0 for run in runs) for key in _SUMMED}
    totals["seconds"] = round(totals["seconds"], 3)
    errors: Counter = Counter()
    partial_inputs: dict = {}
    for past in runs:
        errors.update(past.get("errors_by_kind", {}))
        partial_inputs.update(past.get("partial_inputs", {}))
    totals.update(runs=len(runs), inputs=stats.inputs, errors_by_kind=dict(errors), partial_inputs=partial_inputs)
    data = {"totals": totals, "runs": runs}
    write_json_atomic(path, data)
    return data


def run(recipe: Recipe, inputs: list[InputVideo], output: str | os.PathLike, *, progress: bool | None = None,
        recipe_record: dict | None = None, overwrite: bool = False) -> RunStats:
    """Process ``inputs`` into shards under ``output``; a rerun skips inputs already committed.

    A folder written with settings that change the rows differently is refused (``RecipeMismatchError``)
    before any work, unless ``overwrite`` deletes what it holds. SIGINT/SIGTERM raise ``Interrupted`` after
    committing what finished."""
    output = Path(output)
    with interrupts_raise():
        writer = ShardWriter(output, token_dim(recipe), target_bytes=int(recipe.output.shard_mb * 2**20),
                             patch_pixels=3 * recipe.patchify.patch ** 2 if recipe.output.store_pixels else None,
                             with_text=any(i.text for i in inputs), recipe=recipe_record or recipe.model_dump(),
                             fingerprint=row_fingerprint(recipe), overwrite=overwrite, also_remove=(STATS,))
        stats = RunStats(inputs=len(inputs), started_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        todo = [i for i in inputs if i.video_id not in writer.done]
        stats.skipped_done = len(inputs) - len(todo)
        choice = choose_execution(recipe.execution, len(todo))
        stats.execution = choice.reason
        started = time.perf_counter()
        show = (os.isatty(2) if progress is None else progress)
        bar = tqdm(total=len(todo), unit="video", disable=not show, dynamic_ncols=True)
        results: Iterator[VideoResult | None] = iter(())
        try:
            if choice.workers == 0:
                stats.resources = {"in_process": {"runs": "decode, patchify, encode, compress"}}
                results = _in_process(todo, recipe)
            else:
                results = _on_ray(todo, recipe, stats, choice.workers)
            for result in results:
                if result is not None:  # None: a tick while workers are busy
                    if result.error:
                        writer.add_error(result.video_id, *result.error)
                    else:
                        writer.add_input(result.video_id, result.rows)
                    stats.add(result)
                    elapsed = time.perf_counter() - started
                    bar.set_postfix(tok_s=f"{stats.n_tokens / max(elapsed, 1e-9):.0f}", clips=stats.clips, errors=stats.failed,
                                    refresh=False)
                    bar.update(1)
                if writer.open_shard_seconds >= recipe.output.commit_seconds:
                    writer.roll()  # bounds what a kill -9 can lose
        except Interrupted as interrupt:
            stats.interrupted = interrupt.signal_name
            raise
        finally:
            bar.close()
            writer.close()  # commit what finished first; stopping Ray can take seconds
            stats.seconds = time.perf_counter() - started
            save_stats(output, stats)
            if hasattr(results, "close"):
                results.close()  # stops Ray and removes its temp folder
    return stats


def _in_process(todo: list[InputVideo], recipe: Recipe) -> Iterator[VideoResult]:
    for item in todo:
        yield process_video(item, recipe)


class StartLog:
    """A small Ray actor: video tasks report here when they start running, so a deadline counts the
    video's own running time and not the time its worker took to start (process spawn, imports)."""

    def __init__(self) -> None:
        self._started: list[int] = []

    def started(self, index: int) -> None:
        self._started.append(index)

    def take(self) -> list[int]:
        started, self._started = self._started, []
        return started


def _on_ray(todo: list[InputVideo], recipe: Recipe, stats: "RunStats", workers: int | None) -> Iterator[VideoResult | None]:
    """Submit one task per video (bounded in flight), yield results as they finish (None about once a
    second while none does, so the caller can commit on time)."""
    import ray

    execution = recipe.execution
    split = execution.encode_gpus > 0
    local_cpus = (workers or 1) * execution.decode_cpus + (execution.encoders * execution.encode_cpus if split else 0)
    started_here = start_ray(execution.address, local_cpus, execution.gpus)
    try:
        if workers is None:  # auto on a joined cluster: one task per CPU it has
            workers = max(1, int(ray.cluster_resources().get("CPU", 1) // execution.decode_cpus))
        # One task per worker at a time by default: a queued task would only wait for a free worker.
        limit = execution.max_in_flight or max(workers, 1)
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
        in_flight: dict = {}  # ref -> index
        submitted_at: dict[int, float] = {}
        running_since: dict[int, float] = {}  # when the driver learnt that the task started running
        start_log = ray.remote(num_cpus=0)(StartLog).remote()
        start_poll = start_log.take.remote()
        # Biggest files first, so that no worker idles at the end on one long video; results are yielded as
        # they finish, so nothing waits behind a slow one.
        order = sorted(range(len(todo)), key=lambda i: (-_file_size(todo[i].path), i))
        next_submit = 0
        recipe_ref = ray.put(recipe)
        while next_submit < len(order) or in_flight:
            while len(in_flight) < limit and next_submit < len(order):
                index = order[next_submit]
                next_submit += 1
                encoder_of[index] = encoders[next_encoder % len(encoders)]
                next_encoder += 1
                in_flight[task.remote(todo[index], recipe_ref, encoder_of[index], start_log, index)] = index
                submitted_at[index] = time.monotonic()
            ready = ray.wait(list(in_flight), num_returns=1, timeout=1.0)[0] if in_flight else []
            for ref in ready:
                index = in_flight.pop(ref)
                try:
                    result = ray.get(ref)
                except (ray.exceptions.RayError, OSError) as error:
                    result = VideoResult(todo[index].video_id, error=("worker", type(error).__name__,
                                                                      redact_text(f"{todo[index].path}: {error}", todo[index].path)))
                yield result
            if ray.wait([start_poll], timeout=0)[0]:
                now = time.monotonic()
                for index in ray.get(start_poll):
                    running_since.setdefault(index, now)
                start_poll = start_log.take.remote()
            now = time.monotonic()
            for ref, index in list(in_flight.items()):
                ran = now - running_since[index] if index in running_since else None
                never_started = ran is None and now - submitted_at[index] > execution.deadline_s + _START_ALLOWANCE_S
                if (ran is not None and ran > execution.deadline_s) or never_started:
                    ray.cancel(ref, force=True)  # kills the worker process: native decode hangs stop too
                    in_flight.pop(ref)
                    if split:  # its encode call may still be running there: restart the actor so others do not queue behind it
                        ray.kill(encoder_of[index], no_restart=False)
                    what = (f"did not start within {execution.deadline_s + _START_ALLOWANCE_S:g} s" if never_started
                            else f"still running after {execution.deadline_s:g} s")
                    yield VideoResult(todo[index].video_id, error=("worker", "timeout", f"{todo[index].public_path}: {what}, worker killed"))
            if not ready:
                yield None
    finally:
        if started_here:
            stop_ray()


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


def _process_in_worker(item: InputVideo, recipe: Recipe, encode_stage=None, start_log=None, index: int = 0) -> VideoResult:
    """A Ray task (the decode stage) holding ``execution.decode_cpus`` CPUs: the libraries' own thread pools
    are held to that many threads (two workers on two cores with OpenCV, FFmpeg and torch each spawning
    per-core threads fight for the cores). With ``encode_stage`` (an EncodeStage actor) the clips' patches are
    encoded and compressed there instead of here. ``start_log`` (a StartLog actor) hears ``index`` first."""
    if start_log is not None:
        start_log.started.remote(index)  # the deadline starts now, not when the task was submitted
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
            pipeline_for(recipe).model  # loads the model now (on the actor's GPU when it has one), not on the first clip

    def encode(self, pixels, positions, sample_index, grid):
        return encode_and_compress(self.recipe, pixels, positions, sample_index, grid)

    def placement(self) -> dict:
        """Where this actor runs: the GPU ids Ray assigned and the encoder's torch device."""
        import ray

        device = "cpu"
        if self.recipe.encoder.name == "vit":
            device = str(next(pipeline_for(self.recipe).model.parameters()).device)
        return {"gpu_ids": [str(g) for g in ray.get_gpu_ids()], "device": device}
