"""Ranking metrics: hand-computed examples, streaming, and a slow per-row reference."""

import math

import numpy as np
import pytest
import torch

from bench.data.propensity import inverse_propensity, jain_propensity
from bench.errors import BenchError
from bench.metrics import RankingMetrics, evaluate_topk, topk_from_scores
from bench.sparse import CSR

LOG2_3 = math.log2(3)


# -- hand-computed example -----------------------------------------------------------------
# 6 labels, inverse propensities w = 1/p = [1, 2, 3, 4, 5, 6] (label l weighs l + 1).
#   row 0: truth {0, 2},    top-3 [2, 1, 0]   -> hits [1, 0, 1]
#   row 1: truth {3, 4, 5}, top-3 [1, 3, -1]  -> hits [0, 1, 0]  (-1: no prediction)
#   row 2: truth {},        top-3 [0, 1, 2]   -> no hits, still counts in N = 3
TRUTH = CSR.from_rows([[0, 2], [3, 4, 5], []], num_cols=6)
TOP = np.array([[2, 1, 0], [1, 3, -1], [0, 1, 2]])
W = np.arange(1, 7, dtype=np.float64)
IDCG2 = 1 + 1 / LOG2_3  # ideal DCG of 2 ones = 1.6309
IDCG3 = 1 + 1 / LOG2_3 + 0.5  # ideal DCG of 3 ones = 2.1309


def test_hand_example_all_metrics():
    got = evaluate_topk(TOP, TRUTH, ks=(1, 3), inv_propensity=W)
    expected = {
        "P@1": (1 + 0 + 0) / 3,  # only row 0 hits at rank 1
        "P@3": (2 / 3 + 1 / 3 + 0) / 3,
        # nDCG@3: row 0 DCG = 1 + 1/log2(4) = 1.5 over IDCG of min(3, 2) = 2 ones;
        #         row 1 DCG = 1/log2(3) over IDCG of 3 ones
        "nDCG@1": (1 + 0 + 0) / 3,
        "nDCG@3": (1.5 / IDCG2 + (1 / LOG2_3) / IDCG3 + 0) / 3,
        # PSP@1: hits weigh w[2] = 3 (row 0); best: max w per row = 3 (row 0) + 6 (row 1)
        "PSP@1": 3 / (3 + 6),
        # PSP@3: hits w[2] + w[0] + w[3] = 3 + 1 + 4 = 8; best: (3 + 1) + (6 + 5 + 4) = 19
        "PSP@3": 8 / 19,
        # PSnDCG@1: IDCG(1) = 1, so it equals PSP@1 here
        "PSnDCG@1": 3 / 9,
        # PSnDCG@3: row 0 (3 + 1/log2(4)) / IDCG2, row 1 (4/log2(3)) / IDCG3;
        #   best: row 0 labels [2, 0] -> (3 + 1/log2(3)) / IDCG2,
        #         row 1 labels [5, 4, 3] -> (6 + 5/log2(3) + 4/2) / IDCG3
        "PSnDCG@3": (3.5 / IDCG2 + (4 / LOG2_3) / IDCG3)
        / ((3 + 1 / LOG2_3) / IDCG2 + (6 + 5 / LOG2_3 + 2) / IDCG3),
        "R@1": (1 / 2 + 0 + 0) / 3,  # empty row: 0
        "R@3": (2 / 2 + 1 / 3 + 0) / 3,
    }
    assert list(got) == list(expected)  # grouped by metric, ks ascending
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key
    # numbers worked out by hand as well, to catch a formula wrong in both places
    assert got["nDCG@3"] == pytest.approx((0.919721 + 0.296082) / 3, abs=1e-6)
    assert got["PSnDCG@3"] == pytest.approx(3.33035 / 7.46093, abs=1e-5)


def test_without_propensities_has_no_ps_keys():
    got = evaluate_topk(TOP, TRUTH, ks=(1, 3))
    assert list(got) == ["P@1", "P@3", "nDCG@1", "nDCG@3", "R@1", "R@3"]


def test_empty_rows_only_give_zero():
    truth = CSR.from_rows([[], []], num_cols=4)
    got = evaluate_topk(np.array([[0, 1], [2, 3]]), truth, ks=(1, 2), inv_propensity=np.ones(4))
    assert all(v == 0.0 for v in got.values())


