"""The decode layer: the only place codecpatch talks to PyAV/FFmpeg.

``VideoReader`` / ``read_frames`` yield one ``CodecFrame`` per decoded frame with picture type, motion
vectors, a block motion field, a residual-energy map and (on request) RGB pixels.
"""

from ._plan import PacketPlan, plan_packets
from ._reader import VideoReader, probe, read_frames
from ._source import is_url, redact, redact_text
from ._transcode import TranscodeResult, transcode_for_vectors
from ._write import write_rgb_video
from ._types import ASSUMED_FPS, CODECS_WITH_VECTORS, NO_LIMITS, CodecFrame, DecodeLimits, DecodeOptions, DecodeReport, StreamInfo, plausible_fps

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
