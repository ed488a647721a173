"""What a run would do, before it does it: which inputs run, which are done already, which are left out
and why. Reads the output's manifest header, unit records and (for units that recorded errors) their error
tables only; writes nothing (``--dry-run``). Also the cut of an input stream into work units and the
compact ledger both the plan and the runner read.

Everything here streams: an input list of any length is read once, a unit at a time; what is held is the
ledger (complete units' sizes and partial units' done ids) and at most ``show`` names per group."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from itertools import islice
from typing import Iterable, Iterator

from ..shards import Manifest, Store, iter_unit_records, read_errors, read_unit_errors
from ._inputs import InputVideo


def plan_units(inputs: Iterable[InputVideo], unit_inputs: int) -> Iterator[tuple[int, list[InputVideo]]]:
    """(unit index, its inputs): consecutive runs of ``unit_inputs`` inputs in input order, taken from the
    iterable as they are needed. The same for any worker count, so a rerun finds each unit's record under
    the same name."""
    iterator = iter(inputs)
    unit = 0
    while True:
        items = list(islice(iterator, unit_inputs))
        if not items:
            return
        yield unit, items
        unit += 1


@dataclass
class Ledger:
    """What the unit records say, compact: complete units (index -> inputs they held), the ids already done
    of the others, and each unit's error count. Built by one listing of ``_units/``; holds no ids of
    complete units.

    A record marked complete for fewer inputs than a full unit (the last unit of a list that has grown
    since, or a unit cut short by ``--limit``) is kept as a partial unit with its ids, so the rest of its
    inputs run."""

    complete: dict[int, int] = field(default_factory=dict)
    partial: dict[int, set[str]] = field(default_factory=dict)
    errors: dict[int, int] = field(default_factory=dict)
    done_inputs: int = 0

    @classmethod
    def read(cls, store, unit_inputs: int | None = None) -> "Ledger":
        ledger = cls()
        for record in iter_unit_records(store):
            ledger.done_inputs += len(record.inputs_done)
            if record.errors:
                ledger.errors[record.unit] = record.errors
            if record.complete and (unit_inputs is None or record.inputs >= unit_inputs):
                ledger.complete[record.unit] = record.inputs
            else:
                ledger.partial[record.unit] = set(record.inputs_done)
        return ledger

    def todo(self, unit: int, items: list[InputVideo]) -> list[InputVideo]:
        """The inputs of a unit still to do (none when its record is complete for these inputs)."""
        if self.complete.get(unit) == len(items):
            return []
        done = self.partial.get(unit, ())
        return [i for i in items if i.video_id not in done]


def cut_to_limit(items: list[InputVideo], todo: list[InputVideo], room: int | None) -> tuple[list[InputVideo], int]:
    """``--limit`` in input order: a unit's inputs up to (not including) its first to-do input beyond ``room``
    (how many to-do inputs the run may still take; None: no limit), and how many to-do inputs that leaves
    out. Input order and unit boundaries never change, so a later run finds the same units."""
    if room is None or len(todo) <= room:
        return items, 0
    first_out = todo[room]
    return items[:next(k for k, item in enumerate(items) if item is first_out)], len(todo) - room


@dataclass(frozen=True)
class RunPlan:
    """The inputs of a run, sorted into what happens to each.

    Attributes:
        to_run: inputs the run processes, in input order.
        done: inputs whose rows are already in finished shards (skipped).
        failed_before: (input, recorded error) of inputs a previous run recorded in ``_errors/``
            (skipped: a failure is final; delete the output folder's entry to retry).
        over_limit: inputs left for a later run by ``--limit``.
    """

    to_run: list[InputVideo] = field(default_factory=list)
    done: list[InputVideo] = field(default_factory=list)
    failed_before: list[tuple[InputVideo, str]] = field(default_factory=list)
    over_limit: list[InputVideo] = field(default_factory=list)

    @property
    def inputs(self) -> list[InputVideo]:
        """What to hand the runner: everything but the inputs over the limit (done ones are skipped there)."""
        left_out = {i.video_id for i in self.over_limit}
        return [i for i in self.to_run + self.done + [f for f, _ in self.failed_before] if i.video_id not in left_out]


def plan_run(inputs: list[InputVideo], output: str | os.PathLike, limit: int | None = None, endpoint: str | None = None) -> RunPlan:
    """Sort ``inputs`` against what ``output`` (a folder or a URI; ``endpoint``: an S3 endpoint override)
    already holds; at most ``limit`` inputs are to run."""
    output = Store.at(output, endpoint)
    manifest = Manifest.read(output)
    finished = set(manifest.inputs_done) if manifest else set()
    errors = {r["input"]: f"{r['stage']}/{r['kind']}: {r['message']}" for r in read_errors(output)} if manifest else {}
    plan = RunPlan()
    for item in inputs:
        if item.video_id in finished and item.video_id in errors:
            plan.failed_before.append((item, errors[item.video_id]))
        elif item.video_id in finished:
            plan.done.append(item)
        elif limit is not None and len(plan.to_run) >= limit:
            plan.over_limit.append(item)
        else:
            plan.to_run.append(item)
    return plan


@dataclass
class StreamPlan:
    """The plan of a streamed input: counts per group and the first ``show`` names of each.

    Attributes:
        inputs, units: how many inputs the stream held and the units they make.
        counts: {"to_run", "done", "failed_before", "over_limit"} -> inputs.
        to_run, done, over_limit: the first ``show`` ids of each group, in input order.
        failed_before: the first ``show`` (id, recorded error) of inputs a previous run recorded as failed.
    """

    inputs: int = 0
    units: int = 0
    counts: dict = field(default_factory=lambda: {"to_run": 0, "done": 0, "failed_before": 0, "over_limit": 0})
    to_run: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    failed_before: list[tuple[str, str]] = field(default_factory=list)
    over_limit: list[str] = field(default_factory=list)

    def _add(self, group: str, entry, show: int) -> None:
        self.counts[group] += 1
        if len(getattr(self, group)) < show:
            getattr(self, group).append(entry)


def plan_stream(inputs: Iterable[InputVideo], output, *, unit_inputs: int, limit: int | None = None,
                endpoint: str | None = None, show: int = 50) -> StreamPlan:
    """Sort a stream of inputs against what ``output`` (a folder or URI) holds, a unit at a time, as the run
    would (same units, same ``--limit`` cut); holds the ledger and ``show`` names per group, never the list.
    ``unit_inputs``: the output's own unit size when it has one (its manifest header), else the recipe's."""
    store = Store.at(output, endpoint)
    ledger = Ledger.read(store, unit_inputs) if Manifest.read(store, gather=False) is not None else Ledger()
    plan = StreamPlan()
    taken = 0
    for unit, items in plan_units(inputs, unit_inputs):
        plan.units += 1
        plan.inputs += len(items)
        todo = ledger.todo(unit, items)
        pending = {id(i) for i in todo}
        errors = {e["input"]: f"{e['stage']}/{e['kind']}: {e['message']}" for e in read_unit_errors(store, unit)} \
            if ledger.errors.get(unit) else {}
        kept, _ = cut_to_limit(items, todo, None if limit is None else max(0, limit - taken))
        for position, item in enumerate(items):
            if id(item) not in pending:
                if item.video_id in errors:
                    plan._add("failed_before", (item.video_id, errors[item.video_id]), show)
                else:
                    plan._add("done", item.video_id, show)
            elif position < len(kept):
                plan._add("to_run", item.video_id, show)
                taken += 1
            else:
                plan._add("over_limit", item.video_id, show)
    return plan


def format_plan(plan: "RunPlan | StreamPlan", ignored: list[tuple[str, str]] = (), show: int | None = None) -> str:
    """The plan as lines a person reads: one line per input (at most ``show`` per group, then "... and N
    more"), grouped, with counts. ``ignored``: (entry, reason) the input walk skipped."""
    if isinstance(plan, RunPlan):
        counts = {"to_run": len(plan.to_run), "done": len(plan.done), "failed_before": len(plan.failed_before),
                  "over_limit": len(plan.over_limit)}
        plan = StreamPlan(counts=counts, to_run=[i.video_id for i in plan.to_run], done=[i.video_id for i in plan.done],
                          failed_before=[(i.video_id, error) for i, error in plan.failed_before],
                          over_limit=[i.video_id for i in plan.over_limit])
    cap = show if show is not None else max(len(plan.to_run), len(plan.done), len(plan.failed_before),
                                            len(plan.over_limit), len(ignored), 1)

    def names(entries: list[str], count: int, what: str = "") -> list[str]:
        lines = [f"  {entry}" for entry in entries[:cap]]
        shown = min(len(entries), cap)
        return lines + ([f"  ... and {count - shown} more{what}"] if count > shown else [])

    counts = plan.counts
    lines = [f"would run ({counts['to_run']}):"] + names(plan.to_run, counts["to_run"])
    lines += [f"already done ({counts['done']}):"] + names(plan.done, counts["done"])
    skipped = counts["failed_before"] + counts["over_limit"] + len(ignored)
    lines += [f"skipped ({skipped}):"]
    lines += names([f"{name}: failed in an earlier run ({error.splitlines()[0][:160]})" for name, error in plan.failed_before],
                   counts["failed_before"], " failed in an earlier run")
    lines += names([f"{name}: over --limit" for name in plan.over_limit], counts["over_limit"], " over --limit")
    lines += names([f"{name}: {why}" for name, why in ignored], len(ignored), " skipped by the input walk")
    return "\n".join(lines)
