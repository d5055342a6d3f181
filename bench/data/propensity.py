"""Label propensities for the propensity-scored metrics (PSP@k, PSnDCG@k).

Jain, Prabhu & Varma (KDD 2016) model the chance that a relevant label was actually annotated
as a sigmoid of its log training frequency:

    p_l = 1 / (1 + C · (N_l + B)^(−A)),   C = (ln N − 1) · (B + 1)^A

with ``N`` training points and ``N_l`` of them tagged with label ``l``. Rare labels get small
``p_l``, so their inverse ``1 / p_l`` weighs a correct rare prediction more. ``A = 0.55,
B = 1.5`` are the paper's defaults (Wikipedia/Amazon use other values; the caller chooses).
"""

from __future__ import annotations

import numpy as np

from bench.errors import BenchError


def jain_propensity(label_counts: np.ndarray, num_points: int, A: float = 0.55, B: float = 1.5) -> np.ndarray:
    """Propensity ``p_l`` of every label: ``[L]`` float64 in (0, 1] when ``num_points > e``.

    ``label_counts`` is ``[L]`` (training points per label, e.g. ``CSR.column_counts()``).
    The formula is used as published, so for ``num_points <= e`` (C <= 0) it leaves (0, 1];
    only ``num_points < 1`` is refused, as it has no meaning at all.
    """
    if num_points < 1:
        raise BenchError(f"propensities need at least one training point, got num_points={num_points}")
    counts = np.asarray(label_counts, dtype=np.float64)
    if counts.ndim != 1 or (counts.size and counts.min() < 0):
        raise BenchError("label_counts must be a 1-d array of non-negative counts")
    C = (np.log(num_points) - 1.0) * (B + 1.0) ** A
    return 1.0 / (1.0 + C * (counts + B) ** (-A))


def inverse_propensity(label_counts: np.ndarray, num_points: int, A: float = 0.55, B: float = 1.5) -> np.ndarray:
    """``1 / p_l`` of every label, ``[L]`` float64: the weights ``RankingMetrics`` takes.

    Always >= 1 for ``num_points > e``; the rarest labels weigh most.
    """
    return 1.0 / jain_propensity(label_counts, num_points, A, B)
