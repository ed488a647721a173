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
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from itertools import chain, islice
from typing import Iterable, Iterator

from tqdm import tqdm

from ..decode import redact_text
from ..shards import (Store, UnitRecord, UnitWriter, check_ledger, lock_folder, open_ledger, read_unit_errors, read_unit_record, token_schema,
                      write_summary)
from ._fingerprint import LEGACY_VALUES, row_fingerprint
from ._inputs import InputVideo
from ._plan import Ledger, cut_to_limit, plan_units
from ._interrupts import Interrupted, interrupts_raise
from ._local_ray import start_ray, stop_ray
from ._process import VideoResult, encode_and_compress, limit_threads, pipeline_for, process_video, token_dim
from ._recipe import Recipe
from ._stats import Stats

STATS = "_stats.json"
#: ``workers = "auto"`` starts Ray only for at least this many inputs to do (and two or more CPUs): starting
#: a local Ray costs 5-9 s, several videos' worth of in-process work.
AUTO_RAY_MIN_INPUTS = 8
#: A stream's first inputs, read before any work, decide whether the rows have a text column.
_PEEK_INPUTS = 10_000
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
    skipped_done: int = 0  # inputs done (or failed) in an earlier run, skipped
    failed_before: int = 0  # ... of which an earlier run recorded as failed
    over_limit: int = 0  # inputs not yet done left for a later run by ``limit``
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
    units: int = 0  # work units finished in this run
    units_by_node: Counter = field(default_factory=Counter)  # node id (or host) -> units it finished in this run
    driver_bytes: int = 0  # pickled size of everything the driver received from Ray workers (summaries, records)
    unreported: int = 0  # processed inputs whose worker died before reporting them: counted, their clip/token counts not

    def add(self, result: VideoResult, clips: int | None = None) -> None:
        self._count(result, clips, +1)

    def remove(self, result: VideoResult, clips: int | None = None) -> None:
        """Undo ``add(result, clips)`` (a summary taken back: see ``Retraction``)."""
        self._count(result, clips, -1)

    def _count(self, result: VideoResult, clips: int | None, sign: int) -> None:
        if result.error:
            self.failed += sign
            self.errors_by_kind[result.error[1]] += sign
            if self.errors_by_kind[result.error[1]] <= 0:
                del self.errors_by_kind[result.error[1]]
        else:
            self.processed += sign
        self.partial += sign * bool(result.partial)
        if result.flagged and sign > 0:
            self.partial_inputs[result.video_id] = result.partial
        elif result.flagged:
            self.partial_inputs.pop(result.video_id, None)
        self.clips += sign * (len(result.rows) if clips is None else clips)
        for name in ("frames", "n_dense", "n_patches", "n_tokens"):
            setattr(self, name, getattr(self, name) + sign * getattr(result, name))
        self.add_stage_seconds({stage: sign * seconds for stage, seconds in result.stage_seconds.items()})

    def to_dict(self) -> dict:
        data = {k: v for k, v in self.__dict__.items()}
        data["stage_seconds"] = {k: round(v, 3) for k, v in self.stage_seconds.items()}
        data["errors_by_kind"] = dict(self.errors_by_kind)
        data["units_by_node"] = dict(self.units_by_node)
        data["videos_per_second"] = round((self.processed + self.failed) / self.seconds, 3) if self.seconds else None
        data["tokens_per_second"] = round(self.n_tokens / self.seconds, 1) if self.seconds else None
        return data


#: Counts that ``_stats.json``'s totals sum over runs.
_SUMMED = ("processed", "failed", "partial", "clips", "frames", "n_dense", "n_patches", "n_tokens", "seconds", "unreported")


def save_stats(output, stats: RunStats) -> dict:
    """Append this run to ``_stats.json`` ({"runs": [one dict per run, oldest first], "totals": ...}) and
    write it atomically; returns what was written. Totals sum the runs' counts; ``inputs`` is the latest run's.
    ``output``: a folder, a URI or a Store."""
    store = Store.at(output)
    runs: list[dict] = []
    try:
        previous = json.loads(store.read_bytes(STATS) or b"{}")
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
    store.write_bytes(STATS, (json.dumps(data, indent=2) + "\n").encode())
    return data


@dataclass(frozen=True)
class UnitSettings:
    """What a unit's writer needs besides the recipe (sent to every unit task)."""

    schema: object  # pyarrow Schema of the shards
    target_bytes: int
    commit_seconds: float


