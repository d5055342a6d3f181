"""The classifier contract every output layer implements.

A classifier maps encoder features ``h [B, d]`` to label scores. Subclasses implement
``logits(h, lo, hi)`` — the scores of the label slice ``[lo, hi)`` — and ``memory_bytes``.
Everything else (full forward, loss, streaming top-k) is built on label slices here, so
that a subclass gets label-chunked training and inference without writing them again.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.sparse import SparseTargets

DEFAULT_LABEL_CHUNK = 16384


class Classifier(nn.Module):
    in_features: int
    num_labels: int
    # Labels per slice in top-k inference (and, later, in fused training).
    label_chunk: int = DEFAULT_LABEL_CHUNK

    def logits(self, h: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """Scores of labels ``[lo, hi)``: ``[B, hi - lo]``."""
        raise NotImplementedError

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [B, d] -> [B, L]
        return self.logits(h, 0, self.num_labels)

    def loss(self, h: torch.Tensor, targets: SparseTargets) -> torch.Tensor:
        """Binary cross-entropy summed over labels and averaged over the batch.

        Summing over labels keeps the gradient of each label's weights independent of L, so the
        same learning rate works at every label-space size.
        """
        logits = self.forward(h)
        return F.binary_cross_entropy_with_logits(
            logits.float(), targets.dense(), reduction="sum"
        ) / h.shape[0]

    @torch.no_grad()
    def topk(self, h: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` best labels per row, streamed over label chunks: memory O(B·(k + chunk)).

        Ties break towards the lower label id: candidates are kept in label-id order and merged
        with a stable sort, so among equal scores the earlier (lower) id stays first.
        """
        k = min(k, self.num_labels)
        best_scores = h.new_empty(h.shape[0], 0, dtype=torch.float32)
        best_ids = torch.empty(h.shape[0], 0, dtype=torch.int64, device=h.device)
        for lo in range(0, self.num_labels, self.label_chunk):
            hi = min(lo + self.label_chunk, self.num_labels)
            scores = self.logits(h, lo, hi).float()
            ids = torch.arange(lo, hi, device=h.device).expand(h.shape[0], -1)
            scores = torch.cat([best_scores, scores], dim=1)
            ids = torch.cat([best_ids, ids], dim=1)
            order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
            best_scores, best_ids = scores.gather(1, order), ids.gather(1, order)
        return best_scores, best_ids

    def memory_bytes(self, optimizer_slots: int = 1) -> dict[str, int]:
        """Analytic bytes: parameters, their gradients, ``optimizer_slots`` optimiser buffers
        per parameter (1 for SGD with momentum, 2 for Adam), and index/mask storage."""
        raise NotImplementedError


def dense_memory_bytes(parameters, optimizer_slots: int, index_bytes: int = 0) -> dict[str, int]:
    """Memory breakdown for parameters that train densely (every element has a gradient)."""
    params = sum(p.numel() * p.element_size() for p in parameters)
    out = {
        "parameters": params,
        "gradients": params,
        "optimizer": params * optimizer_slots,
        "indices": index_bytes,
    }
    out["total"] = sum(out.values())
    return out


def bce_grad_logits(logits: torch.Tensor, targets: torch.Tensor, batch_size: int) -> torch.Tensor:
    """∂loss/∂logits of ``Classifier.loss`` (BCE summed over labels, averaged over the batch)
    for one label chunk: ``(sigmoid(z) − y) / B``. RigL uses it to score missing connections
    chunk by chunk without building ``[B, L]``."""
    return (torch.sigmoid(logits.float()) - targets) / batch_size
