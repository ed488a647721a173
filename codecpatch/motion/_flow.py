"""Motion estimated from pixels, for codecs that export no motion vectors (HEVC, VP9, AV1, ...).

OpenCV's DIS optical flow on downscaled luma, pooled onto the same block grid and in the same convention
as codec vectors (displacement from the current frame into the previous one, in full-resolution pixels).

DIS estimates on a pyramid down to its preset's *finest scale* (2 for "ultrafast" and "fast": a quarter of
the input's side; 1 for "medium") and then upsamples the flow to the input size, refining it there: a
full-size step that a block grid does not need. So the flow may run on a luma
smaller than the one it is given (the residual's analysis luma): halved while its longer side exceeds
``max_side``, never below one flow pixel per grid cell, with the finest scale lowered by as many levels, so
that DIS still estimates at the same resolution as on the full analysis luma (as long as the preset's finest
scale allows). ``benchmarks/flow_fallback.py`` measures what each preset and size costs and keeps.
"""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np

FlowPreset = Literal["ultrafast", "fast", "medium"]

#: The least ``max_side`` accepted, and the shorter side the flow luma is never halved below (DIS matches 8x8
#: patches).
MIN_FLOW_SIDE = 16


def flow_halvings(shape: tuple[int, int], grid_shape: tuple[int, int], max_side: int | None) -> int:
    """How many times to halve a (h, w) luma before the flow so that its longer side is at most ``max_side``.

    Never so often that a flow pixel would cover more than one cell of the (gh, gw) grid (a halved side
    may fall one pixel short of the grid: the partial cell at the bottom/right edge), nor below
    MIN_FLOW_SIDE pixels on the shorter side. ``max_side=None``: no halving.
    """
    if max_side is None:
        return 0
    (h, w), (gh, gw) = shape, grid_shape
    halvings = 0
    while max(h, w) > max_side and h // 2 >= max(gh - 1, MIN_FLOW_SIDE) and w // 2 >= max(gw - 1, MIN_FLOW_SIDE):
        h, w = h // 2, w // 2
        halvings += 1
    return halvings


def dis_coarsest_scale(shape: tuple[int, int], patch_size: int) -> int:
    """The coarsest pyramid level OpenCV's DIS builds for a (h, w) image with ``patch_size`` patches, as its
    ``calc`` computes it: the level where a quarter of the longer side is one patch (rounded), but not so deep
    that the shorter side falls below one patch (an integer division there, and C's truncation toward zero).
    Negative when the shorter side is under one patch, or the longer under two: DIS refuses such an image.

    When this falls below the finest scale DIS is set to, DIS picks its own patch size and scales instead, and
    on some of those images (16x82, 24x80, 28x200 pixels, ... with the "fast" and "ultrafast" presets) it reads
    past its buffers: a segmentation fault that takes the whole process down (measured over every size from 4
    to 330 px, every preset; OpenCV 5.1). ``OpticalFlowEstimator`` therefore never sets a finest scale above it.
    """
    h, w = shape
    patches_across = min(h, w) // patch_size
    if patches_across < 1 or max(h, w) <= 0:
        return -1
    by_long_side = int(math.log(max(h, w) / (4.0 * patch_size)) / math.log(2.0) + 0.5)
    by_short_side = int(math.log(patches_across) / math.log(2.0))
    return min(by_long_side, by_short_side)


