"""Typed errors for bad input.

Every error names the source (file path or URL) and a human-readable reason, and carries a short
machine-readable ``kind`` so that batch runs can tabulate failures ("empty_file", "no_video_stream", ...).
"""

from __future__ import annotations


class VideoError(Exception):
    """Base class: something is wrong with one video source.

    Attributes:
        source: the path or URL as the caller gave it.
        reason: what went wrong, in words.
        kind: a short stable identifier for error tables.
    """

    kind = "video_error"

    def __init__(self, source: str, reason: str) -> None:
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


class VideoOpenError(VideoError):
    """The source could not be opened as a video."""

    kind = "open_failed"


class VideoNotFoundError(VideoOpenError, FileNotFoundError):
    kind = "not_found"


class EmptyVideoError(VideoOpenError):
    kind = "empty_file"


class InvalidVideoError(VideoOpenError):
    """The bytes are not a container or stream FFmpeg recognises."""

    kind = "invalid_data"


class NoVideoStreamError(VideoOpenError):
    kind = "no_video_stream"


class UnsupportedCodecError(VideoOpenError):
    kind = "unsupported_codec"


class SourceTimeoutError(VideoError, TimeoutError):
    """Opening or reading a (network) source took longer than its timeout."""

    kind = "timeout"


class CorruptVideoError(VideoError):
    """Decoding failed part-way through.

    Attributes:
        frames_decoded: how many frames were decoded (and yielded) before the failure.
    """

    kind = "corrupt"

    def __init__(self, source: str, reason: str, frames_decoded: int) -> None:
        self.frames_decoded = frames_decoded
        super().__init__(source, f"{reason} (after {frames_decoded} decoded frames)")


class LimitExceededError(VideoError):
    """The source is larger than a decode limit allows (frame size, duration, file size, frame count); it is
    refused instead of decoded.

    Attributes:
        limit: the limit's name ("max_pixels", "max_seconds", "max_file_mb", "max_frames").
        value: what the source has (or claims in its header).
        allowed: the limit's value.
    """

    kind = "limit_exceeded"

    def __init__(self, source: str, what: str, limit: str, value: float, allowed: float) -> None:
        self.limit, self.value, self.allowed = limit, value, allowed
        super().__init__(source, f"{what} exceeds {limit} = {_number(allowed)}; to decode it, raise {limit} "
                                 f"(recipe [limits] {limit}, or the --{limit.replace('_', '-')} flag)")


def _number(value: float) -> str:
    """12345678 -> "12,345,678"; 1.5 -> "1.5" (limits are shown in full, never in e-notation)."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.1f}"
