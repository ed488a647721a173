"""The sparse ViT: parity with Hugging Face CLIP/SigLIP towers (small, random, built here: no download),
Xray (EViT) inside it, and encoding a PatchSet."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")  # a dev dependency: always there in CI

from codecpatch.patchify import PatchifyConfig, patchify_video  # noqa: E402
from codecpatch.tokens import apet, encode_with_vit, load_vit  # noqa: E402

from .conftest import SAMPLES  # noqa: E402


def tiny_tower(kind: str, folder, seed: int = 0):
    torch.manual_seed(seed)
    if kind == "clip":
        config = transformers.CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                               num_attention_heads=4, image_size=32, patch_size=8)
        model = transformers.CLIPVisionModel(config).eval()
    else:
        config = transformers.SiglipVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                                 num_attention_heads=4, image_size=32, patch_size=8)
        model = transformers.SiglipVisionModel(config).eval()
    model.save_pretrained(folder)
    return model


def dense_patches(image: torch.Tensor):
    """(1, 3, 32, 32) -> (1, 16, 3, 8, 8) patches and (1, 16, 3) positions in raster order."""
    patches = image.unfold(2, 8, 8).unfold(3, 8, 8).permute(0, 2, 3, 1, 4, 5).reshape(1, 16, 3, 8, 8)
    index = torch.arange(16)
    return patches, torch.stack([torch.zeros(16, dtype=torch.long), index // 4, index % 4], dim=1)[None]


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_parity_with_transformers_on_dense_inputs(kind, tmp_path):
    reference = tiny_tower(kind, tmp_path)
    ours = load_vit(tmp_path)
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = reference(pixel_values=image)
        for b in range(2):
            patches, positions = dense_patches(image[b : b + 1])
            tokens, valid, cls, source = ours(patches, positions, torch.ones(1, 16, dtype=torch.bool), (4, 4))
            if kind == "clip":
                torch.testing.assert_close(tokens, expected.last_hidden_state[b : b + 1, 1:], atol=1e-5, rtol=1e-4)
                torch.testing.assert_close(cls, expected.pooler_output[b : b + 1], atol=1e-5, rtol=1e-4)
            else:
                torch.testing.assert_close(tokens, expected.last_hidden_state[b : b + 1], atol=1e-5, rtol=1e-4)
                assert cls is None
            assert valid.all() and torch.equal(source[0], torch.arange(16))


def test_torch_file_and_bad_checkpoints(tmp_path):
    reference = tiny_tower("clip", tmp_path / "hf")
    torch.save({f"vision_model.{k}": v for k, v in reference.state_dict().items()}, tmp_path / "tower.pt")
    model = load_vit(tmp_path / "tower.pt", heads=4)
    assert model.config.depth == 3 and model.config.cls
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_vit(tmp_path / "missing.safetensors")
    torch.save({"something.else": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a Hugging Face CLIP/SigLIP"):
        load_vit(tmp_path / "other.pt")


def test_padded_batches_match_single_clips(tmp_path):
    tiny_tower("clip", tmp_path)
    model = load_vit(tmp_path)
    patches, positions = dense_patches(torch.randn(1, 3, 32, 32))
    short, short_positions = patches[:, :9], positions[:, :9]
    with torch.no_grad():
        alone, *_ = model(short, short_positions, torch.ones(1, 9, dtype=torch.bool), (4, 4))
        batch = torch.cat([patches, torch.cat([short, torch.zeros(1, 7, 3, 8, 8)], 1)])
        batch_positions = torch.cat([positions, torch.cat([short_positions, torch.zeros(1, 7, 3, dtype=torch.long)], 1)])
        valid = torch.ones(2, 16, dtype=torch.bool)
        valid[1, 9:] = False
        together, *_ = model(batch, batch_positions, valid, (4, 4))
    torch.testing.assert_close(together[1:, :9], alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_xray_keep_one_equals_plain_and_lower_rates_fuse(kind, tmp_path):
    tiny_tower(kind, tmp_path)
    plain = load_vit(tmp_path)
    full = load_vit(tmp_path, xray_blocks=(1, 2), xray_keep=1.0)
    half = load_vit(tmp_path, xray_blocks=(1, 2), xray_keep=0.5)
    patches, positions = dense_patches(torch.randn(1, 3, 32, 32))
    valid = torch.ones(1, 16, dtype=torch.bool)
    with torch.no_grad():
        expected, *_ = plain(patches, positions, valid, (4, 4))
        same, same_valid, _, same_source = full(patches, positions, valid, (4, 4))
        fused, fused_valid, _, fused_source = half(patches, positions, valid, (4, 4))
    torch.testing.assert_close(same, expected, atol=1e-5, rtol=1e-4)
    assert torch.equal(same_source[0], torch.arange(16))
    # 16 -> 8 kept + 1 fused -> ceil(0.5 * 9) = 5 kept + 1 fused
    assert int(fused_valid.sum()) == 6
    assert fused_source.max() == 5 and fused_source.min() == 0 and len(fused_source.unique()) <= 6


def test_encode_a_patchset_with_the_vit_then_compress(tmp_path):
    tiny_tower("clip", tmp_path)
    model = load_vit(tmp_path)
    [patches] = list(patchify_video(SAMPLES / "sprites_h264_b.mp4", PatchifyConfig(frames=8, patch=8, size=64, budget="2f")))
    tokens = encode_with_vit(model, patches.pixels, patches.positions, patches.sample_index, patches.geometry.grid)
    assert tokens.n_tokens == patches.n_kept and tokens.dim == 64 and tokens.cls.shape == (64,)
    assert torch.equal(tokens.positions, torch.as_tensor(patches.positions, dtype=torch.int64))
    xray = load_vit(tmp_path, xray_blocks=(2,), xray_keep=0.5)
    fewer = encode_with_vit(xray, patches.pixels, patches.positions, patches.sample_index, patches.geometry.grid)
    assert fewer.n_tokens < tokens.n_tokens and fewer.stages[0].name == "vit+xray"
    assert fewer.absorbed_into.shape == (patches.n_kept,) and fewer.absorbed_into.max() == fewer.n_tokens - 1
    compressed = apet(tokens, 0.5)
    assert compressed.n_tokens < tokens.n_tokens


def test_encode_command_with_a_local_vit(tmp_path):
    import json
    import subprocess
    import sys

    tiny_tower("clip", tmp_path / "tower")
    result = subprocess.run(
        [sys.executable, "-m", "codecpatch.cli", "encode", str(SAMPLES / "sprites_h264_b.mp4"), "--frames", "8", "--size", "64",
         "--patch", "8", "--budget", "2f", "--encoder", f"vit:{tmp_path / 'tower'}", "--xray", "2@0.5", "--compress", "apet:0.5",
         "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert [s["name"] for s in record["stages"]] == ["patchify", "vit+xray", "apet:0.5"] and record["dim"] == 64
    assert record["stages"][1]["n_out"] < record["stages"][1]["n_in"]


def hf_clip_as(layout: str, reference) -> dict:
    """The tiny HF CLIP tower's tensors renamed into another library's checkpoint layout (timm or OpenCLIP),
    as their conversion scripts lay them out: fused q/k/v, class position first."""
    hf = {k.removeprefix("vision_model."): v for k, v in reference.state_dict().items()}
    layers = 1 + max(int(k.split(".")[2]) for k in hf if k.startswith("encoder.layers."))
    out = {}
    if layout == "timm":
        out.update({"cls_token": hf["embeddings.class_embedding"].view(1, 1, -1),
                    "pos_embed": hf["embeddings.position_embedding.weight"][None],
                    "patch_embed.proj.weight": hf["embeddings.patch_embedding.weight"],
                    "norm_pre.weight": hf["pre_layrnorm.weight"], "norm_pre.bias": hf["pre_layrnorm.bias"],
                    "norm.weight": hf["post_layernorm.weight"], "norm.bias": hf["post_layernorm.bias"]})
        names = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.proj": "self_attn.out_proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
        for i in range(layers):
            for ours, theirs in names.items():
                for kind in ("weight", "bias"):
                    out[f"blocks.{i}.{ours}.{kind}"] = hf[f"encoder.layers.{i}.{theirs}.{kind}"]
                    out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([hf[f"encoder.layers.{i}.self_attn.{p}_proj.{kind}"] for p in "qkv"])
    else:
        out.update({"visual.class_embedding": hf["embeddings.class_embedding"],
                    "visual.positional_embedding": hf["embeddings.position_embedding.weight"],
                    "visual.conv1.weight": hf["embeddings.patch_embedding.weight"],
                    "visual.ln_pre.weight": hf["pre_layrnorm.weight"], "visual.ln_pre.bias": hf["pre_layrnorm.bias"],
                    "visual.ln_post.weight": hf["post_layernorm.weight"], "visual.ln_post.bias": hf["post_layernorm.bias"],
                    "visual.proj": torch.zeros(64, 32)})
        names = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
        for i in range(layers):
            block = f"visual.transformer.resblocks.{i}"
            for ours, theirs in names.items():
                for kind in ("weight", "bias"):
                    out[f"{block}.{ours}.{kind}"] = hf[f"encoder.layers.{i}.{theirs}.{kind}"]
            for kind, name in (("weight", "in_proj_weight"), ("bias", "in_proj_bias")):
                out[f"{block}.attn.{name}"] = torch.cat([hf[f"encoder.layers.{i}.self_attn.{p}_proj.{kind}"] for p in "qkv"])
    return out


@pytest.mark.parametrize("layout", ["timm", "open_clip"])
def test_timm_and_open_clip_layouts_load_to_the_same_network(layout, tmp_path):
    from safetensors.torch import save_file

    reference = tiny_tower("clip", tmp_path / "hf")
    save_file({k: v.contiguous() for k, v in hf_clip_as(layout, reference).items()}, str(tmp_path / "tower.safetensors"))
    # neither layout records heads or the activation: the caller says so, as for real OpenAI-trained weights
    model = load_vit(tmp_path / "tower.safetensors", heads=4, activation="quick_gelu", eps=1e-5)
    image = torch.randn(1, 3, 32, 32)
    patches, positions = dense_patches(image)
    with torch.no_grad():
        expected = reference(pixel_values=image)
        tokens, _, cls, _ = model(patches, positions, torch.ones(1, 16, dtype=torch.bool), (4, 4))
    if layout == "timm":  # timm's final norm applies to every token
        tower = getattr(reference, "vision_model", reference)  # transformers 5 flattened the wrapper
        hidden = tower.post_layernorm(expected.last_hidden_state)
        torch.testing.assert_close(tokens, hidden[:, 1:], atol=1e-5, rtol=1e-4)
    else:
        torch.testing.assert_close(tokens, expected.last_hidden_state[:, 1:], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(cls, expected.pooler_output, atol=1e-5, rtol=1e-4)


def test_xray_threshold_mode_and_validation(tmp_path):
    tiny_tower("clip", tmp_path)
    patches, positions = dense_patches(torch.randn(1, 3, 32, 32))
    valid = torch.ones(1, 16, dtype=torch.bool)
    above_uniform = load_vit(tmp_path, xray_blocks=(1,), xray_threshold=1.0)
    with torch.no_grad():
        _, kept_valid, _, source = above_uniform(patches, positions, valid, (4, 4))
    count = int(kept_valid.sum())
    assert 2 <= count < 17  # some tokens are attended less than uniformly: they are fused into one
    assert source.max() == count - 1
    everything = load_vit(tmp_path, xray_blocks=(1,), xray_threshold=0.0)
    with torch.no_grad():
        _, all_valid, _, _ = everything(patches, positions, valid, (4, 4))
    assert int(all_valid.sum()) == 16
    with pytest.raises(ValueError, match="one-indexed"):
        load_vit(tmp_path, xray_blocks=(0,))


def test_bfloat16_runs_close_to_float32_and_positions_interpolate(tmp_path):
    tiny_tower("clip", tmp_path)
    full = load_vit(tmp_path, device="cpu", dtype=torch.float32)
    half = load_vit(tmp_path, device="cpu", dtype=torch.bfloat16)
    assert next(half.parameters()).dtype == torch.bfloat16
    [patches] = list(patchify_video(SAMPLES / "sprites_h264_b.mp4", PatchifyConfig(frames=4, patch=8, size=48, budget="2f")))
    assert patches.geometry.grid == (6, 6)  # the tower was trained on a 4x4 grid: embeddings are resized
    reference = encode_with_vit(full, patches.pixels, patches.positions, patches.sample_index, patches.geometry.grid)
    low = encode_with_vit(half, patches.pixels, patches.positions, patches.sample_index, patches.geometry.grid)
    assert low.tokens.dtype == torch.float32  # handed back in float32 for the compressors
    relative = (low.tokens - reference.tokens).norm() / reference.tokens.norm()
    assert relative < 0.05


def tiny_clip_with_tokenizer(folder):
    """A randomly initialised CLIPModel (text + vision) with a byte-level tokenizer, saved like a hub folder."""
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(256 - len(printable))]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(__import__("json").dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=32, bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                         pad_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8),
        projection_dim=16)
    model = transformers.CLIPModel(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


def test_text_guided_pruning_with_a_local_clip(tmp_path):
    from codecpatch.tokens import ClipTextTower, duet_t2v

    reference = tiny_clip_with_tokenizer(tmp_path / "clip")
    tower = ClipTextTower(tmp_path / "clip")
    text = tower.embed_texts(["a red box", "a moving square"])
    assert text.shape == (2, 16)
    model = load_vit(tmp_path / "clip")  # the vision tower of the same checkpoint
    [patches] = list(patchify_video(SAMPLES / "sprites_h264_b.mp4", PatchifyConfig(frames=8, patch=8, size=64, budget="2f")))
    tokens = encode_with_vit(model, patches.pixels, patches.positions, patches.sample_index, patches.geometry.grid)
    projected = tower.project_vision(tokens.tokens)
    assert projected.shape == (tokens.n_tokens, 16)
    # the projection is CLIP's own: the pooled [CLS] embedding matches the reference image embedding
    image = torch.randn(1, 3, 32, 32)
    patch_pixels, positions = dense_patches(image)
    with torch.no_grad():
        _, _, cls, _ = model(patch_pixels, positions, torch.ones(1, 16, dtype=torch.bool), (4, 4))
        expected = reference.get_image_features(pixel_values=image)
    expected = getattr(expected, "pooler_output", expected)
    torch.testing.assert_close(reference.visual_projection(cls), expected, atol=1e-5, rtol=1e-4)
    kept = duet_t2v(tokens, text, 0.25, vision_projection=tower.project_vision)
    assert kept.n_tokens == round(0.25 * tokens.n_tokens) and kept.stages[-1].name == "duet_t2v:0.25"
    scores = torch.softmax(text @ projected.T / 4.0, dim=1).mean(0)  # sqrt(16)
    best = int(torch.argmax(scores))
    assert tuple(tokens.positions[best].tolist()) in {tuple(p) for p in kept.positions.tolist()}


def test_encode_command_with_text_queries(tmp_path):
    import json
    import subprocess
    import sys

    tiny_clip_with_tokenizer(tmp_path / "clip")
    result = subprocess.run(
        [sys.executable, "-m", "codecpatch.cli", "encode", str(SAMPLES / "sprites_h264_b.mp4"), "--frames", "8", "--size", "64",
         "--patch", "8", "--budget", "2f", "--encoder", f"vit:{tmp_path / 'clip'}", "--text", "a red box", "--t2v", "0.5", "--json"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert [s["name"] for s in record["stages"]] == ["patchify", "vit", "duet_t2v:0.5"]
    assert record["n_tokens"] * 2 == record["n_patches"]
    bad = subprocess.run([sys.executable, "-m", "codecpatch.cli", "encode", str(SAMPLES / "sprites_h264_b.mp4"), "--text", "x"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--text-tower" in bad.stderr


def tiny_siglip_with_tokenizer(folder):
    """A randomly initialised SiglipModel (text + vision) with a word-level fast tokenizer, saved like a hub folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<pad>", "</s>", "<unk>", "a", "red", "box", "moving", "square", "blue", "sky"]
    vocab = {w: i for i, w in enumerate(words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    config = transformers.SiglipConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=8, projection_size=64, pad_token_id=0, eos_token_id=1),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8))
    model = transformers.SiglipModel(config).eval()
    with torch.no_grad():  # a LayerNorm left at 1/0 would hide a norm applied twice
        model.vision_model.post_layernorm.weight.uniform_(0.5, 1.5)
        model.vision_model.post_layernorm.bias.normal_(0.0, 0.5)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def test_text_guided_pruning_with_a_local_siglip(tmp_path):
    from codecpatch.tokens import TextTower, duet_t2v

    reference, tokenizer = tiny_siglip_with_tokenizer(tmp_path / "siglip")
    tower = TextTower(tmp_path / "siglip")
    assert tower.kind == "siglip"
    texts = ["a red box", "a moving square"]
    text = tower.embed_texts(texts)
    ids = tokenizer(texts, padding="max_length", max_length=8, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = reference.get_text_features(input_ids=ids)
    torch.testing.assert_close(text, getattr(expected, "pooler_output", expected), atol=1e-5, rtol=1e-4)
    model = load_vit(tmp_path / "siglip")  # the vision tower of the same checkpoint
    [patches] = list(patchify_video(SAMPLES / "sprites_h264_b.mp4", PatchifyConfig(frames=8, patch=8, size=64, budget="2f")))
    tokens = encode_with_vit(model, patches.pixels, patches.positions, patches.sample_index, patches.geometry.grid)
    projected = tower.project_vision(tokens.tokens)
    assert projected.shape == (tokens.n_tokens, 64)
    # per token = the image embedding SigLIP's pooling head gives for a picture made of that token only,
    # computed from transformers' own tower: its last_hidden_state (after post_layernorm) on a dense image
    image = torch.randn(1, 3, 32, 32)
    patch_pixels, positions = dense_patches(image)
    with torch.no_grad():
        ours, *_ = model(patch_pixels, positions, torch.ones(1, 16, dtype=torch.bool), (4, 4))
        hidden = reference.vision_model(pixel_values=image).last_hidden_state  # (1, 16, 64)
        expected_token = reference.vision_model.head(hidden[:, :1])  # the first patch alone through the head
    torch.testing.assert_close(tower.project_vision(ours[0, :1]), expected_token, atol=1e-5, rtol=1e-4)
    kept = duet_t2v(tokens, text, 0.25, vision_projection=tower.project_vision)
    assert kept.n_tokens == round(0.25 * tokens.n_tokens)
    scores = torch.softmax(text @ projected.T / 8.0, dim=1).mean(0)  # sqrt(64)
    assert tuple(tokens.positions[int(torch.argmax(scores))].tolist()) in {tuple(p) for p in kept.positions.tolist()}
