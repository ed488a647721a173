"""Pictures of a patch selection: kept patches bright and outlined, dropped ones dimmed, motion as arrows,
budget and fidelity in a caption. Pure drawing on numpy arrays; writing files is at the bottom."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .decode import write_rgb_video
from .metrics import fields_on_canvas
from .patchify import ClipSamples, PatchSet
from .patchify import sum_pool

_KEPT_COLOUR = (60, 220, 90)
_ARROW_COLOUR = (255, 80, 60)
_DIM = 0.3
#: Arrows are drawn only where a patch moved more than this many canvas pixels ...
_MIN_ARROW_PX = 1.0
#: ... and more than this many times the clip's median patch motion (codec vectors of a still scene jitter).
_NOISE_FACTOR = 3.0
_WHOLE_REASONS = {"first": "first frame kept whole", "I-frame": "I-frame kept whole",
                  "static fallback": "static clip: whole frame", "chunk": "chunk mode: whole frame",
                  "image": "image mode: whole frame"}


def moving_patches(patch_motion: np.ndarray, static_clip: bool, kept: np.ndarray | None = None) -> np.ndarray:
    """(T, rows, cols) bool: the patches whose motion is above noise (arrows are drawn there).

    ``patch_motion``: (T, 2, rows, cols) mean displacement per patch, canvas pixels. A patch counts when it
    moved more than ``_MIN_ARROW_PX`` and more than ``_NOISE_FACTOR`` x the clip's median patch motion, and,
    with ``kept`` ((T, rows, cols) bool), only when the selection kept it (codec vectors in flat or dark
    areas jitter by pixels without any residual; the selection, which also weighs the residual, ignores
    them). A clip the selection judged static has none."""
    magnitude = np.hypot(patch_motion[:, 0], patch_motion[:, 1])
    if static_clip or magnitude.size == 0:
        return np.zeros(magnitude.shape, bool)
    floor = max(_MIN_ARROW_PX, _NOISE_FACTOR * float(np.median(magnitude)))
    moving = magnitude > floor
    return moving if kept is None else moving & kept


def tile_label(slot: int, frame_index: int | None, picture_type: str, kept: int, total: int) -> str:
    """The line under one tile: timeline slot, decoded frame index, picture type, kept/total patches."""
    frame = f" f={frame_index}" if frame_index is not None else ""
    return f"t={slot}{frame} {picture_type} {kept}/{total}"


def _outline(tile: np.ndarray, kept: np.ndarray, patch: int) -> None:
    """Outline each kept patch ((rows, cols) bool) of ``tile`` in place."""
    for row, col in zip(*np.nonzero(kept)):
        cv2.rectangle(tile, (col * patch, row * patch), (col * patch + patch - 1, row * patch + patch - 1), _KEPT_COLOUR, 1)


def draw_selection(samples: ClipSamples, patches: PatchSet, arrow_gain: float = 3.0) -> np.ndarray:
    """(T, H, W, 3) uint8 canvas frames with the selection drawn on them.

    Kept patches keep their pixels (outlined), dropped ones are dimmed to ``_DIM`` of their brightness.
    Arrows start at each moving patch's centre and point where its content moved since the previous
    sample (composed block field, averaged over the patch, lengthened by ``arrow_gain``), only on kept
    patches whose motion is above noise (``moving_patches``). A frame kept whole says why in its top-left corner.
    """
    frames = samples.canvas_frames()
    patch = samples.geometry.patch
    kept_pixels = np.repeat(np.repeat(patches.kept, patch, axis=1), patch, axis=2)[..., None]
    drawn = np.where(kept_pixels, frames, (frames * _DIM).astype(np.uint8))
    fields = fields_on_canvas(samples)
    patch_motion = sum_pool(np.moveaxis(fields, -1, 1), patch) / float(patch * patch)  # (T, 2, rows, cols)
    moving = moving_patches(patch_motion, patches.static_fallback, patches.kept)
    whole = dict(patches.whole_frames)
    drawn = np.ascontiguousarray(drawn)
    for t in range(samples.n_samples):
        tile = drawn[t]
        _outline(tile, patches.kept[t], patch)
        dx, dy = -patch_motion[t, 0], -patch_motion[t, 1]  # the field points back in time; arrows forward
        for row, col in zip(*np.nonzero(moving[t])):
            centre = (int(col * patch + patch // 2), int(row * patch + patch // 2))
            tip = (int(round(centre[0] + arrow_gain * dx[row, col])), int(round(centre[1] + arrow_gain * dy[row, col])))
            cv2.arrowedLine(tile, centre, tip, _ARROW_COLOUR, 1, cv2.LINE_AA, tipLength=0.3)
        if t in whole:
            _text(tile, _WHOLE_REASONS.get(whole[t], f"whole: {whole[t]}"), (3, 12), 0.35)
        label = tile_label(int(patches.timeline[t]), int(samples.frame_indices[t]), samples.picture_types[t],
                           int(patches.kept[t].sum()), int(patches.kept[t].size))
        _text(tile, label, (3, tile.shape[0] - 5), 0.38)
    return drawn


def caption(patches: PatchSet, psnr: dict[str, float | None] | None) -> str:
    """One line: clip, budget, tokens kept and the share of the picture's *area* they cover (padding never
    counts), then the rebuild PSNRs, and why frames are whole on a static clip."""
    text = (f"{Path(patches.info.source).name}  clip {patches.info.clip_index}  {patches.mode}  budget {patches.budget}: "
            f"{patches.n_kept} tokens, {100.0 * patches.area_fraction:.1f}% of picture area")
    if psnr:
        text += "  PSNR " + "  ".join(f"{k} {v:.1f} dB" if v is not None else f"{k} exact" for k, v in psnr.items())
    if patches.static_fallback:
        count = sum(1 for _, reason in patches.whole_frames if reason == "static fallback")
        text += f"  static clip (motion and residual below noise): budget spent on {count} evenly spaced whole frames"
    return text


def draw_stored_row(pixels: np.ndarray, positions: np.ndarray, frame_types: list[str], grid: tuple[int, int],
                    slots: np.ndarray) -> np.ndarray:
    """(T, rows*P, cols*P, 3) uint8 tiles of a stored shard row: its kept patches at their places, the rest
    (not stored) dark.

    Args:
        pixels: (K, 3*P*P) uint8 patches as stored (channel-first P x P).
        positions: (K, 3) int (timeline slot, row, column) of each patch.
        frame_types: picture type of each sampled frame (T of them).
        grid: (rows, cols) of the canvas.
        slots: (T,) timeline slot of each sampled frame.
    """
    patch = int(round((pixels.shape[1] / 3) ** 0.5)) if len(pixels) else 1
    rows, cols = grid
    tiles = np.full((len(slots), rows * patch, cols * patch, 3), 16, np.uint8)
    sample_of_slot = {int(slot): t for t, slot in enumerate(slots)}
    kept = np.zeros((len(slots), rows, cols), bool)
    patches_hwc = pixels.reshape(-1, 3, patch, patch).transpose(0, 2, 3, 1)
    for (slot, row, col), content in zip(positions.tolist(), patches_hwc):
        t = sample_of_slot[slot]
        tiles[t, row * patch : (row + 1) * patch, col * patch : (col + 1) * patch] = content
        kept[t, row, col] = True
    for t, slot in enumerate(slots):
        _outline(tiles[t], kept[t], patch)
        _text(tiles[t], tile_label(int(slot), None, frame_types[t], int(kept[t].sum()), rows * cols), (3, tiles.shape[1] - 5), 0.38)
    return tiles


_FONT = cv2.FONT_HERSHEY_SIMPLEX
_TITLE_SCALE = 0.5
_TITLE_LINE_PX = 22


def title_lines(title: str, width: int, scale: float = _TITLE_SCALE) -> list[str]:
    """``title`` broken at its double-space field breaks (else at spaces) into lines that fit ``width`` px."""
    fields = [f for f in title.split("  ") if f]
    lines: list[str] = []
    for field in fields:
        candidate = f"{lines[-1]}  {field}" if lines else field
        if lines and cv2.getTextSize(candidate, _FONT, scale, 1)[0][0] + 12 <= width:
            lines[-1] = candidate
            continue
        words, line = field.split(" "), ""
        for word in words:  # a field wider than the sheet on its own: break it at spaces
            trial = f"{line} {word}" if line else word
            if line and cv2.getTextSize(trial, _FONT, scale, 1)[0][0] + 12 > width:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return lines or [""]


def contact_sheet(tiles: np.ndarray, title: str, columns: int = 8, max_tiles: int = 16) -> np.ndarray:
    """A grid of up to ``max_tiles`` evenly chosen tiles (N, H, W, 3) under a title bar (wrapped to fit)."""
    count = min(max_tiles, len(tiles))
    chosen = np.round(np.linspace(0, len(tiles) - 1, count)).astype(int) if len(tiles) > 1 else np.zeros(1, int)
    columns = min(columns, count)
    rows = -(-count // columns)
    height, width = tiles.shape[1:3]
    sheet_width = columns * (width + 4)
    lines = title_lines(title, sheet_width)
    bar = 8 + _TITLE_LINE_PX * len(lines)
    sheet = np.full((rows * (height + 4) + bar, sheet_width, 3), 24, np.uint8)
    for slot, index in enumerate(chosen):
        y, x = bar + (slot // columns) * (height + 4), (slot % columns) * (width + 4)
        sheet[y : y + height, x : x + width] = tiles[index]
    for number, line in enumerate(lines):
        cv2.putText(sheet, line, (6, 20 + _TITLE_LINE_PX * number), _FONT, _TITLE_SCALE, (255, 255, 255), 1, cv2.LINE_AA)
    return sheet


def with_title(tiles: np.ndarray, title: str) -> np.ndarray:
    """Each tile with a title bar on top (for video output)."""
    out = np.full((tiles.shape[0], tiles.shape[1] + 24, max(tiles.shape[2], 16), 3), 24, np.uint8)
    out[:, 24:, : tiles.shape[2]] = tiles
    for frame in out:
        _text(frame, title, (4, 16), 0.4)
    return out


def _text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float) -> None:
    """White text on a dark box, so it reads on any picture. (An outline drawn as the same text with a
    thicker stroke is wider, because OpenCV's glyph advance grows with the stroke: it left a dark
    "ghost" of the last characters past the end of the line.)"""
    (width, height), baseline = cv2.getTextSize(text, _FONT, scale, 1)
    x, y = origin
    cv2.rectangle(image, (x - 2, y - height - 2), (x + width + 1, y + baseline), (0, 0, 0), cv2.FILLED)
    cv2.putText(image, text, origin, _FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)


def save_picture(samples: ClipSamples, patches: PatchSet, psnr: dict[str, float | None] | None, out: str | Path,
                 columns: int = 8, max_tiles: int = 16, fps: float = 4.0) -> Path:
    """Write a PNG contact sheet (or, for .mp4, a video of every sampled frame) of the selection."""
    return save_tiles(draw_selection(samples, patches), caption(patches, psnr), out, columns, max_tiles, fps)


def save_tiles(tiles: np.ndarray, title: str, out: str | Path, columns: int = 8, max_tiles: int = 16, fps: float = 4.0) -> Path:
    """Write tiles (N, H, W, 3) as a PNG/JPEG contact sheet under ``title``, or as an .mp4 of every tile."""
    out = Path(out)
    if out.suffix.lower() == ".mp4":
        write_rgb_video(with_title(tiles, title), out, fps=fps)
    elif out.suffix.lower() in (".png", ".jpg", ".jpeg"):
        sheet = contact_sheet(tiles, title, columns, max_tiles)
        if not cv2.imwrite(str(out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
            raise OSError(f"{out}: could not write the picture")
    else:
        raise ValueError(f"{out}: the picture must be .png, .jpg or .mp4")
    return out
