"""Evaluate a prediction file against a label file, as the XC repository's tools do.

Both files are in the sparse matrix text format (``bench.data.formats``); the prediction file
holds scores, of which the top ``k`` per row are ranked. Propensities come from the training
labels when given (the standard protocol), else from the test labels themselves. A filter
file (``doc label`` pairs, as the XC repository ships for LF datasets) removes those pairs from
the predictions before the top ``k`` are taken.
"""

from __future__ import annotations

from bench.data.formats import read_filter, read_sparse_matrix
from bench.data.propensity import inverse_propensity
from bench.errors import BenchError
from bench.metrics import RankingMetrics, drop_filtered, topk_from_scores

DEFAULT_KS = (1, 3, 5)


def evaluate_files(
    predictions_path, labels_path, train_labels_path=None, A: float = 0.55, B: float = 1.5, k: int = 5,
    filter_path=None,
) -> dict[str, float]:
    """P/nDCG/PSP/PSnDCG/R at ``k`` and at every standard rank below it, as fractions."""
    if k < 1:
        raise BenchError(f"k must be at least 1, got {k}")
    scores = read_sparse_matrix(predictions_path)
    labels = read_sparse_matrix(labels_path, binary=True)
    if scores.shape != labels.shape:
        raise BenchError(
            f"predictions {predictions_path} have shape {scores.shape} but labels {labels_path} have "
            f"{labels.shape}: expected the same rows (test points) and columns (labels)"
        )
    propensity_source = labels
    if train_labels_path is not None:
        propensity_source = read_sparse_matrix(train_labels_path, binary=True)
        if propensity_source.num_cols != labels.num_cols:
            raise BenchError(
                f"train labels {train_labels_path} have {propensity_source.num_cols} columns but labels "
                f"{labels_path} have {labels.num_cols}: expected the same label set"
            )
    inv_propensity = inverse_propensity(propensity_source.column_counts(), propensity_source.num_rows, A, B)
    ks = tuple(x for x in DEFAULT_KS if x <= k) + (() if k in DEFAULT_KS else (k,))
    metrics = RankingMetrics(labels.num_cols, ks=ks, inv_propensity=inv_propensity)
    if filter_path is None:
        top = topk_from_scores(scores, k)
    else:
        filtered = read_filter(filter_path, labels.num_rows, labels.num_cols)
        extra = int(filtered.row_lengths().max(initial=0))  # enough ranks for k to survive in every row
        top = drop_filtered(topk_from_scores(scores, k + extra), filtered, k)
    metrics.update(top, labels)
    return metrics.compute()