def halve(luma: np.ndarray, times: int) -> np.ndarray:
    """(h >> times, w >> times) uint8 box-filtered luma (OpenCV's 2x area path, applied ``times`` times; an odd side drops its last row or column)."""
    for _ in range(times):
        luma = cv2.resize(luma, (luma.shape[1] // 2, luma.shape[0] // 2), interpolation=cv2.INTER_AREA)
    return luma


def pool_to_grid(flow: np.ndarray, grid_shape: tuple[int, int]) -> np.ndarray:
    """(gh, gw, 2) float32 mean of a (h, w, 2) flow over the cells of a grid covering it.

    Cells are ``ceil(h/gh) x ceil(w/gw)`` pixels; partial cells at the bottom/right edge are completed by
    replicating the edge pixels (the same pooling as ``block_mean``, both channels at once).
    """
    gh, gw = grid_shape
    h, w = flow.shape[:2]
    cell_h, cell_w = -(-h // gh), -(-w // gw)
    flow = np.ascontiguousarray(flow, np.float32)
    if (gh * cell_h, gw * cell_w) != (h, w):
        flow = cv2.copyMakeBorder(flow, 0, gh * cell_h - h, 0, gw * cell_w - w, cv2.BORDER_REPLICATE)
    if (cell_h, cell_w) == (1, 1):
        return flow
    # INTER_AREA with an integer ratio is an exact box mean. Channel by channel: a two-channel resize rounds
    # differently in the last bit (the rows of the default settings must not change).
    return np.stack([cv2.resize(np.ascontiguousarray(flow[..., c]), (gw, gh), interpolation=cv2.INTER_AREA) for c in (0, 1)], axis=-1)


class OpticalFlowEstimator:
    """Dense DIS optical flow pooled to a block grid. Keeps one OpenCV DIS instance (not thread-safe).

    Args:
        preset: OpenCV DIS preset name: "ultrafast", "fast" or "medium".
        max_side: the flow runs on the given luma halved until its longer side is at most this many pixels
            (see ``flow_halvings``); None runs it on the given luma.
    """

    _PRESETS = {
        "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
        "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
        "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
    }

    def __init__(self, preset: FlowPreset = "fast", max_side: int | None = None) -> None:
        if preset not in self._PRESETS:
            raise ValueError(f"preset must be one of {sorted(self._PRESETS)}, got {preset!r}")
        if max_side is not None and max_side < MIN_FLOW_SIDE:
            raise ValueError(f"max_side must be >= {MIN_FLOW_SIDE} (or None), got {max_side}")
        self.preset, self.max_side = preset, max_side
        self._dis = cv2.DISOpticalFlow_create(self._PRESETS[preset])
        self._preset_finest_scale = self._dis.getFinestScale()
        self._plans: dict[tuple, tuple[int, int] | None] = {}  # (luma shape, grid) -> _plan's answer

    def estimates(self, shape: tuple[int, int], grid_shape: tuple[int, int]) -> bool:
        """Whether ``block_field`` estimates flow on a (h, w) analysis luma with a (gh, gw) grid: False only for an
        image DIS refuses (``dis_coarsest_scale`` below 0: a side under one 8-px patch, or the longer side under
        ~12 px), which gets a zero field (no motion)."""
        return self._plan(shape, grid_shape) is not None

    def _plan(self, shape: tuple[int, int], grid_shape: tuple[int, int]) -> tuple[int, int] | None:
        """(halvings, finest scale) of the flow on a (h, w) luma with a (gh, gw) grid, or None for an image DIS
        refuses; worked out once per geometry. The finest scale is the preset's, lowered by the halvings (when
        ``max_side`` is set), and never below the coarsest scale DIS builds for the halved image
        (``dis_coarsest_scale``; at common sizes it is far above, and the preset's scale is kept)."""
        key = (tuple(shape), tuple(grid_shape))
        if key not in self._plans:
            halvings = flow_halvings(shape, grid_shape, self.max_side)
            coarsest = dis_coarsest_scale((shape[0] >> halvings, shape[1] >> halvings), self._dis.getPatchSize())
            finest = max(self._preset_finest_scale - halvings, 0) if self.max_side is not None else self._preset_finest_scale
            self._plans[key] = (halvings, min(finest, coarsest)) if coarsest >= 0 else None
        return self._plans[key]

    def block_field(
        self, current_luma: np.ndarray, previous_luma: np.ndarray, grid_shape: tuple[int, int], pixel_scale: float
    ) -> np.ndarray:
        """(gh, gw, 2) float32 displacement into the previous frame, in full-resolution pixels; zeros for an image
        DIS refuses (``estimates``).

        Args:
            current_luma, previous_luma: (h, w) uint8 luma at analysis resolution (same shape).
            grid_shape: (gh, gw) of the output block grid.
            pixel_scale: full-resolution pixels per analysis pixel (e.g. 2.0 when luma was halved).
        """
        plan = self._plan(current_luma.shape, grid_shape)
        if plan is None:
            return np.zeros((*grid_shape, 2), np.float32)  # an image DIS refuses: no motion
        halvings, finest = plan
        current, previous = halve(current_luma, halvings), halve(previous_luma, halvings)
        # Set before every call, never above the image's coarsest scale: DIS would otherwise pick its own scales
        # (and keep them for the next image), which crashes the process on some small images.
        self._dis.setFinestScale(finest)
        # calc(I0=current, I1=previous) gives f with current(x) ~= previous(x + f(x)): the codec's src - dst.
        flow = self._dis.calc(current, previous, None)
        return (pool_to_grid(flow, grid_shape) * (pixel_scale * 2**halvings)).astype(np.float32)
