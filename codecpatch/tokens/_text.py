"""Text queries for DUET T2V from a local CLIP checkpoint (Hugging Face layout: ``config.json``, weights and
tokenizer files in one folder; no hub). Needs ``transformers``."""

from __future__ import annotations

import os

import torch


class ClipTextTower:
    """A CLIP model's text side and its vision projection, so vision tokens and text meet in one space.

    Args:
        path: folder of a Hugging Face ``CLIPModel`` checkpoint with its tokenizer files.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        try:
            from transformers import AutoTokenizer, CLIPModel
        except ImportError as error:  # pragma: no cover - transformers is a dev dependency
            raise ImportError("text queries need transformers: pip install transformers") from error
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"{path}: not a folder with a CLIP checkpoint and tokenizer")
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = CLIPModel.from_pretrained(path, local_files_only=True).eval()

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """(m, E) float32 projected text embeddings."""
        inputs = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        pooled = self.model.text_model(**inputs).pooler_output
        return self.model.text_projection(pooled).float()

    @torch.inference_mode()
    def project_vision(self, tokens: torch.Tensor) -> torch.Tensor:
        """(K, D) vision-tower tokens -> (K, E) in the joint space (post-LayerNorm, then the projection),
        as CLIP does for its pooled image embedding."""
        tower = self.model.vision_model
        return self.model.visual_projection(tower.post_layernorm(tokens.to(torch.float32))).float()
