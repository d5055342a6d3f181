"""The auxiliary branch: a dense meta-classifier on the encoder output that predicts the
clusters of a point's labels (BCE summed over clusters, averaged over the batch — the main
loss's reduction). Its loss is mixed in as ``(1 − α)·main + α·meta`` with α decaying to zero
(``aux_weight`` in ``train.py``); after the cutoff the branch is not computed at all.

Its bias starts at the prior like the main classifier's (``model.bias_init=prior``): from
``nn.Linear``'s near-zero bias every cluster starts at σ = 0.5, the loss at C·log 2 per point and
its gradient into the encoder about 100× the main loss's (measured at 65K labels, C = 1024),
which swamps the encoder's first AdamW steps and inflates its second-moment estimate.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.classifiers.base import dense_memory_bytes
from bench.sparse import SparseTargets


class MetaClassifier(nn.Module):
    def __init__(self, in_features: int, cluster_of: np.ndarray, num_clusters: int):
        super().__init__()
        self.in_features, self.num_clusters = in_features, num_clusters
        self.register_buffer("cluster_of", torch.as_tensor(np.asarray(cluster_of), dtype=torch.int32))  # [L]
        self.linear = nn.Linear(in_features, num_clusters)  # weight [C, d]

    def cluster_positive_fraction(self, labels) -> float:
        """Mean fraction of clusters positive per point of the label matrix ``labels`` (CSR)."""
        rows = np.repeat(np.arange(labels.num_rows), labels.row_lengths())
        clusters = self.cluster_of.cpu().numpy().astype(np.int64)[labels.indices]
        pairs = np.unique(rows * self.num_clusters + clusters).size  # distinct (point, cluster)
        return pairs / max(1, labels.num_rows * self.num_clusters)

    def cluster_targets(self, targets: SparseTargets) -> torch.Tensor:
        """``[B, C]`` 0/1: cluster c is positive when any of the point's labels is in it."""
        out = torch.zeros(targets.batch_size, self.num_clusters, device=targets.indices.device)
        out[targets.row_ids(), self.cluster_of[targets.indices].long()] = 1
        return out

    def loss(self, z: torch.Tensor, targets: SparseTargets) -> torch.Tensor:
        logits = self.linear(z)  # [B, C]
        return F.binary_cross_entropy_with_logits(logits.float(), self.cluster_targets(targets),
                                                  reduction="sum") / z.shape[0]

    def memory_bytes(self, optimizer_slots: int = 2) -> dict[str, int]:
        """Analytic bytes: the dense [C, d] layer with AdamW, plus the label → cluster map."""
        return dense_memory_bytes(self.parameters(), optimizer_slots,
                                  index_bytes=self.cluster_of.numel() * self.cluster_of.element_size())
