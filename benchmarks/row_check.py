"""Row identity check: hash everything patchification produces for a set of inputs, to compare two versions
of the code (a refactor or a speed-up must not change a byte).

    PYTHONPATH=$PWD python benchmarks/row_check.py --out /tmp/before.json   # on the old commit
    PYTHONPATH=$PWD python benchmarks/row_check.py --out /tmp/after.json --compare /tmp/before.json
    # settings whose default changed (0.2: block_size 16, residual_stride 2, flow_max_side 80) reproduce the older rows when set
    # to the older values: compare a 0.1 tree's default run with
    PYTHONPATH=$PWD python benchmarks/row_check.py --out /tmp/legacy.json --compare /tmp/before.json \
        --set block_size=8 --set residual_stride=1 --set flow_max_side=0

Inputs: every sample video, every clip of ../shared/videos (when present) and a corpus of damaged inputs
(truncated, byte-flipped, cut raw streams, audio only, ...). For each input and each mode (codec, chunk)
it records a hash of every ClipSamples array and PatchSet array, the warnings and the DecodeReport, or the
error's class and message.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "videos"
if not SHARED.exists():
    SHARED = Path("/work/shared/videos")


def _hash(value) -> str:
    digest = hashlib.sha1()
    if isinstance(value, np.ndarray):
        digest.update(str(value.dtype).encode() + str(value.shape).encode())
        digest.update(np.ascontiguousarray(value).tobytes() if value.dtype != object else repr(value.tolist()).encode())
    else:
        digest.update(repr(value).encode())
    return digest.hexdigest()[:16]


def _record(obj) -> dict:
    """A hash per field; the clip's source is hashed by its file name (damaged inputs live in a temporary folder)."""
    out = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name == "info":
            value = replace(value, source=Path(value.source).name)
        if f.name == "saliency":  # a sum whose last bit depends on the arrays' memory alignment, from run to run
            value = np.array([f"{v:.5g}" for v in value.tolist()])
        out[f.name] = _hash(value)
    return out


def damaged_inputs(root: Path) -> list[Path]:
    """Damaged and odd inputs, made from a sample video and a shared raw stream."""
    sys.path.insert(0, str(ROOT))
    from tests.test_bad_input import corrupt_copy, faststart_copy, write_audio_only

    good = ROOT / "sample_videos" / "sprites_h264_p.mp4"
    made: list[Path] = []
    faststart = root / "faststart.mp4"
    faststart_copy(good, faststart)
    data = faststart.read_bytes()
    for percent in (5, 30, 60, 90, 99):
        path = root / f"cut_{percent:02d}.mp4"
        path.write_bytes(data[: len(data) * percent // 100])
        made.append(path)
    for seed in range(4):
        flipped = bytearray(good.read_bytes())
        rng = np.random.default_rng(seed)
        for position in rng.integers(len(flipped) // 10, int(len(flipped) * 0.9), 12):
            flipped[position] ^= 0xFF
        path = root / f"flipped_{seed}.mp4"
        path.write_bytes(bytes(flipped))
        made.append(path)
    plain = good.read_bytes()
    moov, mdat = plain.rindex(b"moov") - 4, plain.index(b"mdat") - 4
    (root / "moov_end_cut_mdat.mp4").write_bytes(plain[: mdat + (moov - mdat) // 2] + plain[moov:])
    (root / "cut_before_moov.mp4").write_bytes(plain[: len(plain) // 2])
    (root / "zero.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("this is not a video\n" * 40)
    write_audio_only(root / "audio_only.mp4")
    made += [root / n for n in ("moov_end_cut_mdat.mp4", "cut_before_moov.mp4", "zero.mp4", "text.mp4", "audio_only.mp4")]
    if SHARED.exists():
        raw = SHARED / "bbb_360p_h264_ipb.264"
        (root / "cut.264").write_bytes(raw.read_bytes()[: raw.stat().st_size // 2])
        corrupt_copy(SHARED / "bbb_720p_h264_ip.mp4", root / "corrupt_720p.mp4")
        made += [root / "cut.264", root / "corrupt_720p.mp4"]
    return made


def check(path: Path, mode: str, settings: dict | None = None) -> dict:
    from codecpatch.decode import DecodeReport
    from codecpatch.patchify import PatchifyConfig, iter_clip_samples, patchify_samples

    config = PatchifyConfig(mode=mode, **(settings or {}))
    report = DecodeReport()
    clips = []
    try:
        for samples in iter_clip_samples(path, config, report=report):
            patches = patchify_samples(samples, config)
            clips.append({"samples": _record(samples), "patches": _record(patches), "warnings": list(samples.warnings)})
    except Exception as error:  # noqa: BLE001 - the error is part of the result
        return {"clips": clips, "error": f"{type(error).__name__}: {error}".replace(str(path), "<path>")}
    return {"clips": clips, "report": {k: repr(v) for k, v in sorted(report.__dict__.items())}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--compare")
    parser.add_argument("--modes", default="codec,chunk")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a PatchifyConfig field other than its default (JSON value), e.g. block_size=8")
    args = parser.parse_args()
    settings = {name: json.loads(value) for name, _, value in (item.partition("=") for item in args.set)}
    work = Path(tempfile.mkdtemp(prefix="rowcheck-"))
    try:
        inputs = sorted((ROOT / "sample_videos").glob("*.mp4"))
        if SHARED.exists():
            inputs += sorted(p for p in SHARED.iterdir() if p.suffix != ".md")
        inputs += damaged_inputs(work)
        result = {}
        for path in inputs:
            for mode in args.modes.split(","):
                result[f"{path.name}:{mode}"] = check(path, mode, settings)
        Path(args.out).write_text(json.dumps(result, indent=1, sort_keys=True))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{len(result)} input/mode pairs -> {args.out}")
    if args.compare:
        before = json.loads(Path(args.compare).read_text())
        differ = [k for k in sorted(set(before) | set(result)) if before.get(k) != result.get(k)]
        for key in differ:
            print("DIFFERS:", key)
            print("  before:", json.dumps(before.get(key))[:600])
            print("  after: ", json.dumps(result.get(key))[:600])
        print(f"{len(result) - len(differ)} identical, {len(differ)} differ")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
