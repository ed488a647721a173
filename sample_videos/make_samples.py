"""Regenerate the synthetic sample clips deterministically, with their ground truth.

    python sample_videos/make_samples.py [--out sample_videos]

Every clip is 320x240, 25 fps, 50 frames, drawn from seeded numpy textures with whole-pixel motion, then
encoded single-threaded (so the bytes do not depend on the machine's core count). ``manifest.json`` records
what each clip shows: sprite rectangles and velocities (pixels per frame, +x right, +y down), the camera pan
velocity, scene cuts, and the encoder settings. Tests read it as ground truth.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np

WIDTH, HEIGHT, FPS, FRAMES = 320, 240, 25, 50
SPRITE_SIZE = 48


@dataclass(frozen=True)
class Sprite:
    """A textured square moving at constant velocity (pixels per frame)."""

    x0: int
    y0: int
    vx: int
    vy: int
    size: int = SPRITE_SIZE
    seed: int = 0


@dataclass(frozen=True)
class Scene:
    name: str
    sprites: tuple[Sprite, ...] = ()
    pan: tuple[int, int] = (0, 0)  # camera velocity; the picture content moves by -pan per frame
    cut_at: int | None = None  # frame index where a different scene starts
    background_seed: int = 1


@dataclass(frozen=True)
class Encoding:
    file: str
    scene: str
    codec: str
    options: dict[str, str] = field(default_factory=dict)
    gop: int = 25


SPRITES = (Sprite(20, 30, 3, 0, seed=11), Sprite(200, 20, 0, 2, seed=12), Sprite(250, 170, -2, -1, seed=13))
SCENES = {
    "sprites": Scene("sprites", SPRITES),
    "pan": Scene("pan", pan=(2, 1)),
    "static": Scene("static"),
    "scenecut": Scene("scenecut", SPRITES, cut_at=25),
}
_X264 = "keyint={gop}:min-keyint={min_gop}:scenecut={scenecut}:bframes={bframes}:b-pyramid=none:ref=1:threads=1:sliced-threads=0"
ENCODINGS = (
    Encoding("sprites_h264_p.mp4", "sprites", "libx264", {"x264-params": _X264.format(gop=25, min_gop=25, scenecut=0, bframes=0)}),
    Encoding("sprites_h264_b.mp4", "sprites", "libx264", {"x264-params": _X264.format(gop=25, min_gop=25, scenecut=0, bframes=2)}),
    Encoding("pan_h264_p.mp4", "pan", "libx264", {"x264-params": _X264.format(gop=25, min_gop=25, scenecut=0, bframes=0)}),
    Encoding("static_h264_p.mp4", "static", "libx264", {"x264-params": _X264.format(gop=25, min_gop=25, scenecut=0, bframes=0)}),
    Encoding("scenecut_h264_p.mp4", "scenecut", "libx264", {"x264-params": _X264.format(gop=250, min_gop=1, scenecut=40, bframes=0)}, gop=250),
    Encoding("sprites_mpeg4.mp4", "sprites", "mpeg4", {}, gop=12),
    Encoding("sprites_hevc.mp4", "sprites", "libx265", {"x265-params": "keyint=25:min-keyint=25:bframes=2:pools=1:frame-threads=1:log-level=error"}),
)


def texture(height: int, width: int, seed: int, blur: float) -> np.ndarray:
    """(height, width, 3) uint8 seeded noise, blurred so the encoder's motion search locks on."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), blur)


def render(scene: Scene, index: int) -> np.ndarray:
    """(HEIGHT, WIDTH, 3) uint8 RGB frame ``index`` of ``scene``."""
    background_seed = scene.background_seed
    if scene.cut_at is not None and index >= scene.cut_at:
        background_seed += 100
    pad = max(abs(scene.pan[0]), abs(scene.pan[1])) * FRAMES
    background = texture(HEIGHT + pad, WIDTH + pad, background_seed, blur=2.0)
    # Low-contrast background, high-contrast sprites: both carry texture for motion search.
    background = (background.astype(np.float32) * 0.6 + 50).astype(np.uint8)
    x, y = scene.pan[0] * index, scene.pan[1] * index
    frame = background[y : y + HEIGHT, x : x + WIDTH].copy()
    for sprite in scene.sprites:
        sx, sy = sprite.x0 + sprite.vx * index, sprite.y0 + sprite.vy * index
        seed = sprite.seed + (100 if scene.cut_at is not None and index >= scene.cut_at else 0)
        frame[sy : sy + sprite.size, sx : sx + sprite.size] = texture(sprite.size, sprite.size, seed, blur=1.2)
    return frame


def encode(encoding: Encoding, out_dir: Path) -> Path:
    scene = SCENES[encoding.scene]
    path = out_dir / encoding.file
    with av.open(str(path), mode="w", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(encoding.codec, rate=FPS, options=dict(encoding.options))
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.thread_count = 1
        stream.codec_context.flags |= av.codec.context.Flags.bitexact
        if encoding.codec == "mpeg4":
            stream.codec_context.gop_size = encoding.gop
            stream.codec_context.bit_rate = 600_000
        for index in range(FRAMES):
            frame = av.VideoFrame.from_ndarray(render(scene, index), format="rgb24").reformat(format="yuv420p")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = {"width": WIDTH, "height": HEIGHT, "fps": FPS, "frames": FRAMES, "clips": {}}
    for encoding in ENCODINGS:
        path = encode(encoding, args.out)
        scene = SCENES[encoding.scene]
        manifest["clips"][encoding.file] = {
            "scene": asdict(scene),
            "codec": encoding.codec,
            "gop": encoding.gop,
            "options": encoding.options,
            "bytes": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16],
        }
        print(f"{path}  {path.stat().st_size / 1024:.0f} KiB")
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
