"""Motion estimated from pixels, for codecs that export no motion vectors (HEVC, VP9, AV1, ...).

OpenCV's DIS optical flow on downscaled luma, pooled onto the same block grid and in the same convention
as codec vectors (displacement from the current frame into the previous one, in full-resolution pixels).
"""

from __future__ import annotations

import cv2
import numpy as np

from ._residual import block_mean


class OpticalFlowEstimator:
    """Dense DIS optical flow pooled to a block grid. Keeps one OpenCV DIS instance (not thread-safe).

    Args:
        preset: OpenCV DIS preset name: "ultrafast", "fast" or "medium".
    """

    _PRESETS = {
        "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
        "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
        "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
    }

    def __init__(self, preset: str = "fast") -> None:
        if preset not in self._PRESETS:
            raise ValueError(f"preset must be one of {sorted(self._PRESETS)}, got {preset!r}")
        self._dis = cv2.DISOpticalFlow_create(self._PRESETS[preset])

    def block_field(
        self, current_luma: np.ndarray, previous_luma: np.ndarray, grid_shape: tuple[int, int], pixel_scale: float
    ) -> np.ndarray:
        """(gh, gw, 2) float32 displacement into the previous frame, in full-resolution pixels.

        Args:
            current_luma, previous_luma: (h, w) uint8 luma at analysis resolution (same shape).
            grid_shape: (gh, gw) of the output block grid.
            pixel_scale: full-resolution pixels per analysis pixel (e.g. 2.0 when luma was halved).
        """
        # calc(I0=current, I1=previous) gives f with current(x) ~= previous(x + f(x)): the codec's src - dst.
        flow = self._dis.calc(current_luma, previous_luma, None)
        field = np.stack([block_mean(flow[..., 0], grid_shape), block_mean(flow[..., 1], grid_shape)], axis=-1)
        return (field * pixel_scale).astype(np.float32)
