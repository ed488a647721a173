"""What happens to a clip or video that fails: an error policy, chosen by the caller (as webdataset's
``handler=``). Batch runs and live streams record the failure and go on (one bad input never takes other
work down); the Python API raises it.

A policy is called inside ``except`` with the exception, the stage the work was in and the source (its
credentials are redacted from the message); it returns the recorded (stage, kind, message) or raises.
"""

from __future__ import annotations

import traceback
from typing import Callable

from ..decode import redact_text
from ..errors import VideoError

#: (error, stage, source, where) -> (stage, kind, message), or raises.
ErrorPolicy = Callable[..., "tuple[str, str, str]"]
#: Characters of traceback kept in the message of an unexpected error (a bug or a library's own failure).
_TRACEBACK_CHARS = 500


def record_and_continue(error: BaseException, stage: str, source: str, where: str | None = None) -> tuple[str, str, str]:
    """Record the failure: (stage, kind, message). Bad input (a VideoError) keeps its kind and message; any
    other exception is a bug or an unexpected library error, recorded with its type and the end of its
    traceback. ``where`` names the work in the message (default: the error's own text or the source);
    credentials in ``source`` are removed from the message."""
    if isinstance(error, VideoError):
        message = f"{where}: {error}" if where else str(error)
        return stage, error.kind, redact_text(message, source)
    message = f"{where or source}: {error} | {traceback.format_exc(limit=3)[-_TRACEBACK_CHARS:]}"
    return stage, type(error).__name__, redact_text(message, source)


def reraise(error: BaseException, stage: str, source: str, where: str | None = None) -> tuple[str, str, str]:
    """Raise the failure (the Python API: the caller sees the exception itself)."""
    raise error
