"""The decode layer: the only place codecpatch talks to PyAV/FFmpeg.

``VideoReader`` / ``read_frames`` yield one ``CodecFrame`` per decoded frame with picture type, motion
vectors, a block motion field, a residual-energy map and (on request) RGB pixels.
"""

from typing import TYPE_CHECKING

from ._plan import PacketPlan, plan_packets
from ._reader import VideoReader, probe, read_frames
from ._source import is_url, redact, redact_text
from ._types import ASSUMED_FPS, CODECS_WITH_VECTORS, NO_LIMITS, CodecFrame, DecodeLimits, DecodeOptions, DecodeReport, StreamInfo, plausible_fps

if TYPE_CHECKING:  # what __getattr__ serves, for type checkers and editors
    from ._transcode import TranscodeResult, transcode_for_vectors
    from ._write import write_rgb_video

#: The encoding side (re-encoding for vectors, writing RGB frames), imported on first use: decoding needs neither,
#: and importing them cost every command's start-up ~0.8 ms.
_ENCODERS = {"TranscodeResult": "_transcode", "transcode_for_vectors": "_transcode", "write_rgb_video": "_write"}


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_ENCODERS))


def __getattr__(name: str):
    home = _ENCODERS.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # the next lookup is a plain attribute (as in codecpatch.pipeline)
    return value


__all__ = [
    "ASSUMED_FPS",
    "CODECS_WITH_VECTORS",
    "CodecFrame",
    "NO_LIMITS",
    "DecodeLimits",
    "DecodeOptions",
    "DecodeReport",
    "PacketPlan",
    "StreamInfo",
    "TranscodeResult",
    "VideoReader",
    "plan_packets",
    "probe",
    "is_url",
    "plausible_fps",
    "read_frames",
    "redact",
    "redact_text",
    "transcode_for_vectors",
    "write_rgb_video",
]
