"""codecpatch: video -> compact visual tokens, using what the codec already knows.

The decode names below are imported on first use, so importing a pure part (e.g. ``codecpatch.patchify``
for ``patchify_samples``) does not load PyAV.
"""

__version__ = "0.2.3"

_DECODE = ("CodecFrame", "DecodeOptions", "DecodeReport", "StreamInfo", "VideoReader", "read_frames")


def __getattr__(name: str):
    if name in _DECODE:
        from . import decode

        return getattr(decode, name)
    if name == "VideoError":
        from .errors import VideoError

        return VideoError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CodecFrame", "DecodeOptions", "DecodeReport", "StreamInfo", "VideoError", "VideoReader", "read_frames", "__version__"]
