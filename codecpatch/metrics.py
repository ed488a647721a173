"""How much of the picture a patch selection carries, measured without a VLM.

Each sampled frame is rebuilt from the kept patches: a kept patch is exact, a missing one is filled from
the previous rebuilt frame, either motion-compensated by the block field composed over the frames in
between ("mc") or simply held ("hold"). PSNR (and SSIM on luma) against the decoded sampled frames, over
the frame's pixels only (canvas padding excluded). Pure numpy/OpenCV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from .patchify import ClipSamples, kept_area_fraction, random_patches, uniform_frames

Fill = Literal["mc", "hold"]


@dataclass(frozen=True)
class Fidelity:
    """Rebuild quality of one selection on one clip.

    Attributes:
        psnr_db: PSNR over all sampled frames' content pixels, dB (inf when the rebuild is exact).
        ssim: mean SSIM of the luma of the sampled frames (1.0 = exact).
        n_kept, n_dense: tokens kept / tokens in the dense grid (padding-only patches included).
        area_fraction: share of the clip's picture area the kept patches cover (what budgets are compared
            at: equal area, never equal canvas tokens).
    """

    psnr_db: float
    ssim: float
    n_kept: int
    n_dense: int
    area_fraction: float

    @property
    def keep_ratio(self) -> float:
        return self.n_kept / self.n_dense

    def psnr_or_none(self) -> float | None:
        """PSNR rounded for JSON, None when infinite (exact rebuild)."""
        return None if math.isinf(self.psnr_db) else round(self.psnr_db, 3)


def fields_on_canvas(samples: ClipSamples) -> np.ndarray:
    """(T, canvas_h, canvas_w, 2) float32 composed fields (sample t -> t-1) in canvas pixels."""
    scale_x, scale_y = samples.geometry.scale
    scale = np.float32([scale_x, scale_y])
    return np.stack([samples.geometry.map_to_canvas(field) * scale for field in samples.field_from_previous])


def rebuild(frames: np.ndarray, kept: np.ndarray, patch: int, fields: np.ndarray | None, fill: Fill,
            content_box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Rebuild each sampled frame from its kept patches.

    Args:
        frames: (T, H, W, 3) uint8 canvas frames (the truth).
        kept: (T, H/patch, W/patch) bool selection.
        fields: (T, H, W, 2) float32 displacement from frame t into frame t-1 (canvas px); needed for "mc".
        fill: "mc" warps the previous rebuilt frame by the field; "hold" copies it.
        content_box: (x, y, width, height) of the picture on the canvas; warping samples only inside it
            (edges replicated), so letterbox padding never bleeds into the picture. None: the whole canvas.
    Returns:
        (T, H, W, 3) uint8. Missing patches of the first frame are mid-grey; padding is copied as is.
    """
    n, h, w, _ = frames.shape
    x0, y0, box_w, box_h = content_box or (0, 0, w, h)
    box = (slice(y0, y0 + box_h), slice(x0, x0 + box_w))
    pixel_kept = np.repeat(np.repeat(kept, patch, axis=1), patch, axis=2)[:, box[0], box[1], None]
    xs, ys = np.meshgrid(np.arange(box_w, dtype=np.float32), np.arange(box_h, dtype=np.float32))
    rebuilt = frames.copy()
    previous = np.full((box_h, box_w, 3), 128, np.uint8)
    for t in range(n):  # a loop over frames: each depends on the one before
        truth = frames[t][box]
        if t > 0 and fill == "mc" and fields is not None:
            field = fields[t][box]
            predicted = cv2.remap(previous, xs + field[..., 0], ys + field[..., 1], interpolation=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
        else:
            predicted = previous
        previous = np.where(pixel_kept[t], truth, predicted)
        rebuilt[t][box] = previous
    return rebuilt


def psnr(reference: np.ndarray, rebuilt: np.ndarray, mask: np.ndarray) -> float:
    """PSNR in dB over the pixels where ``mask`` (H, W) is True, all frames and channels pooled."""
    difference = reference.astype(np.float32)[:, mask] - rebuilt.astype(np.float32)[:, mask]
    mse = float(np.mean(difference * difference))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 * 255.0 / mse)


def ssim_luma(reference: np.ndarray, rebuilt: np.ndarray, mask: np.ndarray) -> float:
    """Mean SSIM (Gaussian window, sigma 1.5) of the luma of (T, H, W, 3) frames over ``mask`` pixels."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    weights = np.float32([0.299, 0.587, 0.114])
    values = []
    for a, b in zip(reference, rebuilt):
        x, y = a.astype(np.float32) @ weights, b.astype(np.float32) @ weights
        blur = lambda image: cv2.GaussianBlur(image, (11, 11), 1.5)  # noqa: E731
        mx, my = blur(x), blur(y)
        sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        ssim_map = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        values.append(float(ssim_map[mask].mean()))
    return float(np.mean(values))


def selection_fidelity(samples: ClipSamples, kept: np.ndarray, fill: Fill = "hold", frames: np.ndarray | None = None,
                       fields: np.ndarray | None = None) -> Fidelity:
    """Fidelity of a (T, H, W) selection on ``samples``; "hold" (default) is the independent metric: kept
    patches copied from the decoded frames, the rest held from the previous rebuilt frame."""
    frames = samples.canvas_frames() if frames is None else frames
    if fill == "mc" and fields is None:
        fields = fields_on_canvas(samples)
    g = samples.geometry
    rebuilt = rebuild(frames, kept, g.patch, fields, fill, (g.content_x, g.content_y, g.content_width, g.content_height))
    mask = samples.geometry.content_mask()
    area = kept_area_fraction(kept, g.patch_content_fraction())
    return Fidelity(psnr(frames, rebuilt, mask), ssim_luma(frames, rebuilt, mask), int(kept.sum()), int(kept.size), area)


def compare_selections(samples: ClipSamples, kept: np.ndarray, whole: list[int], seed: int = 0,
                       fill: Fill = "hold") -> dict[str, Fidelity]:
    """The selection against baselines at the same picture area, all rebuilt with the same ``fill``.

    Uniform gets as many whole frames as the selection's picture area is worth (rounded), random the
    selection's token count; every selection keeps only patches that hold picture and each Fidelity
    reports its own ``area_fraction`` (they match to one patch; uniform to the nearest whole frame, halves up).
    Returns {"codec": the selection, "uniform": evenly spaced whole frames, "random": the same whole
    frames plus seeded random patches}.
    """
    frames = samples.canvas_frames()
    fields = fields_on_canvas(samples) if fill == "mc" else None
    content = samples.geometry.patch_content_fraction() > 0
    budget = int((kept & content[None]).sum())
    whole_frames = int(kept_area_fraction(kept, samples.geometry.patch_content_fraction()) * samples.n_samples + 0.5)
    per_frame = int(content.sum())
    uniform_kept, _ = uniform_frames(samples.n_samples, content, whole_frames * per_frame if whole_frames else budget)
    random_kept = random_patches(samples.n_samples, content, budget, whole, seed)
    return {
        "codec": selection_fidelity(samples, kept, fill, frames, fields),
        "uniform": selection_fidelity(samples, uniform_kept, fill, frames, fields),
        "random": selection_fidelity(samples, random_kept, fill, frames, fields),
    }
