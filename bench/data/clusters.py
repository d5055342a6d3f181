"""Label clusters for the auxiliary meta-classifier (as LightXML / CascadeXML build them).

1. **Label centroids**: the mean TF-IDF feature of each label's training points. ``[L, V]`` is
   never built: the features are first reduced by a fixed random Gaussian projection
   ``R [V, dim]`` (seeded), one sparse-dense product ``X R`` ``[N, dim]``, and each label sums
   the projected rows of its points: ``C = Yᵀ (X R)`` ``[L, dim]``, rows L2-normalised
   (spherical: only the direction matters). Or (``aux.centroids=encoder``) the same mean over
   the encoder's features of the points, as initialised — meaningful with a pretrained
   transformer, whose features already place related texts together.
2. **Balanced spherical clustering** by recursive bisection: a node holding the labels of
   ``c`` final clusters splits into ``c // 2`` and ``c - c // 2`` clusters with a balanced
   2-means (labels sorted by ``cos(x, μ₀) − cos(x, μ₁)``, the first ``n_left`` go left, centres
   re-estimated, ``iters`` rounds). The target sizes are fixed up front — ``L // C`` or one more —
   so every cluster's size is within 1 of every other's and each label is in exactly one.

Deterministic by seed; cached by a key of the data config and the clustering parameters.

Or the reference's own clusters (``aux.clusters_file``): a ``label_group*.npy`` as LightXML and
its successors save it, one array of label ids per cluster (``read_cluster_file``).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from bench.config import DataConfig
from bench.errors import ConfigError, DataFormatError
from bench.sparse import CSR

FORMAT_VERSION = 1
LABEL_ENTRY_CHUNK = 1 << 20  # (point, label) pairs gathered at a time: [chunk, dim] floats


def tfidf_projection(x: CSR, dim: int = 64, seed: int = 0) -> torch.Tensor:
    """``[N, dim]``: the TF-IDF rows times a fixed seeded Gaussian projection ``R [V, dim]``."""
    generator = torch.Generator().manual_seed(seed)
    projection = torch.randn(x.num_cols, dim, generator=generator) / dim**0.5  # [V, dim]
    values = torch.ones(x.nnz) if x.data is None else torch.from_numpy(np.asarray(x.data, np.float32))
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product is all we use
        warnings.simplefilter("ignore", UserWarning)
        features = torch.sparse_csr_tensor(torch.from_numpy(np.asarray(x.indptr, np.int64)),
                                           torch.from_numpy(np.asarray(x.indices, np.int64)), values,
                                           size=x.shape, check_invariants=False)  # validated by XMCDataset
        return features @ projection


def mean_feature_per_label(features: torch.Tensor, y: CSR) -> np.ndarray:
    """``[L, D]`` float32: unit-length sum (so: direction of the mean) of the feature rows of each
    label's training points (a zero row for a label without training points)."""
    label_ids = torch.from_numpy(np.asarray(y.indices, np.int64))  # [nnz_y]
    point_ids = torch.repeat_interleave(torch.arange(y.num_rows), torch.from_numpy(y.row_lengths()))
    centroids = torch.zeros(y.num_cols, features.shape[1])
    features = features.float().cpu()
    for lo in range(0, len(label_ids), LABEL_ENTRY_CHUNK):
        hi = lo + LABEL_ENTRY_CHUNK
        centroids.index_add_(0, label_ids[lo:hi], features[point_ids[lo:hi]])
    return torch.nn.functional.normalize(centroids, dim=1).numpy()


def label_centroids(x: CSR, y: CSR, dim: int = 64, seed: int = 0) -> np.ndarray:
    """``[L, dim]`` float32: unit-length projected TF-IDF centroid of each label's training points."""
    return mean_feature_per_label(tfidf_projection(x, dim, seed), y)


