"""The intermediate layer: a dense ``d → m`` layer, nonlinearity and dropout between the
encoder and the classifier (the paper's remedy for poor gradient flow through a sparse
output layer: every encoder feature reaches every one of the ``m`` classifier inputs).

It is a dense part of the network, so it trains with the encoder's AdamW (``train.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from bench.classifiers.base import dense_memory_bytes
from bench.errors import ConfigError
from bench.models.bow import ACTIVATIONS


class IntermediateLayer(nn.Module):
    def __init__(self, in_features: int, out_features: int, activation: str = "relu", dropout: float = 0.0):
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ConfigError(f"intermediate layer needs sizes >= 1, got {in_features} → {out_features}")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"intermediate layer: unknown activation {activation!r}; "
                              f"expected one of {', '.join(ACTIVATIONS)}")
        self.in_features, self.out_features = in_features, out_features
        self.linear = nn.Linear(in_features, out_features)  # weight [m, d]
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [B, d] -> [B, m]
        return self.dropout(self.activation(self.linear(h)))

    def memory_bytes(self, optimizer_slots: int = 2) -> dict[str, int]:
        """Analytic bytes: weight and bias, their gradients, ``optimizer_slots`` AdamW buffers."""
        return dense_memory_bytes(self.parameters(), optimizer_slots)