def check_output(recipe: Recipe, output: str | os.PathLike) -> int:
    """Check, reading only, that a run of ``recipe`` may write to ``output`` (a folder or URI): the same
    settings and token width, this schema version, a unit ledger (``RecipeMismatchError`` / ``ValueError``
    otherwise, before any work). Returns the unit size the run uses there (the output's own, once it has one)."""
    store = Store.at(output, recipe.output.s3_endpoint)
    header = check_ledger(store, token_dim(recipe), fingerprint=row_fingerprint(recipe), implied=LEGACY_VALUES)
    if header is not None and header.ledger == "units":
        return int(header.summary.get("unit_inputs", recipe.execution.unit_inputs))
    return recipe.execution.unit_inputs


def run(recipe: Recipe, inputs: Iterable[InputVideo], output: str | os.PathLike, *, progress: bool | None = None,
        recipe_record: dict | None = None, overwrite: bool = False, total: int | None = None,
        limit: int | None = None) -> RunStats:
    """Process ``inputs`` into shards under ``output`` (a folder or a URI); a rerun skips inputs already done.

    Inputs are cut into work units of ``execution.unit_inputs`` (by input order). Each unit writes its own
    shard parts and record (``_units/``) straight to the output, in-process or in a Ray task; the driver
    only hears small per-video summaries and unit records. A location written with settings that change
    the rows differently is refused (``RecipeMismatchError``) before any work, unless ``overwrite`` deletes
    what it holds. SIGINT/SIGTERM raise ``Interrupted`` after committing what finished.

    ``inputs`` may be a stream (``iter_inputs``): it is read a unit at a time as workers free up, never
    held whole; ``total`` (its length, when known) gives the progress bar its end and ETA. ``limit``: process
    at most this many inputs not yet done, the first ones in input order (units keep their boundaries; the
    rest is counted in ``stats.over_limit``)."""
    store = Store.at(output, recipe.output.s3_endpoint)
    with interrupts_raise():
        store.make()
        lock = None if store.remote else lock_folder(Path(store.root))  # one driver per local folder
        try:
            return _run_locked(recipe, inputs, store, progress, recipe_record, overwrite, total, limit)
        finally:
            if lock is not None:
                lock.close()


