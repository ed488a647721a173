"""The floor of any Python tool built on PyAV: a fresh interpreter that imports numpy, PyAV and OpenCV and
decodes CLIP single-threaded with motion-vector export, reading each frame's vectors as an array, nothing else.

    python benchmarks/_floor.py CLIP

``benchmarks/patchify_command.py`` times it beside FFmpeg and ``codecpatch patchify``: what patchify costs
above this line is ours; what this line costs above FFmpeg is the interpreter, the imports and PyAV.
"""

from __future__ import annotations

import sys

import av
import cv2  # noqa: F401 - imported because every analysis needs it: its import is part of the floor
import numpy as np  # noqa: F401
from av.sidedata.sidedata import SideDataContainer


def main(path: str) -> int:
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.options = {"flags2": "+export_mvs"}
        stream.codec_context.thread_count = 1
        frames = 0
        for packet in container.demux(stream):
            for frame in packet.decode():
                vectors = SideDataContainer(frame).get("MOTION_VECTORS")
                if vectors is not None:
                    vectors.to_ndarray()
                frames += 1
    return frames


if __name__ == "__main__":
    main(sys.argv[1])
