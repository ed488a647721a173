"""Ledger and planning cost of batch runs at 10^4..10^6 inputs, and driver bytes per shard byte.

    python benchmarks/ledger.py [--sizes 10000,100000,1000000] [--unit-inputs 16] [--ray-clips 8]
                                [--out benchmarks/results/ledger.json]

Per size N, each measured in a fresh child process (its peak RSS is the driver's):
* ``plan``: stream an N-line LIST.txt through ``iter_inputs`` and cut it into units (the dry-run/planning path:
  no decode, no stat), against an empty output (no records);
* ``resume``: the same list against an output whose N/unit_inputs unit records say every input is done
  (synthetic records, written first): the listing of ``_units/`` plus the per-unit skip decision a rerun makes
  before any work, i.e. ``Ledger.read`` + ``Ledger.todo`` over every unit;
* ``summary``: rebuilding ``_manifest.json`` from those records (``write_summary``; what ends a run and what
  ``codecpatch shards verify`` does without reading footers).
Then one real run on a local Ray with 2 workers over ``--ray-clips`` copies of a bundled clip (pixel tokens of
width 768 with pixels stored: a ViT-B-sized row) gives the bytes the driver received per byte of shards.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _child(kind: str, n: int, unit_inputs: int, work: Path) -> dict:
    """One measurement in this process: returns seconds and peak RSS (MB)."""
    from codecpatch.pipeline import iter_inputs
    from codecpatch.pipeline._runner import Ledger, plan_units
    from codecpatch.shards import Manifest, Store, write_summary

    listing = work / f"LIST-{n}.txt"
    output = work / f"out-{n}"
    imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the libraries alone (torch, pyarrow, ...)
    started = time.perf_counter()
    if kind in ("plan", "resume"):
        ledger = Ledger.read(Store(output)) if kind == "resume" else Ledger()
        units = todo = inputs = 0
        for unit, items in plan_units(iter_inputs(listing), unit_inputs):
            units += 1
            inputs += len(items)
            todo += len(ledger.todo(unit, items))
        result = {"units": units, "inputs": inputs, "todo": todo}
    else:
        result = write_summary(Store(output), Manifest.read(output, gather=False))
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"kind": kind, "n": n, "seconds": round(seconds, 3), "peak_rss_mb": round(peak, 1), "import_rss_mb": round(imported, 1),
            "growth_mb": round(peak - imported, 1),
            **{k: v for k, v in result.items() if k in ("units", "inputs", "todo", "bytes", "inputs_done")}}


def _prepare(n: int, unit_inputs: int, work: Path) -> float:
    """Write an N-line list and an output whose unit records say all N are done; returns seconds."""
    from codecpatch.shards import Manifest, Store, UnitRecord
    from codecpatch.shards._units import record_path

    started = time.perf_counter()
    listing = work / f"LIST-{n}.txt"
    with open(listing, "w") as handle:
        for i in range(n):
            handle.write(f"videos/{i // 1000:05d}/clip{i:08d}.mp4\n")
    store = Store(work / f"out-{n}")
    store.make()
    Manifest(dim=768, ledger="units", summary={"unit_inputs": unit_inputs}).write(store)
    (work / f"out-{n}" / "_units").mkdir()
    for unit, start in enumerate(range(0, n, unit_inputs)):
        ids = [f"videos/{i // 1000:05d}/clip{i:08d}.mp4" for i in range(start, min(n, start + unit_inputs))]
        record = UnitRecord(unit=unit, inputs=len(ids), inputs_done=ids, shards=[{"file": f"shard-u{unit:07d}-000.parquet",
                            "rows": len(ids), "bytes": 2_400_000 * len(ids)}], next_part=1, clips=len(ids), complete=True,
                            nodes=[{"host": "bench", "pid": 1, "node_id": "0" * 56}])
        (store.root / record_path(unit)).write_bytes(record.to_json())
    return time.perf_counter() - started


def _ray_driver_bytes(clips: int) -> dict:
    from codecpatch.pipeline import list_inputs, load_recipe, run
    from codecpatch.shards import read_unit_records

    with tempfile.TemporaryDirectory() as folder:
        videos = Path(folder) / "videos"
        videos.mkdir()
        for i in range(clips):
            shutil.copy(REPO / "sample_videos" / "sprites_h264_b.mp4", videos / f"clip{i:02d}.mp4")
        recipe = load_recipe(None, {"encoder.dim": 768, "output.store_pixels": True, "execution.workers": 2,
                                    "execution.unit_inputs": 2, "execution.deadline_s": 300})
        stats = run(recipe, list_inputs(videos), Path(folder) / "out", progress=False)
        shard_bytes = sum(s["bytes"] for r in read_unit_records(Path(folder) / "out") for s in r.shards)
    return {"clips": clips, "driver_bytes": stats.driver_bytes, "shard_bytes": shard_bytes,
            "driver_per_shard_byte": round(stats.driver_bytes / shard_bytes, 5), "seconds": round(stats.seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--unit-inputs", type=int, default=16)
    parser.add_argument("--ray-clips", type=int, default=8, help="0 skips the Ray measurement")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "ledger.json")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "N", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, n, work = args.child
        print(json.dumps(_child(kind, int(n), args.unit_inputs, Path(work))))
        return
    rows = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryDirectory(prefix="cpledger") as work:
        for n in [int(s) for s in args.sizes.split(",")]:
            prepared = _prepare(n, args.unit_inputs, Path(work))
            for kind in ("plan", "resume", "summary"):
                out = subprocess.run([sys.executable, __file__, "--unit-inputs", str(args.unit_inputs), "--child", kind, str(n), work],
                                     capture_output=True, text=True, env=env, check=True)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                row["prepare_seconds"] = round(prepared, 2)
                rows.append(row)
                print(f"{kind:8s} N={n:>8d}  {row['seconds']:7.2f} s  peak RSS {row['peak_rss_mb']:7.1f} MB "
                      f"(+{row['growth_mb']:.1f} over the imports)", flush=True)
            shutil.rmtree(Path(work) / f"out-{n}")
    result = {"unit_inputs": args.unit_inputs, "rows": rows}
    if args.ray_clips:
        result["ray"] = _ray_driver_bytes(args.ray_clips)
        ray = result["ray"]
        print(f"driver received {ray['driver_bytes']} B for {ray['shard_bytes']} B of shards: "
              f"{100 * ray['driver_per_shard_byte']:.3f}% ({ray['clips']} clips, 2 Ray workers)")
    print(f"{'kind':8s} {'N':>8s} {'seconds':>8s} {'peak RSS MB':>12s} {'over imports MB':>16s}")
    for row in rows:
        print(f"{row['kind']:8s} {row['n']:>8d} {row['seconds']:>8.2f} {row['peak_rss_mb']:>12.1f} {row['growth_mb']:>16.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
