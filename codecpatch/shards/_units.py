"""Per-unit output of a batch run: each work unit writes its own shard files and a small record beside them.

Layout of an output location (a local folder or an object-store prefix)::

    _manifest.json               the run's header (recipe, fingerprint, width; ``"ledger": "units"``), rewritten
                                 as a summary when a run ends (``codecpatch shards verify`` rebuilds it)
    shard-u0000012-000.parquet   rows of unit 12, part 0 (parts roll over between inputs at ``target_bytes``
                                 or ``commit_seconds``)
    _units/u0000012.json         unit 12's record: inputs done, shards (file, rows, bytes), counts, per-stage
                                 seconds, node; rewritten (atomically, size bounded by the unit) per finished part
    _errors/u0000012.parquet     unit 12's failed inputs (input, stage, kind, message); all units' tables read
                                 together as one dataset (``read_errors``)

Only the writer of unit *u* touches unit *u*'s files, so units run anywhere without coordination. A shard
is published by its unit record: a part renamed but not yet recorded (a kill in between) is removed when
the unit next starts; at most one such part exists, the record's ``next_part``. Local files are written
under a temporary name and renamed; object stores get one complete put (an unfinished upload is invisible).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ._writer import _ERROR_SCHEMA, _TEMP_SUFFIX, ERRORS, MANIFEST, ShardWriter, signals_deferred
from ._store import Store

UNITS = "_units"
ERRORS_DIR = "_errors"


def unit_name(unit: int) -> str:
    return f"u{unit:07d}"


def unit_shard_name(unit: int, part: int) -> str:
    return f"shard-{unit_name(unit)}-{part:03d}.parquet"


@dataclass
class UnitRecord:
    """What one work unit has durably written (``_units/uNNNNNNN.json``).

    Attributes:
        unit: the unit's index (inputs ``unit * unit_inputs`` .. in input order).
        inputs: how many inputs the unit holds.
        inputs_done: ids of inputs whose rows are in the listed shards or whose error is recorded.
        errors: how many of them failed (rows in ``_errors/uNNNNNNN.parquet``).
        shards: [{"file", "rows", "bytes"}] in part order.
        next_part: the part number the unit writes next.
        clips, n_tokens: rows and tokens in the listed shards.
        stage_seconds: seconds per stage, summed over the unit's videos (all attempts).
        nodes: [{"host", "node_id", "pid"}] of each attempt that wrote here, in order.
        complete: every input of the unit is done.
    """

    unit: int
    inputs: int = 0
    inputs_done: list[str] = field(default_factory=list)
    errors: int = 0
    shards: list[dict] = field(default_factory=list)
    next_part: int = 0
    clips: int = 0
    n_tokens: int = 0
    stage_seconds: dict = field(default_factory=dict)
    nodes: list[dict] = field(default_factory=list)
    complete: bool = False

    @staticmethod
    def from_json(data: bytes) -> "UnitRecord":
        raw = json.loads(data)
        known = set(UnitRecord.__dataclass_fields__)
        return UnitRecord(**{k: v for k, v in raw.items() if k in known})

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), separators=(",", ":")) + "\n").encode()


def record_path(unit: int) -> str:
    return f"{UNITS}/{unit_name(unit)}.json"


def error_path(unit: int) -> str:
    return f"{ERRORS_DIR}/{unit_name(unit)}.parquet"


def read_unit_record(store, unit: int) -> UnitRecord | None:
    """Unit ``unit``'s record at a location (a Store, folder or URI), None before it wrote one."""
    data = Store.at(store).read_bytes(record_path(unit))
    return UnitRecord.from_json(data) if data is not None else None


def iter_unit_records(store) -> Iterator[UnitRecord]:
    """The unit records of a location (a Store, folder or URI) in listing order, one at a time. Costs one
    listing and one small read per unit."""
    store = Store.at(store)
    names = [f"{UNITS}/{name}" for name in store.list_names(UNITS) if name.endswith(".json") and name.startswith("u")]
    if not store.remote:
        blobs: Iterator = map(store.read_bytes, names)
    else:  # an object store answers each GET in ~10-20 ms: read many at once, in bounded batches
        blobs = _read_parallel(store, names)
    for data in blobs:
        if data is not None:
            yield UnitRecord.from_json(data)


def _read_parallel(store: Store, names: list[str], threads: int = 32, batch: int = 1024) -> Iterator[bytes | None]:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        for start in range(0, len(names), batch):
            yield from pool.map(store.read_bytes, names[start:start + batch])


def read_unit_records(store) -> list[UnitRecord]:
    """Every unit record of a location, by unit."""
    return sorted(iter_unit_records(store), key=lambda r: r.unit)


def read_errors(location) -> list[dict]:
    """Every recorded error of a location: the per-unit tables under ``_errors/`` and a ``_errors.parquet``
    (written by live streams and by runs before units), as dicts (input, stage, kind, message)."""
    store = Store.at(location)
    records: list[dict] = []
    legacy = store.read_bytes(ERRORS)
    if legacy is not None:
        records += pq.read_table(pa.BufferReader(legacy)).to_pylist()
    for name in store.list_names(ERRORS_DIR):
        if name.endswith(".parquet"):
            data = store.read_bytes(f"{ERRORS_DIR}/{name}")
            if data is not None:
                records += pq.read_table(pa.BufferReader(data)).to_pylist()
    return records


