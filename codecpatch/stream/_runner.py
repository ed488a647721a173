"""``codecpatch stream``: a live source into rolling Parquet token shards, with latency and drop accounting."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..pipeline import ClipPipeline, Recipe, Stats, row_fingerprint
from ..pipeline._fingerprint import LEGACY_VALUES
from ..shards import ShardWriter
from ._clock import iso
from ._session import StreamSession, StreamWindowResult, default_stream_id, redact

log = logging.getLogger("codecpatch.stream")
STREAM_STATS = "_stream_stats.json"
#: One JSON line per event of a window: handled ("pending": its row is in the open shard, not durable yet;
#: "failed"), then "written" (with its shard) once that shard is finished, or "lost" (its shard was never
#: finished: the run was killed; a restart appends these). At most ``stream.rotate_seconds`` of windows are
#: pending at any time, which bounds what a SIGKILL can lose. Handled lines carry frames, stream times,
#: wall-clock times (ISO 8601 UTC) and where they come from, latency and tokens.
STREAM_WINDOWS = "_stream_windows.jsonl"
#: Latency quantiles are over the latest this-many windows (a camera runs for months).
LATENCY_WINDOWS = 10_000


@dataclass
class StreamStats(Stats):
    """What a stream run did (saved as ``_stream_stats.json`` beside the shards at every shard and at the end).

    Latencies are seconds from a window's last frame decoded to its row written into the open shard;
    quantiles cover the latest ``LATENCY_WINDOWS`` windows, the max all of them.
    """

    source: str = ""
    stream_id: str = ""
    first_window: int = 0
    windows_written: int = 0
    windows_failed: int = 0
    windows_dropped: int = 0
    windows_incomplete: int = 0
    windows_lost_before: list = field(default_factory=list)  # windows a killed earlier run never committed
    frames: int = 0
    n_tokens: int = 0
    sessions: int = 0
    disconnect_count: int = 0
    disconnects: list[str] = field(default_factory=list)  # the latest reasons
    ended: str = ""
    gave_up: bool = False
    seconds: float = 0.0
    startup_s: float | None = None
    latencies: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOWS))
    latency_max_s: float | None = None
    stage_seconds: dict = field(default_factory=lambda: defaultdict(float))
    shards: int = 0

    def latency(self, quantile: float) -> float | None:
        return float(np.quantile(np.fromiter(self.latencies, float), quantile)) if self.latencies else None

    def add_latency(self, seconds: float) -> None:
        self.latencies.append(seconds)
        self.latency_max_s = seconds if self.latency_max_s is None else max(self.latency_max_s, seconds)

    def to_dict(self) -> dict:
        data = super().to_dict()
        del data["latencies"]
        data["disconnects"] = list(self.disconnects)
        data["latency_p50_s"] = _rounded(self.latency(0.5))
        data["latency_p95_s"] = _rounded(self.latency(0.95))
        data["latency_max_s"] = _rounded(self.latency_max_s)
        data["frames_per_second"] = round(self.frames / self.seconds, 2) if self.seconds else None
        return data

    def save(self, directory: Path) -> None:
        """Write ``_stream_stats.json`` atomically."""
        super().save(Path(directory) / STREAM_STATS)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def run_stream(source: str | os.PathLike, recipe: Recipe, output: str | os.PathLike, *, stream_id: str | None = None,
               max_windows: int | None = None, duration_s: float | None = None, stop: threading.Event | None = None,
               progress: bool | None = None, recipe_record: dict | None = None, overwrite: bool = False) -> StreamStats:
    """Stream ``source`` into shards under ``output`` until it ends, ``max_windows`` windows were handled,
    ``duration_s`` passed, or ``stop`` is set (Ctrl-C / SIGTERM in the CLI).

    On a stop, the window being decoded and the queued ones are processed and finished into the open shard
    with the rows before them (a short tail window gets no shard of its own; a second Ctrl-C still commits
    what is written); ``max_windows`` stops exactly at that count. A restart into the same folder continues the window numbering of the stream (``sample_id`` stays
    unique). One run writes to a folder at a time (a second one fails with FolderInUseError); a folder
    written with other row settings is refused (RecipeMismatchError) unless ``overwrite``.

    A window's row is durable once its shard is finished (``stream.rotate_seconds``, ``output.shard_mb``, a
    stop): ``_stream_windows.jsonl`` says "pending" until then and "written" after; a restart after a kill
    logs the windows that were pending as "lost" and names them.
    """
    source = os.fspath(source)
    stream_id = stream_id or default_stream_id(source)
    output = Path(output)
    pipeline = ClipPipeline(recipe)
    writer = ShardWriter(output, pipeline.token_dim, target_bytes=int(recipe.output.shard_mb * 2**20),
                         patch_pixels=3 * recipe.patchify.patch ** 2 if recipe.output.store_pixels else None,
                         recipe=recipe_record or recipe.model_dump(), fingerprint=row_fingerprint(recipe),
                         implied=LEGACY_VALUES, overwrite=overwrite,
                         also_remove=(STREAM_WINDOWS, STREAM_STATS))
    lost, last_logged = _lost_windows(output / STREAM_WINDOWS, stream_id)
    # Numbering continues after every window an earlier run handled, lost ones included, so the log stays unambiguous.
    first_window = max(int(writer.manifest.streams.get(stream_id, {}).get("windows", 0)), last_logged + 1)
    stats = StreamStats(source=redact(source), stream_id=stream_id, first_window=first_window, windows_lost_before=lost)
    session = StreamSession(source, recipe, stream_id=stream_id, first_window=first_window, pipeline=pipeline)
    stop = stop or threading.Event()
    started = time.monotonic()
    handled = 0
    show = os.isatty(2) if progress is None else progress
    bar = tqdm(total=max_windows, unit="win", disable=not show, dynamic_ncols=True, desc=stream_id[-40:])
    windows_log = open(output / STREAM_WINDOWS, "a")
    if lost:
        log.warning("%s: windows %s were lost: their shard was never finished (the previous run was killed)",
                    stream_id, _ranges(lost))
        for index in lost:
            windows_log.write(json.dumps({"window": index, "stream": stream_id, "status": "lost"}) + "\n")
        windows_log.flush()
    pending: list[int] = []  # windows whose rows are in the open shard
    redirect = logging_redirect_tqdm() if show else contextlib.nullcontext()
    try:
        with redirect, session:  # starting the session loads and runs the encoder while the decode thread opens the source
            writer.warm_up()
            for window in session.windows():
                if window is not None:
                    result = session.process(window)
                    _record(result, writer, stats, stream_id, windows_log, pending)
                    handled += 1
                    if show:
                        bar.update(1)
                        bar.set_postfix(dropped=session.counters.dropped, p95_ms=_ms(stats.latency(0.95)),
                                        reconnects=max(0, session.counters.sessions - 1), refresh=False)
                    if max_windows is not None and handled >= max_windows:
                        log.info("%s: %d windows written: stopping", stats.source, handled)
                        break  # leaving the loop stops the session; nothing after the limit is processed
                if writer.open_shard_seconds >= recipe.stream.rotate_seconds:
                    _roll(writer, stats, session, started, output, pending, windows_log)
                elapsed = time.monotonic() - started
                if not session.stopping and (stop.is_set() or (duration_s is not None and elapsed >= duration_s)):
                    log.info("%s: stopping (finishing the current window)", stats.source)
                    session.stop()  # the tail windows drain into the open shard, which close() finishes
    finally:
        bar.close()
        try:
            writer.close()
            _committed(writer, pending, stream_id, windows_log)
        finally:
            windows_log.close()
            _update(stats, session, started, writer)
            stats.save(output)
    return stats


def _ranges(indices: list[int]) -> str:
    """[3, 4, 5, 9] -> '3-5, 9'."""
    parts, start = [], None
    for position, index in enumerate(indices):
        if start is None:
            start = index
        if position + 1 == len(indices) or indices[position + 1] != index + 1:
            parts.append(f"{start}" if start == index else f"{start}-{index}")
            start = None
    return ", ".join(parts)


def _lost_windows(path: Path, stream_id: str) -> tuple[list[int], int]:
    """Windows of ``stream_id`` logged "pending" and never "written" (or already reported "lost") in the
    windows log, and the highest window number logged (-1 for none)."""
    pending: set[int] = set()
    last = -1
    if not path.exists():
        return [], last
    with open(path) as lines:
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill
            if entry.get("stream", stream_id) != stream_id or "window" not in entry:
                continue
            index = int(entry["window"])
            last = max(last, index)
            if entry.get("status") == "pending":
                pending.add(index)
            elif entry.get("status") in ("written", "lost"):
                pending.discard(index)
    return sorted(pending), last


def _committed(writer: ShardWriter, pending: list[int], stream_id: str, windows_log) -> None:
    """Once the shard holding the pending windows is finished, log them as written (durable)."""
    if pending and not writer.has_open_shard and writer.manifest.shards:
        shard = writer.manifest.shards[-1]["file"]
        for index in pending:
            windows_log.write(json.dumps({"window": index, "stream": stream_id, "status": "written", "shard": shard}) + "\n")
        windows_log.flush()
        pending.clear()


def _roll(writer: ShardWriter, stats: StreamStats, session: StreamSession, started: float, output: Path,
          pending: list[int], windows_log) -> None:
    writer.roll()
    _committed(writer, pending, stats.stream_id, windows_log)
    _update(stats, session, started, writer)
    stats.save(output)


def _update(stats: StreamStats, session: StreamSession, started: float, writer: ShardWriter) -> None:
    counters = session.counters
    stats.windows_dropped = counters.dropped
    stats.frames = counters.frames
    stats.sessions = counters.sessions
    stats.disconnect_count = counters.disconnect_count
    stats.disconnects = list(counters.disconnects)
    stats.ended = counters.ended
    stats.gave_up = counters.gave_up
    stats.seconds = round(time.monotonic() - started, 3)
    stats.startup_s = None if counters.startup_seconds is None else round(counters.startup_seconds, 3)
    stats.shards = len(writer.manifest.shards)


def _record(result: StreamWindowResult, writer: ShardWriter, stats: StreamStats, stream_id: str, windows_log,
            pending: list[int]) -> None:
    window = result.window
    state = {"windows": window.index + 1, "source": stats.source}
    if not window.complete:
        stats.windows_incomplete += 1
    entry = {"window": window.index, "stream": stream_id, "session": window.session, "frames": result.n_frames,
             "time_start": result.time_start, "time_end": result.time_end, "complete": window.complete}
    if window.clock is not None:
        entry.update(wallclock_start=iso(window.clock.start), wallclock_end=iso(window.clock.end), wallclock_source=window.clock.source)
    if result.clip is None:
        stage, kind, message = result.error
        writer.add_error(f"{stream_id}#{window.index}", stage, kind, message, stream=(stream_id, state))
        stats.windows_failed += 1
        log.error("%s", message)
        entry.update(status="failed", error=kind)
        windows_log.write(json.dumps(entry) + "\n")
    else:
        writer.add_rows([result.clip.row], stream=(stream_id, state))
        latency = time.monotonic() - window.last_decoded_at
        stats.add_latency(latency)
        stats.windows_written += 1
        stats.n_tokens += result.clip.tokens.n_tokens
        stats.add_stage_seconds(result.clip.stage_seconds)
        entry.update(status="pending", latency_s=round(latency, 4), n_tokens=result.clip.tokens.n_tokens)
        windows_log.write(json.dumps(entry) + "\n")  # before a size roll-over can make it "written"
        pending.append(window.index)
        _committed(writer, pending, stream_id, windows_log)
    windows_log.flush()


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1000 * seconds:.0f}"
