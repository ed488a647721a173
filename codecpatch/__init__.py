"""codecpatch: video -> compact visual tokens, using what the codec already knows."""

from .decode import CodecFrame, DecodeOptions, DecodeReport, StreamInfo, VideoReader, read_frames
from .errors import VideoError

__version__ = "0.1.0"

__all__ = ["CodecFrame", "DecodeOptions", "DecodeReport", "StreamInfo", "VideoError", "VideoReader", "read_frames", "__version__"]
