"""Pictures of a patch selection: kept patches bright and outlined, dropped ones dimmed, motion as arrows,
budget and fidelity in a caption. Pure drawing on numpy arrays; writing files is at the bottom."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .decode import write_rgb_video
from .metrics import fields_on_canvas
from .patchify import ClipSamples, PatchSet
from .patchify._geometry import sum_pool

_KEPT_COLOUR = (60, 220, 90)
_ARROW_COLOUR = (255, 80, 60)
_DIM = 0.3


def draw_selection(samples: ClipSamples, patches: PatchSet, arrow_gain: float = 3.0) -> np.ndarray:
    """(T, H, W, 3) uint8 canvas frames with the selection drawn on them.

    Arrows start at each moving patch's centre and point where its content moved since the previous
    sample (composed block field, averaged over the patch, lengthened by ``arrow_gain``).
    """
    frames = samples.canvas_frames()
    patch = samples.geometry.patch
    kept_pixels = np.repeat(np.repeat(patches.kept, patch, axis=1), patch, axis=2)[..., None]
    drawn = np.where(kept_pixels, frames, (frames * _DIM).astype(np.uint8))
    fields = fields_on_canvas(samples)
    patch_motion = sum_pool(np.moveaxis(fields, -1, 1), patch) / float(patch * patch)  # (T, 2, rows, cols)
    drawn = np.ascontiguousarray(drawn)
    for t in range(samples.n_samples):
        tile = drawn[t]
        rows, cols = np.nonzero(patches.kept[t])
        for row, col in zip(rows, cols):
            cv2.rectangle(tile, (col * patch, row * patch), (col * patch + patch - 1, row * patch + patch - 1), _KEPT_COLOUR, 1)
        dx, dy = -patch_motion[t, 0], -patch_motion[t, 1]  # the field points back in time; arrows forward
        moving_rows, moving_cols = np.nonzero(np.hypot(dx, dy) > 0.5)
        for row, col in zip(moving_rows, moving_cols):
            centre = (int(col * patch + patch // 2), int(row * patch + patch // 2))
            tip = (int(round(centre[0] + arrow_gain * dx[row, col])), int(round(centre[1] + arrow_gain * dy[row, col])))
            cv2.arrowedLine(tile, centre, tip, _ARROW_COLOUR, 1, cv2.LINE_AA, tipLength=0.3)
        label = f"t={patches.timeline[t]} f={samples.frame_indices[t]} {samples.picture_types[t]} {int(patches.kept[t].sum())}/{int(patches.kept[t].size)}"
        _text(tile, label, (3, tile.shape[0] - 5), 0.38)
    return drawn


def caption(patches: PatchSet, psnr: dict[str, float | None] | None) -> str:
    """One line: clip, budget, tokens kept and the share of the picture's *area* they cover (padding never
    counts), then the rebuild PSNRs."""
    text = (f"{Path(patches.info.source).name}  clip {patches.info.clip_index}  {patches.mode}  budget {patches.budget}: "
            f"{patches.n_kept} tokens, {100.0 * patches.area_fraction:.1f}% of picture area")
    if psnr:
        text += "  PSNR " + "  ".join(f"{k} {v:.1f} dB" if v is not None else f"{k} exact" for k, v in psnr.items())
    return text


def contact_sheet(tiles: np.ndarray, title: str, columns: int = 8, max_tiles: int = 16) -> np.ndarray:
    """A grid of up to ``max_tiles`` evenly chosen tiles (N, H, W, 3) under a title bar."""
    count = min(max_tiles, len(tiles))
    chosen = np.round(np.linspace(0, len(tiles) - 1, count)).astype(int) if len(tiles) > 1 else np.zeros(1, int)
    columns = min(columns, count)
    rows = -(-count // columns)
    height, width = tiles.shape[1:3]
    sheet = np.full((rows * (height + 4) + 30, columns * (width + 4), 3), 24, np.uint8)
    for slot, index in enumerate(chosen):
        y, x = 30 + (slot // columns) * (height + 4), (slot % columns) * (width + 4)
        sheet[y : y + height, x : x + width] = tiles[index]
    _text(sheet, title, (6, 20), 0.5)
    return sheet


def with_title(tiles: np.ndarray, title: str) -> np.ndarray:
    """Each tile with a title bar on top (for video output)."""
    out = np.full((tiles.shape[0], tiles.shape[1] + 24, max(tiles.shape[2], 16), 3), 24, np.uint8)
    out[:, 24:, : tiles.shape[2]] = tiles
    for frame in out:
        _text(frame, title, (4, 16), 0.4)
    return out


def _text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float) -> None:
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def save_picture(samples: ClipSamples, patches: PatchSet, psnr: dict[str, float | None] | None, out: str | Path,
                 columns: int = 8, max_tiles: int = 16, fps: float = 4.0) -> Path:
    """Write a PNG contact sheet (or, for .mp4, a video of every sampled frame) of the selection."""
    out = Path(out)
    tiles = draw_selection(samples, patches)
    title = caption(patches, psnr)
    if out.suffix.lower() == ".mp4":
        write_rgb_video(with_title(tiles, title), out, fps=fps)
    elif out.suffix.lower() in (".png", ".jpg", ".jpeg"):
        sheet = contact_sheet(tiles, title, columns, max_tiles)
        if not cv2.imwrite(str(out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
            raise OSError(f"{out}: could not write the picture")
    else:
        raise ValueError(f"{out}: the picture must be .png, .jpg or .mp4")
    return out
