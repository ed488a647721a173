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
