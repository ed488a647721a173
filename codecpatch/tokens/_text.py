"""Text queries for DUET T2V from a local CLIP or SigLIP checkpoint (Hugging Face layout: ``config.json``,
weights and tokenizer files in one folder; no hub). Needs ``transformers``."""

from __future__ import annotations

import os

import torch


class TextTower:
    """A CLIP or SigLIP model's text side and its vision-to-joint-space map, so vision tokens and text meet in
    one space.

    Args:
        path: folder of a Hugging Face ``CLIPModel`` or ``SiglipModel`` checkpoint with its tokenizer files.

    Attributes:
        kind: "clip" or "siglip" (from the checkpoint's ``config.json``).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        try:
            from transformers import AutoConfig, AutoTokenizer, CLIPModel, SiglipModel
        except ImportError as error:  # pragma: no cover - transformers is a dev dependency
            raise ImportError("text queries need transformers: pip install transformers") from error
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"{path}: not a folder with a CLIP or SigLIP checkpoint and tokenizer")
        model_type = AutoConfig.from_pretrained(path, local_files_only=True).model_type
        models = {"clip": CLIPModel, "siglip": SiglipModel}
        if model_type not in models:
            raise ValueError(f"{path}: a {model_type!r} checkpoint; text queries need a CLIP or SigLIP model (text + vision)")
        self.kind = model_type
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = models[model_type].from_pretrained(path, local_files_only=True).eval()

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """(m, E) float32 text embeddings in the joint space (the model's own text features)."""
        if self.kind == "siglip":  # SigLIP pools the last position: it was trained with max-length padding
            length = self.model.config.text_config.max_position_embeddings
            inputs = self.tokenizer(list(texts), padding="max_length", max_length=length, truncation=True, return_tensors="pt")
            return self.model.text_model(input_ids=inputs["input_ids"]).pooler_output.float()
        inputs = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        pooled = self.model.text_model(**inputs).pooler_output
        return self.model.text_projection(pooled).float()

    @torch.inference_mode()
    def project_vision(self, tokens: torch.Tensor) -> torch.Tensor:
        """(K, D) vision-tower tokens -> (K, E) in the joint space.

        ``tokens`` are what ``load_vit`` of the same checkpoint outputs. CLIP: those are before the final
        LayerNorm (it applies to [CLS] only), so post-LayerNorm, then the visual projection, as CLIP does for
        its pooled [CLS] embedding. SigLIP (no [CLS]; an attention-pooling head makes the image embedding):
        those are after the final LayerNorm already, so the head applied to each token alone, i.e. the image
        embedding that token would give by itself.
        """
        tower = self.model.vision_model
        tokens = tokens.to(torch.float32)
        if self.kind == "siglip":
            if getattr(tower, "head", None) is None:
                raise ValueError("this SigLIP checkpoint has no attention-pooling head (vision_use_head=False): "
                                 "its vision tokens have no text-aligned projection")
            return tower.head(tokens[:, None, :]).float()
        return self.model.visual_projection(tower.post_layernorm(tokens)).float()


#: The name it had when it read CLIP only.
ClipTextTower = TextTower