def read_unit_errors(location, unit: int) -> list[dict]:
    """The errors one unit recorded (``_errors/uNNNNNNN.parquet``), as dicts; [] when it recorded none."""
    data = Store.at(location).read_bytes(error_path(unit))
    return pq.read_table(pa.BufferReader(data)).to_pylist() if data is not None else []


def _node() -> dict:
    node = {"host": socket.gethostname(), "pid": os.getpid()}
    try:
        import ray

        if ray.is_initialized():
            node["node_id"] = ray.get_runtime_context().get_node_id()
    except Exception:  # Ray absent or not in a worker: the host and pid say enough
        pass
    return node


class UnitWriter:
    """Write one unit's rows into its own shard parts, in input order, and keep its record current.

    Args:
        store: the output location.
        unit: the unit's index; inputs: how many inputs it holds.
        schema: the shards' Arrow schema (``token_schema``).
        target_bytes: a part is finished once it reaches this size (between inputs).
        commit_seconds: ... or once it has held rows this long (bounds what a kill loses).

    Resuming a unit (its record exists): the part renamed after the last record write, if any, and
    temporary files are removed; ``done`` lists the inputs to skip; errors of inputs not done are dropped.
    """

    def __init__(self, store: Store, unit: int, inputs: int, schema: pa.Schema, *, target_bytes: int,
                 commit_seconds: float = float("inf")) -> None:
        self.store, self.unit, self.schema = store, unit, schema
        self.target_bytes, self.commit_seconds = target_bytes, commit_seconds
        self.record = read_unit_record(store, unit) or UnitRecord(unit=unit, inputs=inputs)
        self.record.inputs = inputs
        self.record.nodes.append(_node())
        done = set(self.record.inputs_done)
        with signals_deferred():
            orphan = unit_shard_name(unit, self.record.next_part)
            store.delete(orphan)  # renamed, but killed before the record published it
            store.delete(orphan + _TEMP_SUFFIX)
        errors = store.read_bytes(error_path(unit))
        self.errors = [e for e in pq.read_table(pa.BufferReader(errors)).to_pylist() if e["input"] in done] if errors else []
        self._writer: pq.ParquetWriter | None = None
        self._sink = None
        self._rows = 0
        self._pending: list[str] = []
        self._pending_clips = self._pending_tokens = 0
        self._opened_at = 0.0

    @property
    def done(self) -> set[str]:
        return set(self.record.inputs_done)

    def add_input(self, input_id: str, rows: list, stage_seconds: dict | None = None) -> None:
        """Append all rows of one input (possibly none); it is done once its part is finished."""
        with signals_deferred():
            for stage, seconds in (stage_seconds or {}).items():
                self.record.stage_seconds[stage] = round(self.record.stage_seconds.get(stage, 0.0) + seconds, 4)
            if rows:
                from ._schema import rows_to_table

                table = rows_to_table(rows, self.schema)
                if self._writer is None:
                    self._open()
                self._writer.write_table(table)
                self._rows += table.num_rows
                self._pending_clips += table.num_rows
                self._pending_tokens += sum(len(r.tokens) for r in rows)
            self._pending.append(input_id)
            if self._writer is None:
                self._commit()
            elif self._sink.size() >= self.target_bytes or time.monotonic() - self._opened_at >= self.commit_seconds:
                self._finish_part()

    def add_error(self, input_id: str, stage: str, kind: str, message: str) -> None:
        """Record a failed input: its row goes to the unit's error table; it counts as done."""
        with signals_deferred():
            self.errors.append({"input": input_id, "stage": stage, "kind": kind, "message": message})
            self.store.write_bytes(error_path(self.unit), _table_bytes(pa.Table.from_pylist(self.errors, schema=_ERROR_SCHEMA)))
            self.record.errors += 1
            self._pending.append(input_id)
            if self._writer is None:
                self._commit()

    def roll_if_due(self) -> None:
        """Finish the open part if it has held rows for ``commit_seconds``."""
        if self._writer is not None and time.monotonic() - self._opened_at >= self.commit_seconds:
            with signals_deferred():
                self._finish_part()

    def close(self) -> UnitRecord:
        """Finish the open part and write the record (``complete`` when every input is done)."""
        with signals_deferred():
            if self._writer is not None:
                self._finish_part()
            self.record.complete = len(set(self.record.inputs_done)) >= self.record.inputs
            self._commit()
        return self.record

    def abandon(self) -> None:
        """Drop the open part (a failed write): its inputs are not done, a rerun redoes them."""
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:
                pass
            self._sink.discard()
        self._writer, self._sink, self._pending = None, None, []

    def _open(self) -> None:
        self._sink = self.store.open_atomic(unit_shard_name(self.unit, self.record.next_part))
        self._writer = pq.ParquetWriter(self._sink.target, self.schema, filesystem=self._sink.filesystem,
                                        **ShardWriter._parquet_options())
        self._rows = 0
        self._opened_at = time.monotonic()

    def _finish_part(self) -> None:
        self._writer.close()
        name = unit_shard_name(self.unit, self.record.next_part)
        size = self._sink.publish()
        self.record.shards.append({"file": name, "rows": self._rows, "bytes": size})
        self.record.next_part += 1
        self.record.clips += self._pending_clips
        self.record.n_tokens += self._pending_tokens
        self._writer, self._sink = None, None
        self._pending_clips = self._pending_tokens = 0
        self._commit()

    def _commit(self) -> None:
        self.record.inputs_done.extend(self._pending)
        self._pending = []
        self.store.write_bytes(record_path(self.unit), self.record.to_json())


