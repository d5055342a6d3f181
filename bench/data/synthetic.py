"""A synthetic XMC dataset with a latent structure that sparse features reveal.

What is generated, and why it is learnable:

* **Label popularity** follows Zipf's law: the label of popularity rank ``r`` (0-based) has
  weight ``(r + 1) ** -zipf_exponent``; ranks are a random permutation of the label ids, so
  head labels are spread over the id range as in real data.
* **Topics.** Every label belongs to one of ``T`` latent topics (uniformly at random;
  default ``T ≈ sqrt(L)``). A topic's mass is the sum of its labels' weights.
* **Labels of a point.** A point picks a primary topic ∝ mass and, with probability
  ``second_topic_prob``, a second one. It gets ``min(1 + Poisson(avg - 1), cap)`` distinct
  labels: each draw comes from one of its topics ∝ weight within the topic, or — with
  probability ``off_topic_prob`` — from all labels ∝ weight. Topics are picked ∝ mass, so
  every draw has the Zipf marginal; only repeated draws (removed) flatten the extreme head.
* **Words of a point** (vocabulary of ``num_features`` words) come from three sources:
  each label owns ``signature_words`` random words, and each of them appears with
  probability ``signature_rate`` for every label the point has (this is what makes tail
  labels learnable: their identity is written in the text, though not always and with
  words shared by other labels); each topic owns ``topic_words`` words, of which a point
  draws ``Poisson(topic_tokens)`` per topic it has (this reveals the neighbourhood, enough
  to rank its popular labels); and ``Poisson(noise_tokens)`` background words drawn from a
  Zipf distribution over the whole vocabulary carry no information.
* Points left short of distinct labels (repeats are dropped) draw again, a few vectorised
  rounds, so the mean number of labels stays at ``avg_labels_per_point``.
* **Values** are TF-IDF: ``(1 + log count) · idf`` with the smoothed idf of the training
  split, each row L2-normalised.

A linear model over these features can therefore find the topic (many topic words) and
then the labels (signature words), and reaches a P@1 far above ranking by frequency; the
noise and the missing/shared signature words keep it from being perfect.

Everything is vectorised over points, so memory is O(nnz) — never ``[N, L]`` or ``[L, V]``
— and the same seed gives byte-identical arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bench.data.dataset import XMCDataset
from bench.errors import ConfigError
from bench.sparse import CSR

LABEL_ROUNDS = 16  # draw rounds for points still short of distinct labels


def make_synthetic(
    num_labels: int = 4096,
    num_train: int = 20000,
    num_test: int = 4000,
    num_features: int = 20000,
    avg_labels_per_point: float = 5.0,
    zipf_exponent: float = 1.0,
    seed: int = 0,
    *,
    num_topics: int | None = None,  # latent topics T; None: round(sqrt(L)), at least 1
    second_topic_prob: float = 0.3,  # chance that a point has a second topic
    off_topic_prob: float = 0.2,  # chance that a label draw ignores the point's topics
    max_labels_per_point: int | None = None,  # cap on labels per point; None: 3·avg + 5 (≤ L)
    signature_words: int = 4,  # words owned by each label
    signature_rate: float = 0.5,  # chance that each signature word of a positive label appears
    topic_words: int = 32,  # words owned by each topic
    topic_tokens: float = 6.0,  # mean topic-word tokens per topic of a point
    noise_tokens: float = 20.0,  # mean background (uninformative) tokens per point
) -> XMCDataset:
    params = dict(locals())
    if num_topics is None:
        params["num_topics"] = max(1, round(math.sqrt(max(num_labels, 1))))
    if max_labels_per_point is None:
        params["max_labels_per_point"] = min(num_labels, math.ceil(3 * avg_labels_per_point) + 5)
    _check(params)

    rng = np.random.default_rng(seed)
    latent = _Latent.draw(rng, params)
    n = num_train + num_test
    point_topics = latent.draw_topics(rng, n, second_topic_prob)  # [N, 2], equal when only one topic
    labels = latent.draw_labels(rng, point_topics, avg_labels_per_point, params["max_labels_per_point"],
                                off_topic_prob)
    counts = latent.draw_words(rng, labels, point_topics, params)  # [N, V] token counts
    features = _tf_idf(counts, num_train)
    return XMCDataset(
        name="synthetic",
        train_x=_rows(features, 0, num_train),
        train_y=_rows(labels, 0, num_train),
        test_x=_rows(features, num_train, n),
        test_y=_rows(labels, num_train, n),
        meta={"generator": "bench.data.synthetic.make_synthetic", **params},
    )


def _check(p: dict) -> None:
    def need(ok: bool, name: str, expected: str) -> None:
        if not ok:
            raise ConfigError(f"synthetic data: {name}={p[name]!r}; expected {expected}")

    need(p["num_labels"] >= 1, "num_labels", "at least 1")
    need(p["num_train"] >= 1, "num_train", "at least 1")
    need(p["num_test"] >= 0, "num_test", "at least 0")
    need(p["num_features"] >= 1, "num_features", "at least 1")
    need(1 <= p["avg_labels_per_point"] <= p["num_labels"], "avg_labels_per_point",
         f"in [1, num_labels={p['num_labels']}] (every point has at least one label)")
    need(p["zipf_exponent"] >= 0, "zipf_exponent", ">= 0 (0: all labels equally popular)")
    need(p["seed"] >= 0, "seed", ">= 0")
    need(p["num_topics"] >= 1, "num_topics", "at least 1")
    need(p["avg_labels_per_point"] <= p["max_labels_per_point"] <= p["num_labels"], "max_labels_per_point",
         f"in [avg_labels_per_point={p['avg_labels_per_point']}, num_labels={p['num_labels']}]")
    for name in ("second_topic_prob", "off_topic_prob", "signature_rate"):
        need(0.0 <= p[name] <= 1.0, name, "a probability in [0, 1]")
    need(p["signature_words"] >= 0, "signature_words", ">= 0")
    need(p["topic_words"] >= 1, "topic_words", "at least 1")
    need(p["topic_tokens"] >= 0, "topic_tokens", ">= 0")
    need(p["noise_tokens"] >= 0, "noise_tokens", ">= 0")


@dataclass
class _Latent:
    """The hidden structure; every table is O(L·few + T·few + V)."""

    num_labels: int
    num_features: int
    by_topic: np.ndarray  # [L] label ids sorted by topic
    cum_weight: np.ndarray  # [L] cumulative Zipf weight in by_topic order, ends at 1
    topic_start: np.ndarray  # [T + 1] each topic's range in by_topic (and cum_weight)
    topic_cum_mass: np.ndarray  # [T] cumulative topic mass, ends at 1
    signatures: np.ndarray  # [L, S] int64 word ids owned by each label
    topic_vocab: np.ndarray  # [T, W] int64 word ids owned by each topic
    noise_cum: np.ndarray  # [V] cumulative background word distribution

    @classmethod
    def draw(cls, rng: np.random.Generator, p: dict) -> "_Latent":
        L, V, T = p["num_labels"], p["num_features"], p["num_topics"]
        rank = rng.permutation(L)  # popularity rank of each label id
        weight = (rank + 1.0) ** -p["zipf_exponent"]  # [L]
        topic = rng.integers(T, size=L)  # [L] topic of each label
        by_topic = np.argsort(topic, kind="stable")
        cum_weight = np.cumsum(weight[by_topic])
        cum_weight /= cum_weight[-1]
        topic_start = np.searchsorted(topic[by_topic], np.arange(T + 1))
        topic_end_mass = np.concatenate([[0.0], cum_weight])[topic_start[1:]]  # [T] cumulative
        word_rank = rng.permutation(V)
        noise_cum = np.cumsum(1.0 / (word_rank + 1.0))  # background words: Zipf(1) over the vocabulary
        return cls(
            num_labels=L,
            num_features=V,
            by_topic=by_topic,
            cum_weight=cum_weight,
            topic_start=topic_start,
            topic_cum_mass=topic_end_mass,
            signatures=rng.integers(V, size=(L, p["signature_words"])),
            topic_vocab=rng.integers(V, size=(T, p["topic_words"])),
            noise_cum=noise_cum / noise_cum[-1],
        )

    def draw_topics(self, rng: np.random.Generator, n: int, second_prob: float) -> np.ndarray:
        """Topics ∝ mass: ``[n, 2]``; column 1 repeats column 0 for points with one topic."""
        u = rng.random((n, 2))
        topics = np.searchsorted(self.topic_cum_mass, u, side="right")
        topics = np.minimum(topics, len(self.topic_cum_mass) - 1)  # guard u ≈ 1 rounding
        one = rng.random(n) >= second_prob
        topics[one, 1] = topics[one, 0]
        return topics

    def draw_labels(self, rng, topics: np.ndarray, avg: float, cap: int, off_prob: float) -> CSR:
        """The first ``wanted`` distinct labels each point draws. Repeated draws are dropped and
        points left short draw again (a few vectorised rounds), so the mean stays near ``avg``
        even where one head label dominates a topic."""
        n, L = len(topics), self.num_labels
        wanted = np.minimum(1 + rng.poisson(avg - 1.0, n), cap)  # [N]
        points, labels = [], []
        short, missing = np.arange(n), wanted
        for round_ in range(LABEL_ROUNDS):
            draws = 2 * missing + 4  # over-sample: repeats are common in head-heavy topics
            point = np.repeat(short, draws)  # [D] the point of every draw
            on_topic = np.zeros(len(point), bool)
            if round_ == 0:  # a point's first draw comes from its primary topic
                on_topic[np.cumsum(draws) - draws] = True
            points.append(point)
            labels.append(self._draw(rng, topics, point, on_topic, off_prob))
            key = np.concatenate(points) * L + np.concatenate(labels)  # all draws so far, in order
            _, first_draw = np.unique(key, return_index=True)  # first draw of each (point, label)
            missing = wanted - np.bincount(key[first_draw] // L, minlength=n)
            short = np.nonzero(missing > 0)[0]
            if not len(short):
                break
            missing = missing[short]
        # keep each point's first `wanted` distinct labels in draw order
        keep = np.sort(first_draw)
        keep = keep[np.argsort(key[keep] // L, kind="stable")]  # grouped by point, draw order kept
        kept_point = key[keep] // L
        rank = np.arange(len(keep)) - np.searchsorted(kept_point, np.arange(n))[kept_point]
        keep = keep[rank < wanted[kept_point]]
        return _csr_from_keys(np.sort(key[keep]), n, L)

    def _draw(self, rng, topics, point, on_topic, off_prob) -> np.ndarray:
        """One label per draw ∝ Zipf weight, within one of the point's topics or (with
        probability ``off_prob``, never where ``on_topic``) among all labels: ``[D]``."""
        topic = topics[point, rng.integers(2, size=len(point))]  # [D]
        everywhere = (rng.random(len(point)) < off_prob) & ~on_topic
        lo = np.where(everywhere | (topic == 0), 0.0, self.topic_cum_mass[topic - 1])
        hi = np.where(everywhere, 1.0, self.topic_cum_mass[topic])
        pos = np.searchsorted(self.cum_weight, lo + rng.random(len(point)) * (hi - lo), side="right")
        # float rounding may step just outside the chosen range: clip back into it
        lo_pos = np.where(everywhere, 0, self.topic_start[topic])
        hi_pos = np.where(everywhere, self.num_labels, self.topic_start[topic + 1]) - 1
        return self.by_topic[np.clip(pos, lo_pos, hi_pos)]

    def draw_words(self, rng, labels: CSR, topics: np.ndarray, p: dict) -> CSR:
        """Token counts of every point: ``[N, V]`` with float32 counts as values."""
        n = labels.num_rows
        # signature words: each of a positive label's words appears with probability signature_rate
        label_point = np.repeat(np.arange(n), labels.row_lengths())  # [P]
        words = self.signatures[labels.indices]  # [P, S]
        shown = rng.random(words.shape) < p["signature_rate"]  # [P, S]
        sig_point = np.broadcast_to(label_point[:, None], shown.shape)[shown]
        sig_word = words[shown]
        # topic words: Poisson(topic_tokens) per distinct topic of the point
        two = topics[:, 1] != topics[:, 0]
        point_topic = np.concatenate([topics[:, 0], topics[two, 1]])
        owner = np.concatenate([np.arange(n), np.nonzero(two)[0]])
        k = rng.poisson(p["topic_tokens"], len(owner))
        top_point = np.repeat(owner, k)
        slot = rng.integers(self.topic_vocab.shape[1], size=k.sum())
        top_word = self.topic_vocab[np.repeat(point_topic, k), slot]
        # background noise: Zipf over the whole vocabulary
        k = rng.poisson(p["noise_tokens"], n)
        noise_point = np.repeat(np.arange(n), k)
        noise_word = np.minimum(np.searchsorted(self.noise_cum, rng.random(k.sum()), side="right"),
                                self.num_features - 1)
        key = np.concatenate([sig_point, top_point, noise_point]) * self.num_features
        key += np.concatenate([sig_word, top_word, noise_word])
        key, count = np.unique(key, return_counts=True)
        return _csr_from_keys(key, n, self.num_features, count.astype(np.float32))


def _csr_from_keys(key: np.ndarray, n: int, num_cols: int, data: np.ndarray | None = None) -> CSR:
    """CSR from sorted ``row · num_cols + col`` keys."""
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(key // num_cols, minlength=n), out=indptr[1:])
    return CSR(indptr, (key % num_cols).astype(np.int64), data, num_cols)


def _tf_idf(counts: CSR, num_train: int) -> CSR:
    """``(1 + log tf) · idf`` with the smoothed idf of the first ``num_train`` rows (the
    training split, so test rows do not leak into the features); rows L2-normalised."""
    df = np.bincount(counts.indices[: counts.indptr[num_train]], minlength=counts.num_cols)  # [V]
    idf = np.log((1.0 + num_train) / (1.0 + df)) + 1.0
    value = (1.0 + np.log(counts.data)) * idf[counts.indices]  # [nnz] float64
    row = np.repeat(np.arange(counts.num_rows), counts.row_lengths())
    norm = np.sqrt(np.bincount(row, weights=value * value, minlength=counts.num_rows))  # [N]
    value /= np.where(norm > 0, norm, 1.0)[row]  # a row without words stays empty
    return CSR(counts.indptr, counts.indices, value.astype(np.float32), counts.num_cols)


def _rows(m: CSR, lo: int, hi: int) -> CSR:
    """Rows ``[lo, hi)`` of ``m`` as their own CSR (contiguous, so plain slices)."""
    a, b = m.indptr[lo], m.indptr[hi]
    data = None if m.data is None else m.data[a:b]
    return CSR(m.indptr[lo : hi + 1] - a, m.indices[a:b], data, m.num_cols)


def render_texts(x: CSR) -> list[str]:
    """Each row's feature ids as words, ``"w12 w345 ..."`` (a text view of the synthetic data)."""
    words = np.char.add("w", x.indices.astype(str)) if x.nnz else np.array([], dtype=str)
    return [" ".join(words[x.indptr[i] : x.indptr[i + 1]]) for i in range(x.num_rows)]
