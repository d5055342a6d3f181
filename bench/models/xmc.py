"""XMCModel: encoder → classifier, built from a config."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from bench.classifiers import CLASSIFIERS, create_classifier, factory_options
from bench.config import ModelConfig
from bench.errors import ConfigError, UnknownNameError
from bench.models import ENCODERS, bow, transformer  # noqa: F401  (bow, transformer: registration)


class XMCModel(nn.Module):
    """encoder → [intermediate] → classifier [+ aux]. ``intermediate`` (optional) maps the
    encoder output ``[B, d]`` to the classifier's input ``[B, m]``; ``aux`` (optional) is the
    meta-classifier on the encoder output (``bench.models.meta``)."""

    def __init__(self, encoder: nn.Module, classifier: nn.Module, intermediate: nn.Module | None = None,
                 aux: nn.Module | None = None):
        super().__init__()
        self.encoder = encoder
        self.intermediate = intermediate
        self.classifier = classifier
        self.aux = aux

    def head_input(self, z: torch.Tensor) -> torch.Tensor:  # encoder output [B, d] -> classifier input
        return z if self.intermediate is None else self.intermediate(z)

    def features(self, batch) -> torch.Tensor:  # -> classifier input [B, d or m]
        return self.head_input(self.encoder(batch))

    def parts(self) -> dict[str, nn.Module]:
        """The trained parts present, by name: encoder, intermediate, classifier, aux. Which
        optimiser each joins is the config's (``train.make_optimizers``): by default the
        encoder's takes the encoder and the intermediate layer, the classifier's the classifier
        and the aux meta-classifier (an output layer too)."""
        named = (("encoder", self.encoder), ("intermediate", self.intermediate), ("classifier", self.classifier),
                 ("aux", getattr(self, "aux", None)))
        return {name: part for name, part in named if part is not None}

    def part_memory_bytes(self, optimizer_slots: dict[str, int] | None = None) -> dict[str, dict]:
        """Analytic bytes of the optional parts present, each with the optimiser state of the
        optimiser it trains in: ``optimizer_slots`` by part name (``train.optimizer_slots``;
        default: intermediate in AdamW, 2 slots; aux meta-classifier in SGD with momentum, 1)."""
        slots = {"intermediate": 2, "aux": 1} | (optimizer_slots or {})
        return {name: getattr(self, name).memory_bytes(optimizer_slots=slots[name])
                for name in ("intermediate", "aux") if getattr(self, name, None) is not None}

    def forward(self, batch):  # -> logits [B, L]; training uses classifier.loss, inference .topk
        return self.classifier(self.features(batch))


def build_classifier(cfg: ModelConfig, num_labels: int, seed: int, in_features: int | None = None,
                     label_counts=None) -> nn.Module:
    """The classifier ``cfg.classifier``. Its factory receives, by keyword name, each option its
    signature names from the ``model.*`` config fields of the same name, plus ``seed`` (the run
    seed) and ``label_counts`` (training positives per label, from the dataset); so a new
    classifier gets ``fan_in`` or ``seed`` without an edit here, and derives its own defaults.
    ``in_features``: its input size (default ``embed_dim``; the intermediate size when there is one)."""
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    values.update(seed=seed, label_counts=label_counts)
    accepted = factory_options(cfg.classifier) if cfg.classifier in CLASSIFIERS else []
    # model.classifier_dtype reaches a factory as `dtype`; one without it cannot store another dtype
    dtype = values.pop("classifier_dtype")
    if dtype != "float32" and accepted is not None and "dtype" not in accepted:
        raise ConfigError(f"config key 'model.classifier_dtype' is {dtype}, but classifier {cfg.classifier!r} "
                          f"takes no dtype (it stores float32 only)")
    if dtype != "float32" or (accepted is not None and "dtype" in accepted):
        values["dtype"] = dtype
    options = {k: v for k, v in values.items() if accepted is None or k in accepted}
    classifier = create_classifier(cfg.classifier, in_features or cfg.embed_dim, num_labels, **options)
    classifier.label_chunk = cfg.label_chunk
    return classifier


def init_bias_to_prior(classifier: nn.Module, positive_fraction: float) -> None:
    """Start every label's bias at the logit of the average label frequency. With zero biases
    the first steps of a sum-over-labels BCE are spent pushing L biases down from logit 0."""
    p = min(max(positive_fraction, 1e-9), 0.5)
    with torch.no_grad():
        classifier.bias.fill_(math.log(p / (1 - p)))


def build_model(cfg: ModelConfig, num_features: int, num_labels: int, seed: int,
                positive_fraction: float = 0.5, label_counts=None) -> XMCModel:
    """``positive_fraction``: mean fraction of labels positive per training point (bias prior);
    ``label_counts``: training positives per label (for classifiers that take them, e.g. head-tail)."""
    try:
        build_encoder = ENCODERS.get(cfg.encoder)
    except UnknownNameError as err:
        raise ConfigError(f"config key 'model.encoder': {err}") from None
    encoder = build_encoder(cfg, num_features)
    d = encoder.out_features  # embed_dim for bow, the hidden size for a transformer
    intermediate = None
    if cfg.intermediate:
        from bench.models.intermediate import IntermediateLayer

        intermediate = IntermediateLayer(d, cfg.intermediate, cfg.intermediate_activation, cfg.intermediate_dropout)
    classifier = build_classifier(cfg, num_labels, seed, in_features=cfg.intermediate or d, label_counts=label_counts)
    if cfg.bias_init == "prior" and isinstance(getattr(classifier, "bias", None), torch.Tensor):
        init_bias_to_prior(classifier, positive_fraction)
    return XMCModel(encoder, classifier, intermediate)
