"""Parity with real timm Vision Transformers (random weights, built here, no download).

timm imports torchvision, and PyPI's torchvision does not import beside the CPU build of torch this project
pins (torch 2.13.0: "operator torchvision::nms does not exist"). So timm runs in its own interpreter, named
by ``CODECPATCH_TIMM_PYTHON`` (``.ci/run`` builds one: torch 2.14.1 + torchvision 0.29.1 + timm), or in this
one when timm imports here. That interpreter builds each model, randomises every weight, saves it as a
checkpoint and saves its ``forward_features`` on random images; this process loads the checkpoint with
``load_vit`` and must give the same tokens.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from codecpatch.tokens import load_vit

from .conftest import skip_or_fail

BUILD = r"""
import sys, torch, timm
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

folder = sys.argv[1]
variants = {
    "cls": dict(),
    "no_cls_avg": dict(class_token=False, global_pool="avg"),
    "pre_norm": dict(pre_norm=True),
    "no_embed_class": dict(no_embed_class=True),
    # timm's DINOv2 layouts (vit_*_patch14_dinov2 / _reg4_dinov2): LayerScale, registers; built for 48 px with a
    # dynamic size, so the 32 px images make timm resize the 6x6 position table to 4x4 (antialiased)
    "dinov2": dict(init_values=1e-5, img_size=48, dynamic_img_size=True),
    "dinov2_reg": dict(init_values=1e-5, reg_tokens=4, no_embed_class=True, img_size=48, dynamic_img_size=True),
    "reg_embed_class": dict(init_values=1e-5, reg_tokens=2),
}
torch.manual_seed(0)
image = torch.randn(2, 3, 32, 32)
out = {"image": image}
for name, extra in variants.items():
    model = VisionTransformer(**{"img_size": 32, **extra}, patch_size=8, embed_dim=128, depth=2, num_heads=2, mlp_ratio=2.0,
                              num_classes=0).eval()
    with torch.no_grad():
        for parameter in model.parameters():  # timm starts LayerNorms at 1/0 and biases at 0: randomise all
            parameter.normal_(0.0, 0.2)
        out[name] = model.forward_features(image)
        out[name + ".prefix"] = torch.tensor(model.num_prefix_tokens)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{folder}/{name}.safetensors")
unsupported = {"qk_norm": dict(qk_norm=True)}
for name, extra in unsupported.items():
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=128, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=0, **extra)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{folder}/{name}.safetensors")
save_file({k: v.contiguous() for k, v in out.items()}, f"{folder}/reference.safetensors")
print(timm.__version__)
"""

VARIANTS = ["cls", "no_cls_avg", "pre_norm", "no_embed_class", "dinov2", "dinov2_reg", "reg_embed_class"]


def timm_python() -> str:
    configured = os.environ.get("CODECPATCH_TIMM_PYTHON")
    if configured:
        return configured
    try:
        import timm  # noqa: F401  (it may be installed and still fail to import: torchvision)
        return sys.executable
    except Exception:
        pass
    skip_or_fail("timm is not importable here (it needs torchvision, which fails beside the CPU torch 2.13.0); "
                 "set CODECPATCH_TIMM_PYTHON to an interpreter with timm, as .ci/run does")


@pytest.fixture(scope="module")
def timm_models(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("timm")
    done = subprocess.run([timm_python(), "-c", BUILD, str(folder)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


def dense_patches(image: torch.Tensor):
    """(1, 3, 32, 32) -> (1, 16, 3, 8, 8) patches and (1, 16, 3) positions in raster order."""
    patches = image.unfold(2, 8, 8).unfold(3, 8, 8).permute(0, 2, 3, 1, 4, 5).reshape(1, 16, 3, 8, 8)
    index = torch.arange(16)
    return patches, torch.stack([torch.zeros(16, dtype=torch.long), index // 4, index % 4], dim=1)[None]


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_tokens_as_timm_on_dense_inputs(timm_models, variant):
    from safetensors.torch import load_file

    reference = load_file(str(timm_models / "reference.safetensors"))
    model = load_vit(timm_models / f"{variant}.safetensors", device="cpu")
    prefix = int(reference[f"{variant}.prefix"])
    expected = reference[variant]  # (B, prefix + 16, D), after timm's final norm
    assert model.config.prefix_tokens == prefix and model.config.cls == (prefix > 0)
    assert model.config.layer_scale == variant.startswith(("dinov2", "reg"))
    with torch.no_grad():
        for b in range(2):
            patches, positions = dense_patches(reference["image"][b : b + 1])
            tokens, valid, cls, _ = model(patches, positions, torch.ones(1, 16, dtype=torch.bool), (4, 4))
            torch.testing.assert_close(tokens, expected[b : b + 1, prefix:], atol=1e-4, rtol=1e-4)
            if prefix:
                torch.testing.assert_close(cls, expected[b : b + 1, 0], atol=1e-4, rtol=1e-4)
            else:
                assert cls is None
            assert valid.all()


@pytest.mark.parametrize("variant", ["qk_norm"])
def test_timm_variants_we_cannot_map_are_refused_not_loaded_wrong(timm_models, variant):
    with pytest.raises(ValueError, match="does not support"):
        load_vit(timm_models / f"{variant}.safetensors", device="cpu")