def test_k_larger_than_predictions_and_labels():
    # 2 labels, 2 predictions, k = 5: ranks 3..5 are misses; the ideal DCG has min(5, 2) = 2 ones
    truth = CSR.from_rows([[0, 1]], num_cols=2)
    got = evaluate_topk(np.array([[1, 0]]), truth, ks=(1, 5), inv_propensity=np.array([2.0, 1.0]))
    assert got["P@5"] == pytest.approx(2 / 5)
    assert got["R@5"] == pytest.approx(1.0)
    assert got["nDCG@5"] == pytest.approx(1.0)
    # PSP@1: predicted label 1 weighs 1, the best first label weighs 2
    assert got["PSP@1"] == pytest.approx(1 / 2)
    assert got["PSP@5"] == pytest.approx(1.0)
    # PSnDCG@5: (1 + 2/log2(3)) vs best (2 + 1/log2(3)); same IDCG cancels
    assert got["PSnDCG@5"] == pytest.approx((1 + 2 / LOG2_3) / (2 + 1 / LOG2_3))


def test_repeated_prediction_counts_once():
    truth = CSR.from_rows([[4]], num_cols=5)
    got = evaluate_topk(np.array([[4, 4, 4]]), truth, ks=(3,))
    assert got["P@3"] == pytest.approx(1 / 3)
    assert got["nDCG@3"] == pytest.approx(1.0)


def test_torch_input_and_bad_ids():
    got = evaluate_topk(torch.as_tensor(TOP), TRUTH, ks=(1, 3))
    assert got == evaluate_topk(TOP, TRUTH, ks=(1, 3))
    with pytest.raises(BenchError, match="label ids"):
        evaluate_topk(np.array([[6, 0, 0], [0, 0, 0], [0, 0, 0]]), TRUTH)
    with pytest.raises(BenchError, match="rows"):
        evaluate_topk(TOP[:2], TRUTH)
    with pytest.raises(BenchError, match="inv_propensity"):
        RankingMetrics(6, inv_propensity=np.ones(5))
    with pytest.raises(BenchError, match="no rows"):
        RankingMetrics(6).compute()


# -- topk_from_scores ----------------------------------------------------------------------


def test_topk_from_scores_ties_go_to_lower_id():
    scores = CSR.from_rows(
        [[7, 3, 1, 0], [], [5], [2, 4, 9]],
        num_cols=10,
        values=[[0.9, 0.5, 0.5, 0.1], [], [-1.0], [0.2, 0.2, 0.2]],
    )
    top = topk_from_scores(scores, 3)
    assert top.dtype == np.int64 and top.shape == (4, 3)
    np.testing.assert_array_equal(
        top,
        [
            [7, 1, 3],  # 0.9 first, then the 0.5 tie: label 1 before label 3
            [-1, -1, -1],  # no predictions
            [5, -1, -1],  # a negative score is still a prediction
            [2, 4, 9],  # all tied: ascending ids
        ],
    )
    np.testing.assert_array_equal(topk_from_scores(scores, 1)[:, 0], [7, -1, 5, 2])


# -- streaming and the slow reference ------------------------------------------------------


def reference_metrics(top, truth: CSR, ks, w):
    """Obviously-correct per-row loops over the definitions in bench/metrics.py."""
    def dcg(gains):
        return sum(g / math.log2(r + 2) for r, g in enumerate(gains))

    n = truth.num_rows
    out = {}
    for k in ks:
        p = nd = r = psp_num = psp_den = psn_num = psn_den = 0.0
        for i in range(n):
            y = set(truth.row(i).tolist())
            if not y:
                continue
            pred = [int(l) for l in top[i][:k]]
            seen, gains, ps_gains = set(), [], []
            for l in pred:
                hit = l >= 0 and l in y and l not in seen
                seen.add(l)
                gains.append(1.0 if hit else 0.0)
                ps_gains.append(w[l] if hit else 0.0)
            idcg = dcg([1.0] * min(k, len(y)))
            best = sorted((w[l] for l in y), reverse=True)[:k]
            p += sum(gains) / k
            r += sum(gains) / len(y)
            nd += dcg(gains) / idcg
            psp_num += sum(ps_gains)
            psp_den += sum(best)
            psn_num += dcg(ps_gains) / idcg
            psn_den += dcg(best) / idcg
        out[f"P@{k}"], out[f"nDCG@{k}"], out[f"R@{k}"] = p / n, nd / n, r / n
        out[f"PSP@{k}"], out[f"PSnDCG@{k}"] = psp_num / psp_den, psn_num / psn_den
    return out


