"""Canvas geometry: where a source frame lands on the canvas the patches are cut from.

Two layouts: a fixed square (letterboxed: the frame scaled to fit, centred, the rest padding) or native
aspect (scaled so the longer side is at most ``max_side``, then padded up to whole patches). Pure numpy/
OpenCV; all sizes in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CanvasGeometry:
    """A source frame of ``source_size`` placed on a ``(canvas_h, canvas_w)`` canvas of ``patch`` patches.

    Attributes:
        source_width, source_height: source frame size.
        canvas_width, canvas_height: canvas size (multiples of ``patch``).
        content_x, content_y, content_width, content_height: the box the frame occupies on the canvas.
        patch: patch side.
    """

    source_width: int
    source_height: int
    canvas_width: int
    canvas_height: int
    content_x: int
    content_y: int
    content_width: int
    content_height: int
    patch: int

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of patches on the canvas."""
        return self.canvas_height // self.patch, self.canvas_width // self.patch

    @property
    def scale(self) -> tuple[float, float]:
        """(x, y) canvas pixels per source pixel."""
        return self.content_width / self.source_width, self.content_height / self.source_height

    @property
    def content_slices(self) -> tuple[slice, slice]:
        """(rows, cols) slices of the canvas that hold the frame's pixels: ``canvas[geometry.content_slices]``."""
        return (slice(self.content_y, self.content_y + self.content_height),
                slice(self.content_x, self.content_x + self.content_width))

    @property
    def picture_patch_slices(self) -> tuple[slice, slice]:
        """(rows, cols) slices of the patch grid that cover the picture: every patch outside them is all padding."""
        patch = self.patch
        return (slice(self.content_y // patch, -(-(self.content_y + self.content_height) // patch)),
                slice(self.content_x // patch, -(-(self.content_x + self.content_width) // patch)))

    def content_mask(self) -> np.ndarray:
        """(canvas_h, canvas_w) bool, True on the frame's pixels, False on padding."""
        mask = np.zeros((self.canvas_height, self.canvas_width), bool)
        mask[self.content_slices] = True
        return mask

    def patch_content_fraction(self) -> np.ndarray:
        """(rows, cols) float32: the fraction of each patch covered by the frame (0 = pure padding)."""
        return sum_pool(self.content_mask().astype(np.float32), self.patch) / float(self.patch * self.patch)

    def place(self, content: np.ndarray, fill: float = 0) -> np.ndarray:
        """Put a (content_h, content_w, ...) array onto a canvas-sized array filled with ``fill``."""
        canvas = np.full((self.canvas_height, self.canvas_width, *content.shape[2:]), fill, content.dtype)
        canvas[self.content_slices] = content
        return canvas

    def map_to_canvas(self, block_map: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Resample a per-block map (gh, gw[, C]) of the source frame to canvas pixels (canvas_h, canvas_w[, C]).

        Each canvas pixel gets the value of the block it shows (bilinear between block centres); padding
        gets ``fill``.
        """
        content = cv2.resize(block_map.astype(np.float32, copy=False), (self.content_width, self.content_height),
                             interpolation=cv2.INTER_LINEAR)
        return self.place(content, fill)


def square_geometry(source_width: int, source_height: int, size: int, patch: int) -> CanvasGeometry:
    """Letterbox the frame into a ``size`` x ``size`` square, centred."""
    ratio = min(size / source_width, size / source_height)
    width, height = max(1, round(source_width * ratio)), max(1, round(source_height * ratio))
    return CanvasGeometry(source_width, source_height, size, size, (size - width) // 2, (size - height) // 2, width, height, patch)


def native_geometry(source_width: int, source_height: int, max_side: int, patch: int) -> CanvasGeometry:
    """Keep the aspect ratio: longer side at most ``max_side`` (never upscaled), padded to whole patches
    at the bottom/right."""
    ratio = min(1.0, max_side / max(source_width, source_height))
    width, height = max(1, round(source_width * ratio)), max(1, round(source_height * ratio))
    canvas_w, canvas_h = -(-width // patch) * patch, -(-height // patch) * patch
    return CanvasGeometry(source_width, source_height, canvas_w, canvas_h, 0, 0, width, height, patch)


def exact_geometry(source_width: int, source_height: int, width: int, height: int, patch: int) -> CanvasGeometry:
    """Resize to exactly ``width`` x ``height`` (aspect not kept), padded to whole patches at the bottom/right."""
    canvas_w, canvas_h = -(-width // patch) * patch, -(-height // patch) * patch
    return CanvasGeometry(source_width, source_height, canvas_w, canvas_h, 0, 0, width, height, patch)


def canvas_geometry(width: int, height: int, config) -> CanvasGeometry:
    """The canvas of a ``width`` x ``height`` frame under a PatchifyConfig: ``exact_size``, else
    ``max_side`` (native aspect), else the ``size`` square."""
    if config.exact_size is not None:
        return exact_geometry(width, height, *config.exact_size, config.patch)
    if config.max_side is not None:
        return native_geometry(width, height, config.max_side, config.patch)
    return square_geometry(width, height, config.size, config.patch)


def sum_pool(values: np.ndarray, patch: int) -> np.ndarray:
    """Sum (..., H, W) over non-overlapping patch x patch windows -> (..., H/patch, W/patch)."""
    *lead, h, w = values.shape
    return values.reshape(*lead, h // patch, patch, w // patch, patch).sum(axis=(-3, -1))


def patches_of(frames: np.ndarray, patch: int) -> np.ndarray:
    """(T, H, W, 3) canvas frames -> (T, H/patch, W/patch, 3, patch, patch) view-ordered patches."""
    t, h, w, c = frames.shape
    return frames.reshape(t, h // patch, patch, w // patch, patch, c).transpose(0, 1, 3, 5, 2, 4)
