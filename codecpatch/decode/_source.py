"""Opening a source (file, URL, capture device) with PyAV, mapping every failure to a typed error."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import av

from ..errors import (
    EmptyVideoError,
    InvalidVideoError,
    NoVideoStreamError,
    SourceTimeoutError,
    UnsupportedCodecError,
    VideoNotFoundError,
    VideoOpenError,
)

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_url(source: str) -> bool:
    """True for ``scheme://...`` sources (rtsp, rtmp, http(s), tcp, udp, srt, file, ...)."""
    return bool(_URL.match(source))


_SECRET_KEYS = ("pass", "pwd", "token", "key", "secret", "auth", "sig", "cred")


def redact(source: str) -> str:
    """``source`` safe to record: a URL's user name and password become ``***``, and so do query values whose
    key looks secret (token, key, password, signature, ...). Paths and devices come back unchanged.

    The one redaction every output path uses (batch rows, error tables, manifests, stats, stream logs): use
    ``redact_text`` for messages that may quote the source."""
    if not is_url(source):
        return source
    parts = urlsplit(source)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if any(word in k.lower() for word in _SECRET_KEYS) else v) for k, v in pairs], safe="*/:")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str, source: str) -> str:
    """``text`` (an error message, a log line) with every occurrence of ``source`` replaced by
    ``redact(source)``, and any other URL credentials in it masked too."""
    public = redact(source)
    if public != source:
        text = text.replace(source, public)
    return _URL_IN_TEXT.sub(lambda match: redact(match.group(0)), text)


_URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def default_input_format(source: str) -> str | None:
    """The demuxer to force for a source, or None to let FFmpeg probe. Capture devices need one."""
    if source.startswith("/dev/video"):
        return "v4l2"
    return None


def open_container(
    source: str | os.PathLike,
    *,
    input_format: str | None,
    open_timeout: float,
    read_timeout: float,
    options: dict[str, str],
) -> av.container.InputContainer:
    """Open ``source`` and check it has a decodable video stream.

    Raises:
        VideoNotFoundError, EmptyVideoError: local file missing or 0 bytes.
        InvalidVideoError: FFmpeg does not recognise the data.
        NoVideoStreamError: no video stream (e.g. audio-only).
        UnsupportedCodecError: no decoder for the video codec.
        SourceTimeoutError: opening took longer than ``open_timeout`` seconds.
        VideoOpenError: any other failure to open.
    """
    source_str = os.fspath(source)
    local = not is_url(source_str) and not source_str.startswith("/dev/")
    if local:
        path = Path(source_str)
        if not path.exists():
            raise VideoNotFoundError(source_str, "no such file")
        if path.is_dir():
            raise VideoOpenError(source_str, "is a directory, not a video file")
        if path.stat().st_size == 0:
            raise EmptyVideoError(source_str, "file is empty (0 bytes)")
    try:
        container = av.open(
            source_str,
            mode="r",
            format=input_format or default_input_format(source_str),
            options=options,
            timeout=(open_timeout, read_timeout),
        )
    except av.error.ExitError as error:  # raised when the interrupt callback fires (timeout)
        raise SourceTimeoutError(source_str, f"no answer within {open_timeout:g} s ({error.strerror})") from error
    except av.error.InvalidDataError as error:
        if local and _looks_like_mp4(source_str):
            reason = "MP4/MOV file without a readable index (moov atom): truncated or still being written"
        else:
            reason = "not a recognised video file or stream"
        raise InvalidVideoError(source_str, f"{reason} ({error.strerror})") from error
    except av.error.FileNotFoundError as error:
        raise VideoNotFoundError(source_str, f"not found ({error.strerror})") from error
    except UnicodeDecodeError as error:  # PyAV reads the container's metadata as UTF-8: damaged bytes there
        raise InvalidVideoError(source_str, f"not a recognised video file or stream (unreadable metadata: {error.reason})") from error
    except (av.error.FFmpegError, OSError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        if "timed out" in str(reason).lower():
            raise SourceTimeoutError(source_str, f"no answer within {open_timeout:g} s") from error
        raise VideoOpenError(source_str, f"could not open ({reason})") from error

    try:
        if not container.streams.video:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
            raise NoVideoStreamError(source_str, f"no video stream (streams present: {kinds})")
        stream = container.streams.video[0]
        if stream.codec_context is None or stream.codec_context.codec is None:
            raise UnsupportedCodecError(source_str, "no decoder for the video stream's codec")
    except BaseException:
        container.close()
        raise
    return container


def _looks_like_mp4(path: str) -> bool:
    """True when the file starts with an ISO-BMFF box header (``....ftyp``)."""
    with open(path, "rb") as handle:
        head = handle.read(12)
    return len(head) >= 8 and head[4:8] == b"ftyp"
