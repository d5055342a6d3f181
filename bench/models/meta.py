"""The auxiliary branch: a dense meta-classifier on the encoder output that predicts the
clusters of a point's labels, trained with a loss of its own (``bench.losses``: ``aux.loss``,
``aux.loss_reduction`` over B·C; by default the main loss's defaults, BCE summed over clusters ÷ B).
Its loss is mixed in as ``(1 − α)·main + α·meta`` with α decaying to zero (``aux_weight`` in
``train.py``); after the cutoff the branch is not computed at all. The few, dense cluster
targets give the encoder a strong gradient early, while the sparse output layer's
connectivity is still poor.

Its bias starts at the prior like the main classifier's (``model.bias_init=prior``): clusters
are rarely positive, and from a zero bias every cluster would start at σ = 0.5, so the branch's
first gradients into the encoder would be dominated by pushing all C clusters down rather
than by which clusters are positive.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bench import losses
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

    def sparse_cluster_targets(self, targets: SparseTargets) -> SparseTargets:
        """Each point's clusters as label lists over the C clusters (a cluster may repeat)."""
        return SparseTargets(targets.indptr, self.cluster_of[targets.indices].long(), self.num_clusters)

    def cluster_targets(self, targets: SparseTargets) -> torch.Tensor:
        """``[B, C]`` 0/1: cluster c is positive when any of the point's labels is in it (for
        inspection; the loss reads ``sparse_cluster_targets`` and never builds this)."""
        return self.sparse_cluster_targets(targets).dense()

    def loss(self, z: torch.Tensor, targets: SparseTargets, criterion: losses.Loss | None = None) -> torch.Tensor:
        """``criterion`` (default ``losses.DEFAULT``; training passes ``aux.loss``) of the cluster
        scores against the clusters, reduced over the C clusters."""
        criterion = losses.DEFAULT if criterion is None else criterion
        logits = self.linear(z)  # [B, C]
        return criterion.value(logits, self.sparse_cluster_targets(targets), 0, self.num_clusters, self.num_clusters)

    def memory_bytes(self, optimizer_slots: int = 2) -> dict[str, int]:
        """Analytic bytes: the dense [C, d] layer with AdamW, plus the label → cluster map."""
        return dense_memory_bytes(self.parameters(), optimizer_slots,
                                  index_bytes=self.cluster_of.numel() * self.cluster_of.element_size())
