"""The live stream pipeline on one core: window latency and drops at 720p in real time, and the sustainable
frame rate (not paced) as a multiple of real time.

    python benchmarks/stream.py [--seconds 22] [--via file,tcp,rtsp] [--out benchmarks/results/stream.json]

Camera: ../shared/videos/bbb_720p_h264_ip.mp4 re-encoded as a camera would send it (H.264, no B-frames,
a key frame every 2 s, CRF 23), timed at 25 and at 30 fps, looped to ``--seconds``. Windows are GOPs (2 s).
Each configuration runs in its own process pinned to CPU 0 with one torch and one decoder thread:
  - realtime file: the file played at its frame rate (``--realtime``), as ``codecpatch stream`` does;
  - realtime tcp: an FFmpeg sender (on CPU 1) streams MPEG-TS over loopback TCP at its frame rate;
  - realtime rtsp: GStreamer's RTSP server (tests/rtsp_server.py, system python3, on CPU 1) serves the 25 fps
    clip at its frame rate, RTP interleaved over the RTSP TCP connection (``rtsp_transport = "tcp"``), as an
    IP camera does; the rows carry capture times from its RTCP sender reports once the first one is in;
  - unpaced: as fast as it goes with back-pressure (no drops): frames/s over the clip's frame rate.
Encoders: pixel (seeded projection to 256 dims) and a random ViT-Ti (Hugging Face CLIP layout, 12 blocks,
192 wide, loaded from a local folder), compressor chain apet:0.5 (pipelines/camera.toml).
Latency = a window's last frame decoded -> its row written into the open shard. Plain PyAV decode of the
same clip on the same core is the reference for the unpaced rate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RTSP_SERVER = REPO / "tests" / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"  # GStreamer's Python bindings come from Debian (python3-gi)
SHARED = REPO.parent / "shared" / "videos"
SOURCE = SHARED / "bbb_720p_h264_ip.mp4"
GOP_SECONDS = 2
CORE = 0


def make_camera_clip(folder: Path, fps: int, seconds: float) -> Path:
    """SOURCE retimed to ``fps``, looped to ``seconds``, encoded like a camera (no B-frames, fixed GOP)."""
    path = folder / f"camera_720p{fps}.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-stream_loop", "-1", "-i", str(SOURCE), "-t", str(seconds),
                    "-vf", f"setpts=N/{fps}/TB", "-r", str(fps), "-c:v", "libx264", "-preset", "veryfast", "-crf", "23",
                    "-bf", "0", "-g", str(GOP_SECONDS * fps), "-keyint_min", str(GOP_SECONDS * fps), "-sc_threshold", "0",
                    "-an", str(path)], check=True)
    return path


def save_random_vit_ti(folder: Path) -> Path:
    """A ViT-Ti-sized CLIP vision tower with random weights, saved the Hugging Face way (no download)."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.CLIPVisionConfig(hidden_size=192, intermediate_size=768, num_hidden_layers=12, num_attention_heads=3,
                                           image_size=224, patch_size=16)
    path = folder / "vit-ti-random"
    transformers.CLIPVisionModel(config).save_pretrained(path)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def one_run(spec: dict) -> dict:
    """Runs in a child process pinned to one core."""
    os.sched_setaffinity(0, {CORE})
    import torch

    torch.set_num_threads(1)
    from codecpatch.pipeline import load_recipe
    from codecpatch.stream import run_stream

    overrides = {"stream.realtime": spec["paced"] and spec["via"] == "file", "stream.decoder_threads": 1,
                 "stream.max_reconnects": 0 if spec["via"] in ("file", "rtsp") else 3, "stream.read_timeout": 2.0,
                 "stream.rtsp_transport": "tcp",
                 "stream.when_behind": "drop_oldest" if spec["paced"] else "block", "stream.backoff_s": 0.2}
    if spec["encoder"] != "pixel":
        overrides.update({"encoder.name": "vit", "encoder.path": spec["encoder"], "encoder.dim": None})
    recipe = load_recipe(REPO / "pipelines" / "camera.toml", overrides)
    sender = None
    source = spec["clip"]
    if spec["via"] == "tcp":
        port = free_port()
        sender = subprocess.Popen(["taskset", "-c", "1", "ffmpeg", "-loglevel", "error", "-re", "-i", spec["clip"], "-c", "copy",
                                   "-f", "mpegts", f"tcp://127.0.0.1:{port}?listen=1"])
        source = f"tcp://127.0.0.1:{port}"
    elif spec["via"] == "rtsp":  # the server's media ends with the file; the session then ends (no reconnects)
        port = free_port()
        sender = subprocess.Popen(["taskset", "-c", "1", SYSTEM_PYTHON, str(RTSP_SERVER), "--port", str(port), "--file", spec["clip"],
                                   "--transport", "tcp"], stdout=subprocess.PIPE, text=True)
        if sender.stdout.readline().strip() != "ready":
            raise RuntimeError("the RTSP server did not start (apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 "
                               "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly)")
        source = f"rtsp://127.0.0.1:{port}/cam"
    try:
        stats = run_stream(source, recipe, spec["output"], progress=False, max_windows=spec.get("max_windows"))
    finally:
        if sender is not None:
            sender.kill()
            sender.wait()
    data = stats.to_dict()
    data["latencies"] = [round(x, 4) for x in stats.latencies]
    data["wallclock_sources"] = _wallclock_sources(Path(spec["output"]))
    return data


