"""Checking a batch output against its unit records, and rebuilding its summary manifest from them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from ._store import Store
from ._units import read_unit_records, write_summary
from ._writer import MANIFEST, Manifest


@dataclass
class VerifyReport:
    """What ``verify`` found at a location.

    Attributes:
        location: what was checked.
        units, shards, rows, bytes, inputs_done, errors: totals over the unit records.
        duplicate_inputs: inputs listed as done by more than one record (or twice in one).
        row_mismatches: (file, rows in its record, rows in its footer).
        unreadable: (file, reason) of listed shards whose footer cannot be read (missing included).
        misplaced: (file, video_id) rows of an input that its unit does not list as done.
        orphans: shard files (and temporary files) that no record lists: invisible to readers.
        summary: the summary written to ``_manifest.json`` (when rebuilt).
    """

    location: str
    units: int = 0
    shards: int = 0
    rows: int = 0
    bytes: int = 0
    inputs_done: int = 0
    errors: int = 0
    duplicate_inputs: list[str] = field(default_factory=list)
    row_mismatches: list[tuple[str, int, int]] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    misplaced: list[tuple[str, str]] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.duplicate_inputs or self.row_mismatches or self.unreadable or self.misplaced)

    def lines(self) -> list[str]:
        out = [f"{self.location}: {self.units} units, {self.shards} shards, {self.rows} rows, {self.bytes} bytes, "
               f"{self.inputs_done} inputs done ({self.errors} failed)"]
        out += [f"  input done more than once: {name}" for name in self.duplicate_inputs]
        out += [f"  {name}: {listed} rows in its unit record, {found} in its footer" for name, listed, found in self.row_mismatches]
        out += [f"  unreadable shard {name}: {reason}" for name, reason in self.unreadable]
        out += [f"  {name}: rows of {video} which its unit does not list as done" for name, video in self.misplaced]
        out += [f"  orphaned file (no unit record lists it; readers skip it): {name}" for name in self.orphans]
        out.append("ok" if self.ok else "PROBLEMS FOUND")
        return out


def verify(location, *, rebuild: bool = True, check_rows: bool = True) -> VerifyReport:
    """Check every unit record against the shard footers (rows per shard), every input done exactly once,
    every row's input listed by the unit that wrote it (``check_rows``: reads the video_id column), and
    list files no record publishes. ``rebuild`` rewrites ``_manifest.json``'s summary from the records.

    Raises FileNotFoundError when the location holds no batch manifest."""
    store = Store.at(location)
    header = Manifest.read(store, gather=False)
    if header is None:
        raise FileNotFoundError(f"{store.location}: no {MANIFEST} (not a codecpatch shard location)")
    report = VerifyReport(store.location)
    records = read_unit_records(store)
    report.units = len(records)
    counts = Counter(name for record in records for name in record.inputs_done)
    report.duplicate_inputs = sorted(name for name, count in counts.items() if count > 1)
    report.inputs_done = len(counts)
    report.errors = sum(record.errors for record in records)
    listed = set()
    for record in records:
        done = set(record.inputs_done)
        for shard in record.shards:
            listed.add(shard["file"])
            report.shards += 1
            report.bytes += shard["bytes"]
            try:
                with store.open_input(shard["file"]) as handle:
                    parquet = pq.ParquetFile(handle)
                    rows = parquet.metadata.num_rows
                    report.rows += rows
                    if rows != shard["rows"]:
                        report.row_mismatches.append((shard["file"], shard["rows"], rows))
                    if check_rows:
                        videos = set(parquet.read(columns=["video_id"]).column("video_id").to_pylist())
                        report.misplaced += [(shard["file"], video) for video in sorted(videos - done)]
            except (OSError, ValueError) as error:
                report.unreadable.append((shard["file"], f"{type(error).__name__}: {error}"))
    report.orphans = sorted(name for name in store.list_names("")
                            if (name.startswith("shard-") and name not in listed) or name.endswith(".tmp"))
    for folder in ("_units", "_errors"):
        report.orphans += [f"{folder}/{name}" for name in store.list_names(folder) if name.endswith(".tmp")]
    if rebuild and header.ledger == "units":
        report.summary = write_summary(store, header)
    return report
