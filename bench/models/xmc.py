"""XMCModel: encoder → classifier, built from a config."""

from __future__ import annotations

import inspect
import math

import torch

from torch import nn

from bench.config import ModelConfig
from bench.errors import ConfigError
from bench.registry import CLASSIFIERS, create_classifier


class XMCModel(nn.Module):
    def __init__(self, encoder: nn.Module, classifier: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.classifier = classifier

    def forward(self, batch):  # -> logits [B, L]; training uses classifier.loss, inference .topk
        return self.classifier(self.encoder(batch))


def classifier_options(cfg: ModelConfig, seed: int) -> dict:
    """Config values a classifier may take, by keyword name."""
    return {
        "fan_in": cfg.fan_in,
        "density": cfg.density or min(1.0, cfg.fan_in / cfg.embed_dim),
        "seed": seed,
    }


def build_classifier(cfg: ModelConfig, num_labels: int, seed: int) -> nn.Module:
    """Each factory receives the options its signature names, so a new classifier gets
    ``fan_in`` or ``seed`` without an edit here."""
    if cfg.classifier in CLASSIFIERS:
        params = inspect.signature(CLASSIFIERS.get(cfg.classifier)).parameters
        options = {k: v for k, v in classifier_options(cfg, seed).items() if k in params}
    else:
        options = {}  # create_classifier raises the "did you mean" error
    classifier = create_classifier(cfg.classifier, cfg.embed_dim, num_labels, **options)
    classifier.label_chunk = cfg.label_chunk
    return classifier


def init_bias_to_prior(classifier: nn.Module, positive_fraction: float) -> None:
    """Start every label's bias at the logit of the average label frequency. With zero biases
    the first steps of a sum-over-labels BCE are spent pushing L biases down from logit 0."""
    p = min(max(positive_fraction, 1e-9), 0.5)
    with torch.no_grad():
        classifier.bias.fill_(math.log(p / (1 - p)))


def build_model(cfg: ModelConfig, num_features: int, num_labels: int, seed: int,
                positive_fraction: float = 0.5) -> XMCModel:
    """``positive_fraction``: mean fraction of labels positive per training point (bias prior)."""
    from bench.models.bow import BagOfWordsEncoder

    if cfg.encoder != "bow":
        raise ConfigError(f"config key 'model.encoder': unknown encoder {cfg.encoder!r}; available: bow")
    encoder = BagOfWordsEncoder(num_features, cfg.embed_dim, activation=cfg.activation, dropout=cfg.dropout)
    classifier = build_classifier(cfg, num_labels, seed)
    if cfg.bias_init == "prior" and isinstance(getattr(classifier, "bias", None), torch.Tensor):
        init_bias_to_prior(classifier, positive_fraction)
    return XMCModel(encoder, classifier)
