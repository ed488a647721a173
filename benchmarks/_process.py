"""Fresh-process measurements shared by the benchmarks: throughput and peak RSS of one job on one clip.

Peak RSS is per process (VmHWM), so each measurement runs in a new spawned process.
"""

from __future__ import annotations

import multiprocessing
import resource
import time
from pathlib import Path


def peak_rss_kib() -> float:
    """This process's peak resident set (VmHWM), KiB. Unlike ru_maxrss it starts afresh at exec, so a
    spawned child does not inherit its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1])
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def plain_decode(path: str, queue) -> None:
    """PyAV decode of every frame, single-threaded, nothing else: the reference."""
    import av

    started = time.perf_counter()
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        frames = sum(1 for _ in container.decode(stream))
    queue.put((frames, time.perf_counter() - started, peak_rss_kib()))


def patchify_collect(path: str, queue, settings: dict | None = None) -> None:
    """The default patchify (decode + motion + residual + RGB of the sampled frames + selection), or with
    ``settings`` (PatchifyConfig fields)."""
    from codecpatch.patchify import PatchifyConfig, iter_clip_samples, patchify_samples

    config = PatchifyConfig(**(settings or {}))
    started = time.perf_counter()
    frames = 0
    for samples in iter_clip_samples(path, config):
        patchify_samples(samples, config)
        frames += samples.n_frames
    queue.put((frames, time.perf_counter() - started, peak_rss_kib()))


def in_fresh_process(target, path: Path) -> tuple[int, float, float]:
    """(frames, seconds, peak RSS MiB) of ``target`` run in a new process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(str(path), queue))
    process.start()
    frames, seconds, rss_kib = queue.get(timeout=600)
    process.join()
    return frames, seconds, rss_kib / 1024.0