def random_case(seed, n=203, num_labels=37, width=7):
    rng = np.random.default_rng(seed)
    rows = [rng.choice(num_labels, size=rng.integers(0, 6), replace=False) for _ in range(n)]
    truth = CSR.from_rows([np.sort(r) for r in rows], num_labels)
    top = rng.integers(-1, num_labels, size=(n, width))
    # make many predictions correct so that every metric is far from zero
    for i, r in enumerate(rows):
        take = r[: rng.integers(0, len(r) + 1)]
        top[i, rng.choice(width, size=len(take), replace=False)] = take
    counts = np.bincount(np.concatenate(rows).astype(np.int64), minlength=num_labels)
    w = 1.0 / jain_propensity(counts, n)
    return top, truth, w


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_slow_reference(seed):
    top, truth, w = random_case(seed)
    ks = (1, 3, 5, 9)  # 9 > width 7: ranks past the predictions are misses
    got = evaluate_topk(top, truth, ks=ks, inv_propensity=w)
    ref = reference_metrics(top, truth, ks, w)
    assert set(got) == set(ref)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], rel=1e-10), key
    assert got["P@1"] > 0.1 and got["PSnDCG@5"] > 0.1


def test_streaming_equals_one_batch():
    top, truth, w = random_case(3)
    whole = evaluate_topk(top, truth, inv_propensity=w)
    metrics = RankingMetrics(truth.num_cols, inv_propensity=w)
    for lo, hi in [(0, 1), (1, 50), (50, 50), (50, 130), (130, truth.num_rows)]:  # ragged, one empty
        rows = np.arange(lo, hi)
        metrics.update(top[lo:hi], truth.take_rows(rows))
    streamed = metrics.compute()
    assert metrics.num_rows == truth.num_rows
    for key in whole:
        assert streamed[key] == pytest.approx(whole[key], rel=1e-12), key


# -- propensity ----------------------------------------------------------------------------


def test_jain_propensity_hand_example():
    # A = 1, B = 1: C = (ln N - 1) * 2, so p = 1 / (1 + 2 (ln N - 1) / (N_l + 1)):
    #   N_l = 1 -> 1 / ln N;  N_l = 3 -> 2 / (1 + ln N)
    p = jain_propensity(np.array([1, 3]), 100, A=1.0, B=1.0)
    assert p.dtype == np.float64
    np.testing.assert_allclose(p, [1 / math.log(100), 2 / (1 + math.log(100))], rtol=1e-12)
    # defaults A = 0.55, B = 1.5, N = 1000, N_l = 0:
    #   C = (6.907755 - 1) * 2.5^0.55 = 5.907755 * 1.655262 = 9.778889
    #   p = 1 / (1 + 9.778889 * 1.5^-0.55) = 1 / (1 + 9.778889 * 0.800110) = 0.113325
    assert jain_propensity(np.array([0]), 1000)[0] == pytest.approx(0.113325, abs=2e-6)
    # rarer labels are less likely to be annotated
    p = jain_propensity(np.array([0, 1, 10, 1000]), 10_000)
    assert np.all(np.diff(p) > 0) and np.all((p > 0) & (p <= 1))


def test_inverse_propensity_is_the_reciprocal():
    counts = np.array([0, 1, 7, 300])
    w = inverse_propensity(counts, 5_000, A=0.6, B=2.6)
    assert w.dtype == np.float64
    np.testing.assert_allclose(w, 1 / jain_propensity(counts, 5_000, A=0.6, B=2.6), rtol=1e-15)
    assert np.all(w >= 1) and np.all(np.diff(w) < 0)  # the rarest label weighs most
    with pytest.raises(BenchError, match="training point"):
        inverse_propensity(counts, 0)