def _run_locked(recipe: Recipe, inputs: Iterable[InputVideo], store: Store, progress, recipe_record, overwrite,
                total: int | None, limit: int | None = None) -> RunStats:
    iterator = iter(inputs)
    head = list(islice(iterator, _PEEK_INPUTS))  # a stream's first inputs decide whether rows carry text
    with_text = any(i.text for i in head)
    dim = token_dim(recipe)
    schema = token_schema(dim, 3 * recipe.patchify.patch ** 2 if recipe.output.store_pixels else None, with_text)
    header = open_ledger(store, dim, recipe=recipe_record or recipe.model_dump(), fingerprint=row_fingerprint(recipe),
                         unit_inputs=recipe.execution.unit_inputs, overwrite=overwrite, also_remove=(STATS,), implied=LEGACY_VALUES)
    unit_inputs = header.summary.get("unit_inputs", recipe.execution.unit_inputs)  # the folder's own unit size
    ledger = Ledger.read(store, unit_inputs)
    stats = RunStats(started_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    if isinstance(inputs, (list, tuple)):
        total = len(inputs)

    def units_to_do() -> Iterator[tuple[int, list[InputVideo]]]:
        taken = 0
        for unit, items in plan_units(chain(head, iterator), unit_inputs):
            todo_items = ledger.todo(unit, items)
            stats.inputs += len(items)
            stats.skipped_done += len(items) - len(todo_items)
            stats.failed_before += ledger.errors.get(unit, 0)
            items, left_out = cut_to_limit(items, todo_items, None if limit is None else max(0, limit - taken))
            stats.over_limit += left_out
            taken += len(todo_items) - left_out
            if len(todo_items) > left_out:
                yield unit, items

    units = units_to_do()
    ahead: list = []  # units pulled to tell a few inputs from many (execution "auto")
    todo = 0
    for unit, items in units:
        ahead.append((unit, items))
        todo += len(ledger.todo(unit, items))
        if todo >= AUTO_RAY_MIN_INPUTS:
            break
    units = chain(ahead, units)
    expected = None if total is None else max(0, total - ledger.done_inputs)
    if limit is not None and expected is not None:
        expected = min(expected, limit)
    choice = choose_execution(recipe.execution, todo if todo < AUTO_RAY_MIN_INPUTS else max(todo, expected or 0))
    stats.execution = choice.reason
    settings = UnitSettings(schema, int(recipe.output.shard_mb * 2**20), recipe.output.commit_seconds)
    started = time.perf_counter()
    show = (os.isatty(2) if progress is None else progress)
    bar = tqdm(total=expected if todo >= AUTO_RAY_MIN_INPUTS else todo, unit="video", disable=not show, dynamic_ncols=True)
    events: Iterator = iter(())
    try:
        if choice.workers == 0:
            stats.resources = {"in_process": {"runs": "decode, patchify, encode, compress"}}
            events = _in_process(units, recipe, store, settings)
        else:
            events = _on_ray(units, recipe, store, settings, stats, choice.workers, ledger)
        for event in events:
            if isinstance(event, VideoSummary):
                stats.add(event.result, clips=event.clips)
                stats.unreported += event.unreported
                elapsed = time.perf_counter() - started
                bar.set_postfix(tok_s=f"{stats.n_tokens / max(elapsed, 1e-9):.0f}", clips=stats.clips, errors=stats.failed,
                                refresh=False)
                bar.update(1)
            elif isinstance(event, Retraction):
                stats.remove(event.summary.result, clips=event.summary.clips)
                stats.unreported -= event.summary.unreported
                bar.update(-1)
            elif isinstance(event, UnitRecord):
                stats.units += 1
                last = event.nodes[-1] if event.nodes else {}
                stats.units_by_node[last.get("node_id") or last.get("host", "?")] += 1
    except Interrupted as interrupt:
        stats.interrupted = interrupt.signal_name
        raise
    finally:
        bar.close()
        if hasattr(events, "close"):
            events.close()  # commits the open unit (in-process), stops Ray and removes its temp folder
        stats.seconds = time.perf_counter() - started
        if not stats.interrupted:
            write_summary(store, header)
        save_stats(store, stats)
    return stats


@dataclass(frozen=True)
class VideoSummary:
    """One finished video as the driver hears it: its result without rows (``clips`` = rows written)."""

    result: VideoResult
    clips: int
    unreported: bool = False  # recovered from a unit record after its worker died: counts unknown


@dataclass(frozen=True)
class Retraction:
    """A summary the driver counted, taken back: its worker died before committing the input (it runs again)."""

    summary: VideoSummary


def _summary(result: VideoResult) -> VideoSummary:
    return VideoSummary(replace(result, rows=[]), len(result.rows))


def _run_unit(unit: int, items: list[InputVideo], recipe: Recipe, store: Store, settings: UnitSettings,
              process) -> Iterator[VideoSummary | UnitRecord]:
    """Process one unit's inputs in input order into its own shard parts; yields each video's summary, then
    the unit record. ``process(item)`` -> VideoResult. Closing the generator early commits what finished."""
    writer = UnitWriter(store, unit, len(items), settings.schema, target_bytes=settings.target_bytes,
                        commit_seconds=settings.commit_seconds)
    done = writer.done
    try:
        for item in items:
            if item.video_id in done:
                continue
            writer.roll_if_due()
            result = process(item)
            if result.error:
                writer.add_error(result.video_id, *result.error)
            else:
                writer.add_input(result.video_id, result.rows, result.stage_seconds)
            yield _summary(result)
    except BaseException:
        writer.close()  # commits the finished inputs (a part whose write failed is dropped)
        raise
    yield writer.close()


def _in_process(units, recipe: Recipe, store: Store, settings: UnitSettings) -> Iterator:
    for unit, items in units:
        yield from _run_unit(unit, items, recipe, store, settings,
                             _fetching(lambda item: process_video(item, recipe), recipe.output.s3_endpoint))


def _fetching(process, endpoint: str | None = None):
    """``process`` for inputs anywhere: an object-store input (``s3://``, ``gs://``, ``hdfs://``) is copied to
    a local temporary file first (removed after use); its id and recorded source stay the URI."""
    import shutil
    import tempfile

    from ..shards import is_object_store, remote_filesystem

    def fetched(item: InputVideo) -> VideoResult:
        if not is_object_store(item.path):  # local files and streamed URLs (http, rtsp, ...) are opened as they are
            return process(item)
        suffix = Path(item.path.rsplit("/", 1)[-1]).suffix
        with tempfile.NamedTemporaryFile(prefix="codecpatch-input-", suffix=suffix) as local:
            try:
                filesystem, path = remote_filesystem(item.path, endpoint)
                with filesystem.open_input_stream(path) as source:
                    shutil.copyfileobj(source, local, 8 * 2**20)
                local.flush()
            except OSError as error:
                return VideoResult(item.video_id, error=("fetch", type(error).__name__, redact_text(f"{item.path}: {error}", item.path)))
            result = process(replace(item, path=local.name))
        return replace(result, rows=[replace(row, source=item.public_path) for row in result.rows])  # the input as given

    return fetched


def _process_unit(unit: int, items: list[InputVideo], recipe: Recipe, store: Store, settings: UnitSettings,
                  encode_stage=None) -> Iterator[list[VideoSummary] | UnitRecord]:
    """A Ray streaming-generator task: one unit, start to end, on ``execution.decode_cpus`` CPUs. Shards and the
    record go straight to the output. The driver receives, in order, batches of finished videos' summaries
    (about twice a second: progress moves per video) and then the unit record; no rows and no extra actor.

    A video still running ``deadline_s`` after it started is recorded as timed out, the unit commits what
    finished, its last summaries are sent, and this worker process exits (a native hang cannot be
    interrupted): the driver resubmits the unit, which resumes after the killed video."""
    limit_threads(max(1, int(recipe.execution.decode_cpus)))  # loads torch here, before any video's deadline starts
    process = _with_deadline(_fetching(partial(_process_in_worker, recipe=recipe, encode_stage=encode_stage), recipe.output.s3_endpoint),
                             recipe.execution.deadline_s)
    pending: list[VideoSummary] = []  # summaries not yet sent: one batch about twice a second, not one per video
    sent_at = finished_at = time.monotonic()
    events = _run_unit(unit, items, recipe, store, settings, process)
    for event in events:
        if isinstance(event, UnitRecord):
            if pending:
                yield pending
            yield event
            return
        pending.append(event)
        if event.result.error and event.result.error[1] == "timeout" and "worker killed" in event.result.error[2]:
            events.close()  # commits the unit's finished videos and the timeout
            yield pending
            # Ray sends a yielded item asynchronously: give it time to leave before the process goes (the driver
            # also reconciles with the unit record, should a summary be lost with the process).
            time.sleep(_EXIT_GRACE_S)
            os._exit(1)  # the hung decode thread goes with the process
        now = time.monotonic()
        # due, or videos are slow here (a batch would wait a whole video): send; fast videos are batched (a fast
        # video's summary can still wait for one slow next video)
        if now - sent_at >= _PROGRESS_SECONDS or now - finished_at >= _PROGRESS_SECONDS:
            yield pending
            pending, sent_at = [], now
        finished_at = now


#: How often a unit task sends its finished videos' summaries to the driver (seconds).
_PROGRESS_SECONDS = 0.5
#: How long a unit task whose video hung waits, after sending its last summaries, before its process exits.
_EXIT_GRACE_S = 1.0


def _process_in_worker(item: InputVideo, recipe: Recipe, encode_stage=None) -> VideoResult:
    """One video as a unit task runs it: the libraries' own thread pools held to ``execution.decode_cpus``
    threads (two workers on two cores with OpenCV, FFmpeg and torch each spawning per-core threads fight for
    the cores), encoding in ``encode_stage`` when given. The same rows as ``process_video`` in-process."""
    limit_threads(max(1, int(recipe.execution.decode_cpus)))
    return _video_processor(recipe, encode_stage)(item)


def _video_processor(recipe: Recipe, encode_stage):
    """``item`` -> VideoResult, encoding in ``encode_stage`` (an EncodeStage actor) when given."""
    if encode_stage is None:
        return lambda item: process_video(item, recipe)
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

    return lambda item: process_video(item, recipe, encoder=encoder)


def _with_deadline(process, deadline_s: float):
    """Run ``process(item)`` in a thread; past ``deadline_s`` give up on it with a timeout result (the
    caller then ends the process, which is the only way to stop a native decode hang)."""
    import threading

    def bounded(item: InputVideo) -> VideoResult:
        box: list = []
        thread = threading.Thread(target=lambda: box.append(_catching(process, item)), daemon=True)
        thread.start()
        thread.join(deadline_s)
        if thread.is_alive():
            return VideoResult(item.video_id, error=("worker", "timeout",
                                                     f"{item.public_path}: still running after {deadline_s:g} s, worker killed"))
        outcome = box[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return bounded


def _catching(process, item):
    try:
        return process(item)
    except BaseException as error:  # re-raised in the unit's thread
        return error


def _on_ray(units, recipe: Recipe, store: Store, settings: UnitSettings, stats: "RunStats",
            workers: int | None, ledger: Ledger | None = None) -> Iterator:
    """Submit one streaming task per unit (bounded in flight); yield video summaries as units stream them
    (about twice a second per unit) and unit records as units finish. A unit whose worker died is resubmitted
    (it resumes from its record), after the summaries its worker took with it are recovered from that record
    (``_reconciled``); one that died ``retries`` + 1 times without finishing a video has its remaining inputs
    recorded as failed, and the run goes on."""
    import ray

    execution = recipe.execution
    split = execution.encode_gpus > 0
    local_cpus = (workers or 1) * execution.decode_cpus + (execution.encoders * execution.encode_cpus if split else 0)
    started_here = start_ray(execution.address, local_cpus, execution.gpus)
    try:
        if workers is None:  # auto on a joined cluster: one task per CPU it has
            workers = max(1, int(ray.cluster_resources().get("CPU", 1) // execution.decode_cpus))
        limit = execution.max_in_flight or max(workers, 1)
        task = ray.remote(num_cpus=execution.decode_cpus, max_retries=0)(_process_unit)
        encoders: list = [None]
        if split:  # the encode stage: long-lived actors that hold the model on their GPU
            _check_encode_resources(execution, ray.cluster_resources())
            actor = ray.remote(num_cpus=execution.encode_cpus, num_gpus=execution.encode_gpus, max_restarts=-1,
                               max_task_retries=execution.retries)(EncodeStage)
            encoders = [actor.remote(recipe) for _ in range(execution.encoders)]
        stats.resources = {"decode": {"CPU": execution.decode_cpus, "tasks_at_once": limit, "unit_inputs": execution.unit_inputs,
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
        recipe_ref = ray.put(recipe)
        # read a unit at a time (a stream stays a stream); with the ids its record had not done at the start, so
        # that a first death without progress counts as a failure too (retries + 1 deaths, then recorded)
        fresh = ((unit, items, 0, _todo_ids(ledger, unit, items)) for unit, items in units)
        retry: list = []  # units whose worker died, to submit again (they resume from their records)
        in_flight: dict = {}  # streaming generator -> _Attempt
        submitted = 0
        exhausted = False
        while not exhausted or retry or in_flight:
            while len(in_flight) < limit and (retry or not exhausted):
                if retry:
                    unit, items, failures, todo_ids = retry.pop()
                else:
                    nxt = next(fresh, None)
                    if nxt is None:
                        exhausted = True
                        break
                    unit, items, failures, todo_ids = nxt
                stream = task.remote(unit, items, recipe_ref, store, settings, encoders[submitted % len(encoders)])
                in_flight[stream] = _Attempt(unit, items, failures, todo_ids)
                submitted += 1
            ready = _interruptible(ray.wait, list(in_flight), num_returns=1, timeout=1.0)[0] if in_flight else []
            for stream in ready:
                attempt = in_flight[stream]
                error: BaseException | None = None
                try:
                    value = _received(_interruptible(ray.get, next(stream)), stats)
                except StopIteration:  # the stream ended: its record came last
                    value, error = None, RuntimeError(f"unit {attempt.unit}: its task ended without a unit record")
                except (ray.exceptions.RayError, OSError) as raised:
                    value, error = None, raised
                if error is not None:
                    in_flight.pop(stream)
                    if attempt.record is not None:
                        continue  # the unit finished (its record is here); its process went afterwards
                    record = read_unit_record(store, attempt.unit)
                    done_now = set(record.inputs_done) if record else set()
                    yield from _reconciled(attempt, record, store)
                    yield from _retracted(attempt, done_now)
                    todo_now = {i for i in attempt.todo_ids if i not in done_now}
                    failures = 0 if len(todo_now) < len(attempt.todo_ids) else attempt.failures + 1
                    if failures <= execution.retries:
                        retry.append((attempt.unit, attempt.items, failures, todo_now))  # resumes from its record
                    else:
                        yield from _fail_unit(attempt.unit, attempt.items, store, settings, error)
                    continue
                if isinstance(value, UnitRecord):
                    attempt.record = value
                    yield value
                else:
                    for summary in value:
                        attempt.reported[summary.result.video_id] = summary
                        yield summary
    finally:
        if started_here:
            stop_ray()


@dataclass
class _Attempt:
    """One submission of a unit: its inputs, how many deaths without progress it has had, the ids it had left
    to do when submitted, the summaries its stream has reported since (by id), and its record once received."""

    unit: int
    items: list[InputVideo]
    failures: int
    todo_ids: set[str]
    reported: dict[str, "VideoSummary"] = field(default_factory=dict)
    record: UnitRecord | None = None


def _todo_ids(ledger: Ledger | None, unit: int, items: list[InputVideo]) -> set[str]:
    return {i.video_id for i in (ledger.todo(unit, items) if ledger is not None else items)}


def _reconciled(attempt: _Attempt, record: UnitRecord | None, store: Store) -> Iterator[VideoSummary]:
    """Summaries of the inputs a dead worker committed (they are in its unit record) but whose summaries died
    with it: a failed input from the unit's error table, a processed one without its details (``unreported``:
    its rows are in the shards, its clip and token counts only in the unit record)."""
    if record is None:
        return
    lost = [i for i in record.inputs_done if i in attempt.todo_ids and i not in attempt.reported]
    if not lost:
        return
    errors = {e["input"]: e for e in read_unit_errors(store, attempt.unit)} if record.errors else {}
    for video_id in lost:
        error = errors.get(video_id)
        result = VideoResult(video_id, error=(error["stage"], error["kind"], error["message"]) if error else None)
        summary = attempt.reported[video_id] = VideoSummary(result, clips=0, unreported=error is None)
        yield summary


def _retracted(attempt: _Attempt, done_now: set[str]) -> Iterator["Retraction"]:
    """Take back the summaries a dead worker reported for inputs it never committed (their part was not finished):
    the resubmitted unit processes them again, or ``_fail_unit`` records them, and each is counted once."""
    for video_id in [i for i in attempt.reported if i not in done_now]:
        yield Retraction(attempt.reported.pop(video_id))


def _received(value, stats: RunStats):
    """Count ``value``'s pickled size as bytes the driver received; returns it."""
    import pickle

    stats.driver_bytes += len(pickle.dumps(value))
    return value


def _interruptible(call, *args, **kwargs):
    """``call(...)`` (a blocking Ray call), re-raising an ``Interrupted`` that a signal handler raised while Ray
    waited: Ray's Cython layer wraps it in a SystemError."""
    try:
        return call(*args, **kwargs)
    except SystemError as error:
        cause = error.__cause__ or error.__context__
        if isinstance(cause, Interrupted):
            raise cause from None
        raise


def _fail_unit(unit: int, items: list[InputVideo], store: Store, settings: UnitSettings, error: BaseException) -> Iterator:
    """Record every input of a unit that keeps killing its worker as failed (the driver writes this one
    record: no worker holds the unit now)."""
    writer = UnitWriter(store, unit, len(items), settings.schema, target_bytes=settings.target_bytes)
    for item in items:
        if item.video_id not in writer.done:
            result = VideoResult(item.video_id, error=("worker", type(error).__name__,
                                                       redact_text(f"{item.path}: {error}", item.path)))
            writer.add_error(item.video_id, *result.error)
            yield _summary(result)
    yield writer.close()


_PLACEMENT_TIMEOUT_S = 120


def _check_encode_resources(execution, cluster: dict) -> None:
    """Refuse at once an encode stage the cluster cannot hold (Ray would wait for it forever, silently)."""
    wanted_gpus = execution.encoders * execution.encode_gpus
    if cluster.get("GPU", 0) < execution.encode_gpus or (execution.address is None and cluster.get("GPU", 0) < wanted_gpus):
        raise RuntimeError(f"the encode stage wants {execution.encoders} actor(s) x {execution.encode_gpus:g} GPU = "
                           f"{wanted_gpus:g} GPU, but Ray has {cluster.get('GPU', 0):g} (set execution.gpus to declare GPUs "
                           "to a local Ray, or lower encoders / encode_gpus)")


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
