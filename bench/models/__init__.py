"""Encoders and the XMC model (encoder → [intermediate] → classifier [+ aux]); import the
submodule you need.

Each encoder module registers a builder ``fn(cfg: ModelConfig, num_features) -> nn.Module``
(with ``out_features``) under its ``model.encoder`` name; ``bench.models.xmc`` imports the
built-in ones.
"""

from bench.registry import Registry

ENCODERS = Registry("encoder")


def register_encoder(name: str):
    """Decorator for an encoder builder ``fn(cfg: ModelConfig, num_features: int) -> nn.Module``."""
    return ENCODERS.register(name)