def _wallclock_sources(output: Path) -> dict:
    """How many windows carry each wall-clock source (from the window log: the line a window gets when it is
    handled has its times; the later "written" line only names its shard)."""
    from codecpatch.stream import STREAM_WINDOWS

    counts: dict = {}
    for line in (output / STREAM_WINDOWS).read_text().splitlines():
        entry = json.loads(line)
        if entry.get("status") in ("pending", "failed"):
            counts[entry.get("wallclock_source")] = counts.get(entry.get("wallclock_source"), 0) + 1
    return counts


def plain_decode_fps(clip: Path) -> float:
    """PyAV decode of every frame on one core, one thread (the reference)."""
    code = ("import os, time, av; os.sched_setaffinity(0, {%d}); c = av.open(%r); s = c.streams.video[0]; "
            "s.codec_context.thread_count = 1; t = time.perf_counter(); n = sum(1 for _ in c.decode(s)); "
            "print(n / (time.perf_counter() - t))") % (CORE, str(clip))
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def in_child(spec: dict) -> dict:
    done = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=22.0, help="stream length per run")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "stream.json")
    parser.add_argument("--via", default="file,tcp,rtsp", help="comma-separated sources to run (file, tcp, rtsp)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(json.loads(args.one))))
        return
    if shutil.which("ffmpeg") is None:
        sys.exit("needs the ffmpeg CLI (apt-get install ffmpeg)")
    results: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "cores_used": 1}, "runs": []}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        vit = save_random_vit_ti(folder)
        clips = {fps: make_camera_clip(folder, fps, args.seconds) for fps in (25, 30)}
        results["plain_decode_fps"] = {fps: plain_decode_fps(clip) for fps, clip in clips.items()}
        plan = [(fps, via, paced, encoder) for fps in (25, 30) for encoder in ("pixel", "vit-ti") for via, paced in
                (("file", True), ("file", False))]
        plan += [(30, "tcp", True, "pixel"), (30, "tcp", True, "vit-ti"), (25, "tcp", True, "pixel"), (25, "rtsp", True, "pixel"),
                 (25, "rtsp", True, "vit-ti")]
        plan = [run for run in plan if run[1] in args.via.split(",")]
        header = f"{'fps':>3} {'source':12} {'encoder':7} {'windows':>7} {'dropped':>7} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'frames/s':>9} {'x real time':>11} {'start s':>7}"
        print(header)
        for fps, via, paced, encoder in plan:
            output = folder / f"out_{fps}_{via}_{paced}_{encoder}"
            spec = {"clip": str(clips[fps]), "via": via, "paced": paced, "output": str(output),
                    "encoder": "pixel" if encoder == "pixel" else str(vit)}
            data = in_child(spec)
            shutil.rmtree(output, ignore_errors=True)
            label = ("realtime " if paced else "unpaced ") + via
            run = {"fps": fps, "source": label, "encoder": encoder, "windows": data["windows_written"],
                   "dropped": data["windows_dropped"], "frames": data["frames"], "seconds": data["seconds"],
                   "latency_p50_ms": _ms(data["latency_p50_s"]), "latency_p95_ms": _ms(data["latency_p95_s"]),
                   "latency_max_ms": _ms(data["latency_max_s"]), "frames_per_second": data["frames_per_second"],
                   "stage_seconds": data["stage_seconds"], "window_s": GOP_SECONDS,
                   "startup_s": data["startup_s"], "wallclock_sources": data["wallclock_sources"]}
            # paced runs play at the clip's rate by construction; the unpaced rate is the sustainable one
            run["x_real_time"] = None if paced else round(data["frames_per_second"] / fps, 2)
            results["runs"].append(run)
            print(f"{fps:>3} {label:12} {encoder:7} {run['windows']:>7} {run['dropped']:>7} {run['latency_p50_ms']:>7} "
                  f"{run['latency_p95_ms']:>7} {run['latency_max_ms']:>7} {run['frames_per_second']:>9} {run['x_real_time'] or '-':>11} {run['startup_s']:>7}")
    for fps, value in results["plain_decode_fps"].items():
        print(f"plain PyAV decode, 1 core, {fps} fps clip: {value:.0f} frames/s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {args.out}")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 1)


if __name__ == "__main__":
    main()
