"""Top-k by selection equals the sort-based top-k it replaced, ties and all."""

import numpy as np
import pytest
import torch

from bench.classifiers.base import Classifier
from bench.ranking import merge_by_id, merge_ranked, select_chunk
from bench.metrics import drop_filtered
from bench.sparse import CSR


def sort_topk(scores: torch.Tensor, k: int, chunk: int):
    """The previous ``Classifier.topk``: every chunk's [B, chunk + k] block stably sorted."""
    k = min(k, scores.shape[1])
    best_s = scores.new_empty(scores.shape[0], 0)
    best_i = torch.empty(scores.shape[0], 0, dtype=torch.int64)
    for lo in range(0, scores.shape[1], chunk):
        hi = min(lo + chunk, scores.shape[1])
        s = torch.cat([best_s, scores[:, lo:hi]], dim=1)
        i = torch.cat([best_i, torch.arange(lo, hi).expand(scores.shape[0], -1)], dim=1)
        order = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :k]
        best_s, best_i = s.gather(1, order), i.gather(1, order)
    return best_s, best_i


class Table(Classifier):
    """A classifier whose scores are a fixed table (rows: points), for exact tie tests."""

    def __init__(self, scores, chunk):
        super().__init__()
        self.table, self.num_labels, self.in_features, self.label_chunk = scores, scores.shape[1], 1, chunk

    def logits(self, h, lo, hi):
        return self.table[h.long().flatten()][:, lo:hi]


def tied_scores(kind: str, batch: int, labels: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "few-values":
        return torch.randint(0, 3, (batch, labels), generator=g).float()
    if kind == "all-equal":
        return torch.full((batch, labels), 0.25)
    if kind == "special":  # ±inf, NaN, ±0 among a few values
        pool = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1.0, -1.0])
        return pool[torch.randint(0, len(pool), (batch, labels), generator=g)]
    if kind == "mixed-rows":  # some rows continuous, some all ties
        s = torch.randn(batch, labels, generator=g)
        s[::3] = s[::3].round()
        s[1::4] = 7.0
        return s
    return torch.randn(batch, labels, generator=g)


KINDS = ["random", "few-values", "all-equal", "special", "mixed-rows"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("labels,chunk,k", [(50, 16, 5), (37, 7, 5), (64, 64, 3), (20, 6, 20), (9, 4, 12),
                                            (300, 128, 1), (300, 33, 40)])
def test_topk_equals_sort_based(kind, labels, chunk, k):
    scores = tied_scores(kind, 12, labels, seed=labels + k)
    want_s, want_i = sort_topk(scores, k, chunk)
    got_s, got_i = Table(scores, chunk).topk(torch.arange(12).float()[:, None], k)
    assert torch.equal(got_i, want_i)
    torch.testing.assert_close(got_s, want_s, equal_nan=True, rtol=0, atol=0)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no GPU"))])
@pytest.mark.parametrize("kind", KINDS)
def test_select_chunk_is_a_stable_sort(kind, device):
    scores = tied_scores(kind, 9, 40, seed=3).to(device)
    for k in (1, 2, 5, 38, 39, 40):
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
        got_s, got_i = select_chunk(scores, k, lo=100)
        assert got_i.device == scores.device
        assert torch.equal(got_i, order + 100)
        torch.testing.assert_close(got_s, scores.gather(1, order), equal_nan=True, rtol=0, atol=0)


def test_merge_by_id_ranks_interleaved_ids():
    a_s, a_i = torch.tensor([[2.0, 1.0, 1.0]]), torch.tensor([[9, 1, 7]])
    b_s, b_i = torch.tensor([[float("nan"), 2.0, 1.0]]), torch.tensor([[8, 3, 4]])
    s, i = merge_by_id(a_s, a_i, b_s, b_i, 5)
    assert i.tolist() == [[8, 3, 9, 1, 4]]
    torch.testing.assert_close(s, torch.tensor([[float("nan"), 2.0, 2.0, 1.0, 1.0]]), equal_nan=True)


def test_merge_ranked_keeps_lower_ids_first_on_ties():
    a_s, a_i = torch.tensor([[2.0, 1.0, 1.0]]), torch.tensor([[4, 1, 3]])
    b_s, b_i = torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[5, 6, 7]])
    s, i = merge_ranked(a_s, a_i, b_s, b_i, 4)
    assert i.tolist() == [[4, 5, 1, 3]] and s.tolist() == [[2.0, 2.0, 1.0, 1.0]]


@pytest.mark.parametrize("kind", ["few-values", "all-equal", "mixed-rows"])
def test_filtered_predictions_unchanged(kind):
    """Evaluation asks for k + (filtered count) ranks and drops the filtered pairs: the same
    survivors as with the sort-based top-k."""
    batch, labels, k = 10, 60, 5
    scores = tied_scores(kind, batch, labels, seed=11)
    rng = np.random.default_rng(0)
    rows = [sorted(rng.choice(labels, size=int(rng.integers(0, 6)), replace=False)) for _ in range(batch)]
    filtered = CSR.from_rows(rows, labels)
    extra = int(filtered.row_lengths().max(initial=0))
    _, want = sort_topk(scores, k + extra, 16)
    _, got = Table(scores, 16).topk(torch.arange(batch).float()[:, None], k + extra)
    assert np.array_equal(drop_filtered(got, filtered, k), drop_filtered(want, filtered, k))
