"""Peak memory of patchification against video length: a clip and the same clip looped 10 times.

    python benchmarks/patchify_memory.py [--clip PATH] [--loops 10] [--out benchmarks/results/patchify_memory.json]

Each measurement runs in a fresh process (peak RSS = VmHWM). The long video is the clip's video stream
looped with ``ffmpeg -stream_loop`` (stream copy), written to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from patchify import _patchify_collect, in_fresh_process  # noqa: E402  (same directory)

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=REPO.parent / "shared" / "videos" / "bbb_720p_h264_ip.mp4")
    parser.add_argument("--loops", type=int, default=10)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "patchify_memory.json")
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        sys.exit("ffmpeg is not installed (apt-get install ffmpeg): it makes the long video")
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        long_video = Path(folder) / f"looped{args.clip.suffix}"
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-stream_loop", str(args.loops - 1), "-i", str(args.clip),
                        "-an", "-c", "copy", str(long_video)], check=True)
        print(f"{'video':12} {'frames':>7} {'frames/s':>9} {'peak RSS MiB':>13}")
        for name, path in (("clip", args.clip), (f"{args.loops}x looped", long_video)):
            frames, seconds, rss = in_fresh_process(_patchify_collect, path)
            rows[name] = {"frames": frames, "fps": frames / seconds, "peak_rss_mib": rss}
            print(f"{name:12} {frames:7d} {frames / seconds:9.0f} {rss:13.0f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"clip": args.clip.name, "rows": rows}, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
