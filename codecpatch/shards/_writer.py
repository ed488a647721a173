"""Writing token shards: rolling Parquet files sized in bytes, each written under a temporary name and
renamed when complete, a manifest that lists finished shards and inputs, and an error table.

Rows of one input always land in one shard (shards roll over only between inputs), so an input is either
wholly in a finished shard (listed in ``inputs_done``) or not at all: a crashed run resumes by skipping the
done inputs and redoing the rest, without duplicates.

Commit points are signal-safe: SIGINT/SIGTERM arriving while rows are appended or a shard is finished is
held until the writer's bookkeeping matches the files, then delivered. The manifest is the only thing that
publishes a shard: a shard file it does not list (a kill between the rename and the manifest write) is
removed on the next start, and an open shard whose write failed is discarded, never finished.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ._schema import COLUMNS, SCHEMA_VERSION, TOKEN_VALUES_PATH, SampleRow, rows_to_table, token_schema

MANIFEST = "_manifest.json"
ERRORS = "_errors.parquet"
_TEMP_SUFFIX = ".tmp"
_ERROR_SCHEMA = pa.schema([("input", pa.string()), ("stage", pa.string()), ("kind", pa.string()), ("message", pa.string())])


class RecipeMismatchError(ValueError):
    """A folder's shards were written with settings that change the rows differently from this run's."""


#: Signals whose delivery is held while the writer is between two consistent states.
_DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_deferral = threading.local()


@contextmanager
def signals_deferred():
    """Hold SIGINT/SIGTERM until the block ends, then deliver them to the handlers that were installed.

    Used around every commit point (rows appended + bookkeeping, shard rename + manifest write), so an
    interrupt never leaves rows in a shard that the bookkeeping does not know about. Re-entrant; a no-op
    outside the main thread (only it receives Python signal handlers)."""
    if threading.current_thread() is not threading.main_thread() or getattr(_deferral, "depth", 0) > 0:
        _deferral.depth = getattr(_deferral, "depth", 0) + 1
        try:
            yield
        finally:
            _deferral.depth -= 1
        return
    received: list[int] = []
    # A handler installed outside Python (getsignal gives None) could not be put back: such a signal is not held.
    held = [signum for signum in _DEFERRED_SIGNALS if signal.getsignal(signum) is not None]
    previous = {signum: signal.signal(signum, lambda signum, _frame: received.append(signum)) for signum in held}
    _deferral.depth = 1
    try:
        yield
    finally:
        _deferral.depth = 0
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):  # deliver each held signal once, now that the state is consistent
            os.kill(os.getpid(), signum)


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + _TEMP_SUFFIX)
    temporary.write_bytes(data)
    os.replace(temporary, path)


@dataclass
class Manifest:
    """What a shard directory holds. Written atomically after every finished shard.

    Attributes:
        schema_version: version of the row schema.
        package_version: codecpatch version that wrote it.
        recipe: the run's configuration, as given.
        fingerprint: {"section.key": value} of every setting that changes the rows (and "dim"); a run with
            a different fingerprint is refused (``RecipeMismatchError``) unless it overwrites the folder.
        dim: token width.
        shards: [{"file", "rows", "bytes"}] of finished shards, in order.
        inputs_done: ids of inputs whose rows are all in finished shards (or that failed and were recorded).
        streams: live streams written here: stream id -> {"windows": windows committed, ...} (what a
            restarted ``codecpatch stream`` continues numbering from).
        columns: every column's meaning, unit and null meaning (``COLUMNS``).
    """

    schema_version: int = SCHEMA_VERSION
    package_version: str = ""
    recipe: dict = field(default_factory=dict)
    fingerprint: dict = field(default_factory=dict)
    dim: int = 0
    shards: list[dict] = field(default_factory=list)
    inputs_done: list[str] = field(default_factory=list)
    streams: dict = field(default_factory=dict)
    columns: dict = field(default_factory=lambda: dict(COLUMNS))
    ledger: str = ""
    summary: dict = field(default_factory=dict)

    @staticmethod
    def read(directory, gather: bool = True) -> "Manifest | None":
        """The manifest of a location (a folder or a URI). With ``ledger = "units"`` (batch runs) and ``gather``
        the shards and inputs done are those of the unit records now, so it is current even while a run
        writes (``gather=False``: the header alone, without reading the records)."""
        from ._store import Store

        store = Store.at(directory)
        raw = store.read_bytes(MANIFEST)
        if raw is None:
            return None
        data = json.loads(raw)
        if data.get("schema_version") not in range(1, SCHEMA_VERSION + 1):  # older folders stay readable
            raise ValueError(f"{store.uri(MANIFEST)}: schema version {data.get('schema_version')} is not one of 1..{SCHEMA_VERSION}")
        known = {f.name for f in fields(Manifest)}
        manifest = Manifest(**{k: v for k, v in data.items() if k in known})  # keys a newer version added are left out
        if manifest.ledger == "units" and gather:
            from ._units import read_unit_records

            records = read_unit_records(store)
            manifest.shards = [shard for record in records for shard in record.shards]
            manifest.inputs_done = [name for record in records for name in record.inputs_done]
        return manifest

    def write(self, directory) -> None:
        from ._store import Store

        Store.at(directory).write_bytes(MANIFEST, (json.dumps(self.__dict__, indent=2) + "\n").encode())


class ShardWriter:
    """Append clip samples input by input; finished shards appear atomically.

    Args:
        directory: output folder (created). If it holds a manifest, the run resumes: stale temporary files
            are removed, numbering continues, and ``done`` lists the inputs to skip.
        dim: token width D.
        target_bytes: roll over to a new shard once the current one reaches this size (default ~256 MB).
        patch_pixels: bytes per stored pixel patch (3 * P * P) when pixels are stored, else None.
        recipe: configuration recorded in the manifest.
        fingerprint: {"section.key": value} of the settings that change the rows. A folder written with a
            different fingerprint (or token width) is refused with ``RecipeMismatchError`` naming the keys.
        implied: {"section.key": value} a recorded fingerprint that lacks the key was made with (settings
            added, or whose default changed, after folders were written; see ``_check_fingerprint``).
        overwrite: delete what a previous run wrote here (shards, manifest, errors and ``also_remove``)
            and start afresh instead of resuming.
        also_remove: other file names the caller owns in the folder, removed by ``overwrite``.
    """

    def __init__(self, directory: str | os.PathLike, dim: int, *, target_bytes: int = 256 * 2**20,
                 patch_pixels: int | None = None, with_text: bool = False, recipe: dict | None = None,
                 fingerprint: dict | None = None, implied: Mapping[str, object] | None = None, overwrite: bool = False,
                 also_remove: tuple[str, ...] = ()) -> None:
        from .. import __version__

        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_folder(self.directory)  # one writer per folder: a second would delete our open shard
        try:
            self.schema = token_schema(dim, patch_pixels, with_text)
            self.target_bytes = target_bytes
            fingerprint = {**(fingerprint or {}), "dim": dim}
            if overwrite:
                self._remove_previous_run(also_remove)
            for stale in self.directory.glob(f"*{_TEMP_SUFFIX}"):
                stale.unlink()  # a shard or manifest a crash left half-written
            previous = Manifest.read(self.directory)
            if previous is not None and previous.schema_version != SCHEMA_VERSION:
                raise ValueError(f"{self.directory}: holds schema version {previous.schema_version} shards; this version "
                                 f"writes {SCHEMA_VERSION}: write to a new folder (or overwrite)")
            if previous is not None:
                _check_fingerprint(self.directory, previous, fingerprint, implied)
                listed = {s["file"] for s in previous.shards}
                for orphan in self.directory.glob("shard-*.parquet"):
                    if orphan.name not in listed:  # renamed, but killed before the manifest published it
                        orphan.unlink()
                previous.fingerprint = previous.fingerprint or fingerprint
            self.manifest = previous or Manifest(package_version=__version__, recipe=recipe or {}, fingerprint=fingerprint, dim=dim)
            self.errors = ErrorLog(self.directory)
        except BaseException:
            self._lock.close()  # a writer that could not start must not keep the folder
            raise
        self._writer: pq.ParquetWriter | None = None
        self._current: Path | None = None
        self._current_rows = 0
        self._current_inputs: list[str] = []
        self._current_streams: dict[str, dict] = {}
        self._opened_at = 0.0
        self._broken = False  # a write into the open shard failed: it is discarded, never finished

    def _remove_previous_run(self, also_remove: tuple[str, ...]) -> None:
        """``overwrite``: delete the files a previous run wrote (only codecpatch's own names)."""
        names = [MANIFEST, ERRORS, *also_remove]
        for path in [*self.directory.glob("shard-*.parquet"), *(self.directory / n for n in names)]:
            path.unlink(missing_ok=True)

    @property
    def done(self) -> set[str]:
        return set(self.manifest.inputs_done)

    @property
    def has_open_shard(self) -> bool:
        """Rows are waiting in a shard that is not finished yet (they are not durable until it is)."""
        return self._writer is not None

    def add_input(self, input_id: str, rows: list[SampleRow]) -> None:
        """Write all rows of one input (possibly none: it still counts as done once its shard finishes)."""
        with signals_deferred():
            self._write(rows)
            self._current_inputs.append(input_id)
            if self._writer is not None and self._current.stat().st_size >= self.target_bytes:
                self._finish_shard()
            elif self._writer is None:  # nothing written yet (empty input): done right away
                self._mark_done([input_id])
                self._current_inputs.clear()

    def add_rows(self, rows: list[SampleRow], stream: tuple[str, dict] | None = None) -> None:
        """Append rows that belong to no tracked input (a live stream's windows). They become visible when
        their shard finishes (size rollover, ``roll()`` or ``close()``), and ``stream`` = (stream id, state)
        is then recorded in the manifest's ``streams``."""
        with signals_deferred():
            self._write(rows)
            if stream is not None:
                if self._writer is None:  # nothing pending (e.g. a failed window): the state is final already
                    self.manifest.streams[stream[0]] = dict(stream[1])
                    self.manifest.write(self.directory)
                else:
                    self._current_streams[stream[0]] = dict(stream[1])
            if self._writer is not None and self._current.stat().st_size >= self.target_bytes:
                self._finish_shard()

    def warm_up(self) -> None:
        """Write one blank row to memory with this writer's settings: pyarrow's first Parquet write costs
        ~0.2 s of set-up, which a live stream would otherwise add to its first window's latency."""
        dim = self.schema.field("tokens").type.value_type.list_size
        pixels = self.schema.field("pixels").type.value_type.list_size if "pixels" in self.schema.names else None
        blank = SampleRow(video_id="warm-up", source="", clip_index=0, clip_start=0.0, clip_end=0.0, fps=None, width=0, height=0,
                          codec="", mode="", budget="", encoder="", compressors="", n_dense=1, n_selected=1,
                          tokens=np.zeros((1, dim), np.float16), positions=np.zeros((1, 3), np.int32), frame_types=("I",),
                          pixels=np.zeros((1, pixels), np.uint8) if pixels else None, text="" if "text" in self.schema.names else None)
        sink = pa.BufferOutputStream()
        with pq.ParquetWriter(sink, self.schema, **self._parquet_options()) as writer:
            writer.write_table(rows_to_table([blank], self.schema))

    def _write(self, rows: list[SampleRow]) -> None:
        """Append rows to the open shard (opening one if needed); nothing happens for no rows."""
        if not rows:
            return
        table = rows_to_table(rows, self.schema)
        if self._writer is None:
            self._open_shard()
        try:
            self._writer.write_table(table)
        except BaseException:
            self._broken = True  # the shard may hold part of this table: it must never be published
            raise
        self._current_rows += table.num_rows

    def roll(self) -> None:
        """Finish the open shard now (time-based rotation); nothing happens when no shard is open."""
        if self._writer is not None:
            with signals_deferred():
                self._finish_shard()

    @property
    def open_shard_seconds(self) -> float:
        """Seconds since the open shard got its first row (0.0 when no shard is open)."""
        return time.monotonic() - self._opened_at if self._writer is not None else 0.0

    def add_error(self, input_id: str, stage: str, kind: str, message: str, stream: tuple[str, dict] | None = None) -> None:
        """Record a failed input: it goes to ``_errors.parquet`` and counts as done (a rerun skips it). With
        ``stream`` = (stream id, state), ``input_id`` is a live stream's window: it is recorded and the
        stream's state kept as ``add_rows`` does, but no input is marked done."""
        with signals_deferred():
            self.errors.add(input_id, stage, kind, message)
            self.errors.flush()
            if stream is not None:
                self.add_rows([], stream=stream)
            elif self._writer is None:
                self._mark_done([input_id])
            else:
                self._current_inputs.append(input_id)

    def close(self) -> Manifest:
        """Finish the open shard (if any), release the folder and return the final manifest."""
        try:
            with signals_deferred():
                if self._writer is not None and self._broken:
                    self._discard_shard()
                elif self._writer is not None:
                    self._finish_shard()
                self.errors.flush()
                self.manifest.write(self.directory)
        finally:
            if self._lock is not None:
                self._lock.close()  # closing the file releases the lock
                self._lock = None
        return self.manifest

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _open_shard(self) -> None:
        name = f"shard-{len(self.manifest.shards):05d}.parquet"
        self._current = self.directory / (name + _TEMP_SUFFIX)
        self._writer = pq.ParquetWriter(self._current, self.schema, **self._parquet_options())
        self._current_rows = 0
        self._opened_at = time.monotonic()

    @staticmethod
    def _parquet_options() -> dict:
        # Dictionary encoding silently blocks byte-stream-split, so it is off for the numeric columns.
        return dict(compression="zstd",
                    use_dictionary=["sample_id", "video_id", "source", "codec", "mode", "budget", "encoder", "compressors", "frame_types"],
                    column_encoding={TOKEN_VALUES_PATH: "BYTE_STREAM_SPLIT"})

    def _discard_shard(self) -> None:
        """Drop the open shard after a failed write; its inputs are not done, so a rerun redoes them."""
        try:
            self._writer.close()
        except Exception:
            pass
        self._current.unlink(missing_ok=True)
        self._writer, self._current, self._broken = None, None, False
        self._current_inputs, self._current_streams = [], {}

    def _finish_shard(self) -> None:
        self._writer.close()
        final = self._current.with_name(self._current.name.removesuffix(_TEMP_SUFFIX))
        os.replace(self._current, final)
        self.manifest.shards.append({"file": final.name, "rows": self._current_rows, "bytes": final.stat().st_size})
        self._writer, self._current = None, None
        self.manifest.streams.update(self._current_streams)
        self._current_streams = {}
        self._mark_done(self._current_inputs)
        self._current_inputs = []

    def _mark_done(self, inputs: list[str]) -> None:
        self.manifest.inputs_done.extend(inputs)
        self.manifest.write(self.directory)


def _check_fingerprint(directory: Path, previous: Manifest, fingerprint: dict, implied: Mapping[str, object] | None = None) -> None:
    """Refuse to add rows made with other settings to a folder (before any work is done).

    A key the folder's recorded fingerprint holds must have the same value now. A key it lacks was not a
    setting yet when the folder was written (or held the value that leaves it out): it is compared only when
    ``implied`` says which value the folder's rows were made with, and a different value now is refused too
    (e.g. ``patchify.block_size``, 8 in folders written before its default became 16)."""
    recorded = previous.fingerprint or ({"dim": previous.dim} if previous.dim else {})
    implied = dict(implied or {}) if previous.fingerprint else {}
    there = lambda key: recorded.get(key, implied.get(key))  # noqa: E731 - an absent key holds its implied value
    now = lambda key: fingerprint.get(key, implied.get(key))  # noqa: E731
    differing = [key for key in sorted(set(recorded) | set(implied)) if there(key) != now(key)]
    if differing:
        changes = "; ".join(f"{key}: {there(key)!r} there, {now(key)!r} now" for key in differing)
        raise RecipeMismatchError(f"{directory} holds shards made with other settings ({changes}). Write to a new "
                                  "output folder, resume with those settings as they were there, or pass --overwrite "
                                  "to delete its shards and start again")


LOCK = "_lock"


class FolderInUseError(RuntimeError):
    """Another writer (a running batch or stream) holds the shard folder."""


def _lock_folder(directory: Path):
    """An exclusive advisory lock on ``directory/_lock``, held while the returned file stays open."""
    import fcntl

    handle = open(directory / LOCK, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise FolderInUseError(f"{directory}: another codecpatch run is writing shards here (it holds {directory / LOCK})") from None
    return handle


class ErrorLog:
    """``_errors.parquet``: input, stage, error kind, message. Rewritten atomically on every flush."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / ERRORS
        self.records: list[dict] = pq.read_table(self.path).to_pylist() if self.path.exists() else []
        self._dirty = False

    def add(self, input_id: str, stage: str, kind: str, message: str) -> None:
        self.records.append({"input": input_id, "stage": stage, "kind": kind, "message": message})
        self._dirty = True

    def flush(self) -> None:
        if not self._dirty:
            return
        temporary = self.path.with_name(self.path.name + _TEMP_SUFFIX)
        pq.write_table(pa.Table.from_pylist(self.records, schema=_ERROR_SCHEMA), temporary)
        os.replace(temporary, self.path)
        self._dirty = False
