"""Re-encode any video to the H.264 layout codec patchification expects: fixed GOP, P-frames only, one
reference frame (what OneVision-Encoder's authors do before extracting vectors). Then every P-frame's
vectors point exactly one frame back, and codecs without exported vectors (HEVC, VP9, AV1) get real ones.
"""

from __future__ import annotations

import functools
import os
from fractions import Fraction
from dataclasses import dataclass, replace
from pathlib import Path

import av

from ..errors import CorruptVideoError, EmptyVideoError
from ._source import open_container


@dataclass(frozen=True)
class TranscodeResult:
    """What ``transcode_for_vectors`` wrote.

    Attributes:
        path: the output file.
        frames: frames encoded.
        width, height: encoded size in pixels (even; every frame is scaled to it).
    """

    path: Path
    frames: int
    width: int
    height: int


def transcode_for_vectors(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    *,
    gop: int = 16,
    crf: int = 18,
    preset: str = "veryfast",
    fps: int = 25,
    max_side: int | None = None,
    timeout: float = 10.0,
) -> TranscodeResult:
    """Write ``source`` as H.264 (libx264) with a fixed GOP of ``gop`` frames, no B-frames and ref=1.

    Frames are taken in decoded order and re-timed at ``fps`` (headers lie; decoded frames do not). A
    mid-stream size change is scaled to the first frame's size (rounded down to even, and to ``max_side``).
    The source is decoded with one thread, as every decode in the library (``DecodeOptions.threads``: the
    frames FFmpeg conceals in a damaged file depend on it).

    Raises:
        ValueError for a ``destination`` that cannot be written (its folder missing, a folder itself, an
        extension no container format has, or the source itself), before anything is decoded; the
        VideoOpenError subclasses of ``open_container`` for a source that cannot be opened; EmptyVideoError when
        no frame decodes, CorruptVideoError when decoding fails part-way. The output is written to a temporary
        file beside ``destination`` and renamed onto it only when complete: after any failure ``destination``
        is as it was (absent, or the file that was there).
    """
    if gop < 1:
        raise ValueError(f"gop must be >= 1, got {gop}")
    destination = Path(destination)
    _check_destination(source, destination)
    partial = destination.with_name(f".{destination.stem}.partial-{os.getpid()}{destination.suffix}")
    with open_container(source, input_format=None, open_timeout=timeout, read_timeout=timeout, options={}) as source_container:
        in_stream = source_container.streams.video[0]
        in_stream.codec_context.thread_count = 1
        try:
            written = _encode_decoded(source, source_container, in_stream, partial, gop, crf, preset, fps, max_side)
            os.replace(partial, destination)
        finally:
            partial.unlink(missing_ok=True)
    return replace(written, path=destination)


def _check_destination(source: str | os.PathLike, destination: Path) -> None:
    """Raise ValueError (naming ``destination``) when it cannot take the output."""
    if not destination.parent.is_dir():
        raise ValueError(f"{destination}: its folder {destination.parent} does not exist or is not a folder")
    if destination.is_dir():
        raise ValueError(f"{destination}: is a folder, not a file name")
    if destination.suffix.lstrip(".").lower() not in _writable_extensions():
        raise ValueError(f"{destination}: no container format writes '{destination.suffix or '(no extension)'}' files")
    if destination.exists() and os.path.exists(source) and os.path.samefile(destination, source):
        raise ValueError(f"{destination}: is the source itself; write the transcode elsewhere")


@functools.cache
def _writable_extensions() -> frozenset[str]:
    """File extensions FFmpeg guesses an output container format from (what ``av.open(path, "w")`` accepts)."""
    extensions: set[str] = set()
    for name in av.formats_available:
        try:
            extensions |= set(av.format.ContainerFormat(name, "w").extensions)
        except ValueError:  # an input-only format
            continue
    return frozenset(extensions)


def _encode_decoded(source, source_container, in_stream, destination: Path, gop: int, crf: int, preset: str, fps: int,
                    max_side: int | None) -> TranscodeResult:
    """Decode ``in_stream`` and encode every frame into ``destination`` (see ``transcode_for_vectors``)."""
    x264_params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:ref=1:threads=1"
    frames = 0
    with av.open(str(destination), mode="w") as output:
        out_stream = None
        decoded = source_container.decode(in_stream)
        while True:
            try:  # only the decode's failures are the source's (the encoder's and the muxer's are not)
                frame = next(decoded)
            except StopIteration:
                break
            except av.error.FFmpegError as error:
                raise CorruptVideoError(str(source), f"decoding failed ({error.strerror or error})", frames) from error
            if out_stream is None:
                width, height = _even_size(frame.width, frame.height, max_side)
                out_stream = output.add_stream("libx264", rate=fps, options={"crf": str(crf), "preset": preset, "x264-params": x264_params})
                out_stream.width, out_stream.height, out_stream.pix_fmt = width, height, "yuv420p"
            scaled = frame.reformat(width=out_stream.width, height=out_stream.height, format="yuv420p")
            scaled.pts, scaled.time_base = frames, Fraction(1, fps)
            # Decoded frames carry their source picture type, which x264 would obey as a forced type.
            scaled.pict_type = av.video.frame.PictureType.NONE
            for packet in out_stream.encode(scaled):
                output.mux(packet)
            frames += 1
        if out_stream is None:
            raise EmptyVideoError(str(source), "no frame could be decoded, nothing to transcode")
        for packet in out_stream.encode(None):
            output.mux(packet)
    return TranscodeResult(destination, frames, out_stream.width, out_stream.height)


def _even_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    if max_side is not None and max(width, height) > max_side:
        ratio = max_side / max(width, height)
        width, height = round(width * ratio), round(height * ratio)
    return max(2, width - width % 2), max(2, height - height % 2)