def balanced_sizes(num_labels: int, num_clusters: int) -> np.ndarray:
    """Target sizes: ``num_labels // num_clusters``, the first ``num_labels % num_clusters`` one more."""
    sizes = np.full(num_clusters, num_labels // num_clusters, np.int64)
    sizes[: num_labels % num_clusters] += 1
    return sizes


def group_sizes(num_labels: int, group_size: int) -> np.ndarray:
    """Exactly ``group_size`` labels per cluster, the last cluster the remainder."""
    sizes = np.full(-(-num_labels // group_size), group_size, np.int64)
    sizes[-1] = num_labels - group_size * (len(sizes) - 1)
    return sizes


def balanced_clusters(vectors: np.ndarray, num_clusters: int, iters: int = 8, seed: int = 0,
                      sizes: np.ndarray | None = None) -> np.ndarray:
    """``[L]`` int32 cluster id of each row of ``vectors`` (unit rows), sizes from ``balanced_sizes``
    unless given (``sizes [num_clusters]``, summing to L)."""
    num_labels = len(vectors)
    if not 1 <= num_clusters <= num_labels:
        raise ConfigError(f"aux.num_clusters must be in [1, {num_labels}] (the number of labels), got {num_clusters}")
    rng = np.random.default_rng(seed)
    sizes = balanced_sizes(num_labels, num_clusters) if sizes is None else np.asarray(sizes, np.int64)
    out = np.empty(num_labels, np.int32)
    stack = [(np.arange(num_labels), 0, num_clusters)]  # (label ids, first cluster id, clusters)
    while stack:
        ids, first, count = stack.pop()
        if count == 1:
            out[ids] = first
            continue
        half = count // 2
        n_left = int(sizes[first : first + half].sum())
        x = vectors[ids]  # [n, dim]
        centres = x[rng.choice(len(ids), 2, replace=False)]  # [2, dim]
        for _ in range(max(1, iters)):
            score = x @ (centres[0] - centres[1])  # cos to left centre minus cos to right centre
            order = np.argsort(-score, kind="stable")
            left, right = order[:n_left], order[n_left:]
            centres = np.stack([_unit(x[left].sum(0)), _unit(x[right].sum(0))])
        stack.append((ids[right], first + half, count - half))
        stack.append((ids[left], first, half))
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v)
    return v / norm if norm > 0 else v


def default_num_clusters(num_labels: int, labels_per_cluster: int = 64) -> int:
    """The paper's clusters of about 64 labels (at least 2 clusters, at most L)."""
    return min(num_labels, max(2, round(num_labels / labels_per_cluster)))


def cluster_cache_file(data_cfg: DataConfig, num_clusters: int, dim: int, iters: int, source=None,
                       extra=None) -> Path:
    from bench.data.cache import cache_key, cache_root

    key = {"data": cache_key(data_cfg), "num_clusters": num_clusters, "dim": dim, "iters": iters,
           "version": FORMAT_VERSION}
    if source is not None:  # encoder-feature centroids: whatever determines the features
        key["centroids"] = source
    if extra:  # exact group sizes; a relabelled dataset (its label ids are not the files')
        key["extra"] = extra
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return cache_root(data_cfg) / "clusters" / f"{data_cfg.name}-C{num_clusters}-{digest}.npy"


def label_clusters(dataset, data_cfg: DataConfig, num_clusters: int, dim: int = 64, iters: int = 8,
                   use_cache: bool = True, features=None, group_size: int = 0) -> tuple[np.ndarray, bool]:
    """(``[L]`` int32 cluster of each label, whether it came from the cache). Centroids from the
    projected TF-IDF features, or from ``features`` = (``[N, D]`` training-point features, a
    JSON-able description of where they come from, which keys the cache). Cluster sizes are
    balanced, or exactly ``group_size`` (the last the remainder) when it is set. Seeded by
    ``data.seed`` so every run seed of a dataset shares one TF-IDF clustering (and cache file)."""
    extra = {"group_size": group_size, "label_order": dataset.meta.get("label_order")}
    path = cluster_cache_file(data_cfg, num_clusters, dim, iters, None if features is None else features[1],
                              {k: v for k, v in extra.items() if v})
    if use_cache and path.exists():
        clusters = np.load(path)
        if clusters.shape == (dataset.num_labels,):
            return clusters, True
    if features is None:
        centroids = label_centroids(dataset.train_x, dataset.train_y, dim=dim, seed=data_cfg.seed)
    else:
        centroids = mean_feature_per_label(features[0], dataset.train_y)
    sizes = group_sizes(dataset.num_labels, group_size) if group_size else None
    clusters = balanced_clusters(centroids, num_clusters, iters=iters, seed=data_cfg.seed, sizes=sizes)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, clusters)
        os.replace(tmp, path)  # atomic: concurrent runs never read half a file
    return clusters, False


def cluster_label_order(dataset, data_cfg: DataConfig, group_size: int, dim: int = 64, iters: int = 8,
                        use_cache: bool = True) -> tuple[np.ndarray, dict, bool]:
    """``new_id [L]`` that numbers labels cluster by cluster, clusters of exactly ``group_size``
    labels (the same TF-IDF centroids and balanced bisection as the aux branch), so that
    ``ffi-group``'s contiguous groups are label clusters; how it was made; whether the clustering
    came from the cache."""
    num_groups = -(-dataset.num_labels // group_size)
    clusters, cached = label_clusters(dataset, data_cfg, num_groups, dim, iters, use_cache, group_size=group_size)
    new_id = np.empty(dataset.num_labels, np.int64)
    new_id[np.argsort(clusters, kind="stable")] = np.arange(dataset.num_labels)
    return new_id, {"by": "cluster", "group_size": group_size, "dim": dim, "iters": iters}, cached


def read_cluster_file(path, num_labels: int) -> np.ndarray:
    """``[L]`` int32 cluster of each label from a ``label_group*.npy``: a numpy object array of
    label-id arrays, one per cluster (or a 2-D integer array, one row per cluster, as numpy
    saves equal-sized ones). Every label ``0 … num_labels - 1`` must be in exactly one cluster;
    a ``DataFormatError`` names the file and the first cluster that breaks that. The file is
    unpickled (``allow_pickle=True``, as the reference saves it): load only files you trust."""
    try:
        groups = np.load(path, allow_pickle=True)
    except FileNotFoundError:
        raise DataFormatError(path, None, "no such cluster file") from None
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as err:
        raise DataFormatError(path, None, f"not a numpy .npy file ({err}): expected an object array of "
                              "label-id arrays, one per cluster") from None
    if not isinstance(groups, np.ndarray) or groups.ndim not in (1, 2) or len(groups) == 0:
        raise DataFormatError(path, None, f"holds {type(groups).__name__} of shape {getattr(groups, 'shape', '?')}: "
                              "expected an object array of label-id arrays, one per cluster")
    out = np.full(num_labels, -1, np.int64)
    for c, group in enumerate(groups):
        ids = np.asarray(group)
        if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise DataFormatError(path, None, f"cluster {c} is {ids.dtype} of shape {ids.shape}: expected a "
                                  "non-empty 1-D array of integer label ids")
        bad = ids[(ids < 0) | (ids >= num_labels)]
        if bad.size:
            raise DataFormatError(path, None, f"cluster {c} holds label id {int(bad[0])}: expected ids in "
                                  f"[0, {num_labels}) (the dataset's labels)")
        unique, counts = np.unique(ids, return_counts=True)
        taken = unique[out[unique] >= 0]
        if taken.size or (counts > 1).any():
            label = int(taken[0]) if taken.size else int(unique[counts > 1][0])
            first = int(out[label]) if taken.size else c
            raise DataFormatError(path, None, f"label {label} is in cluster {first} and again in cluster {c}: "
                                  "expected every label in exactly one cluster")
        out[unique] = c
    missing = np.flatnonzero(out < 0)
    if missing.size:
        raise DataFormatError(path, None, f"{missing.size} of the {num_labels} labels are in no cluster (the first: "
                              f"{int(missing[0])}): expected every label in exactly one cluster")
    return out.astype(np.int32)