def _table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def open_ledger(location, dim: int, *, recipe: dict, fingerprint: dict, unit_inputs: int, overwrite: bool = False,
                also_remove: tuple[str, ...] = (), implied: dict):
    """Check a location before a batch run and write its header manifest; returns the Manifest.

    A location written with another fingerprint (settings that change rows, or the token width) is refused
    with ``RecipeMismatchError`` before anything is touched, unless ``overwrite`` deletes what codecpatch
    wrote there (shards, unit records, error tables, manifest and ``also_remove``); ``implied`` as in
    ``ShardWriter``. A resumed location keeps
    its own unit size (``summary["unit_inputs"]``), so unit records keep naming the same inputs."""
    from .. import __version__
    from ._writer import Manifest

    store = Store.at(location)
    fingerprint = {**fingerprint, "dim": dim}
    if overwrite:
        for name in store.list_names(""):
            if (name.startswith("shard-") and ".parquet" in name) or name in (MANIFEST, ERRORS, *also_remove):
                store.delete(name)
        store.delete_folder(UNITS)
        store.delete_folder(ERRORS_DIR)
    previous = check_ledger(store, dim, fingerprint=fingerprint, implied=implied)
    if previous is not None and previous.ledger == "units":
        return previous
    header = Manifest(package_version=__version__, recipe=recipe, fingerprint=fingerprint, dim=dim, ledger="units",
                      summary={"unit_inputs": unit_inputs})
    header.write(store)
    return header


def check_ledger(location, dim: int, *, fingerprint: dict, implied: dict):
    """Read-only check that a batch run may write to a location (the dry run and ``open_ledger`` use it):
    returns its header Manifest (None when it holds none). Refuses with a clear error, before any work:
    settings that change the rows or the token width (``RecipeMismatchError``), shards of another schema
    version, or shards written without unit records (an older version's ``inputs_done`` ledger or a live
    stream's: ``ValueError``), which a unit run would otherwise mix with its own. ``implied``: the values a
    recorded fingerprint lacking a key was made with (``codecpatch.pipeline._fingerprint.LEGACY_VALUES``)."""
    from ._schema import SCHEMA_VERSION
    from ._writer import Manifest, _check_fingerprint

    store = Store.at(location)
    previous = Manifest.read(store, gather=False)
    if previous is None:
        return None
    # What no setting can resume comes first (an older ledger, another schema), then the settings.
    if previous.ledger != "units" and (previous.shards or previous.inputs_done):
        raise ValueError(f"{store.location} holds shards written without unit records (a live stream's or an older "
                         "run's, manifest schema version "
                         f"{previous.schema_version}): write batch runs to a new output, or pass --overwrite")
    if previous.ledger == "units" and previous.schema_version != SCHEMA_VERSION:
        raise ValueError(f"{store.location} holds schema version {previous.schema_version} shards; this version writes "
                         f"{SCHEMA_VERSION}: write to a new output, or pass --overwrite")
    _check_fingerprint(store.location, previous, {**fingerprint, "dim": dim}, implied)
    return previous


def write_summary(location, header) -> dict:
    """Rewrite ``_manifest.json`` as the summary of what the unit records say now: every shard (file, rows,
    bytes) by unit and part, and counts (units, inputs done, errors, rows, bytes). Inputs are not listed one
    by one: the unit records are their ledger (``Manifest.read`` gathers them). Reads the records one at a
    time. Returns the summary counts."""
    store = Store.at(location)
    shards: list[dict] = []
    counts = {"units": 0, "units_complete": 0, "inputs_done": 0, "errors": 0}
    for record in iter_unit_records(store):
        counts["units"] += 1
        counts["units_complete"] += record.complete
        counts["inputs_done"] += len(record.inputs_done)
        counts["errors"] += record.errors
        shards.extend(record.shards)
    shards.sort(key=lambda shard: shard["file"])  # unit, then part
    header.shards, header.inputs_done = shards, []
    header.summary = {**header.summary, **counts, "shards": len(shards), "rows": sum(s["rows"] for s in shards),
                      "bytes": sum(s["bytes"] for s in shards)}
    store.write_bytes(MANIFEST, (json.dumps(header.__dict__, separators=(",", ":")) + "\n").encode())
    return header.summary
