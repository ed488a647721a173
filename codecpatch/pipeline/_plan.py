"""What a run would do, before it does it: which inputs run, which are done already, which are left out
and why. Reads the output folder's manifest and error table only; writes nothing (``--dry-run``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..shards import Manifest, Store, read_errors
from ._inputs import InputVideo


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


def format_plan(plan: RunPlan, ignored: list[tuple[str, str]] = ()) -> str:
    """The plan as lines a person reads: one line per input, grouped, with counts."""
    lines = [f"would run ({len(plan.to_run)}):"] + [f"  {i.video_id}" for i in plan.to_run]
    lines += [f"already done ({len(plan.done)}):"] + [f"  {i.video_id}" for i in plan.done]
    skipped = ([(i.video_id, f"failed in an earlier run ({error.splitlines()[0][:160]})") for i, error in plan.failed_before]
               + [(i.video_id, "over --limit") for i in plan.over_limit] + list(ignored))
    lines += [f"skipped ({len(skipped)}):"] + [f"  {name}: {why}" for name, why in skipped]
    return "\n".join(lines)
