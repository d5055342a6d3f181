"""Datasets by name: ``load_dataset(cfg.data)``. A new dataset is one registration here."""

from __future__ import annotations

from functools import partial

from bench.config import DataConfig
from bench.data.real import Source, load_source
from bench.registry import Registry

DATASETS = Registry("dataset")


@DATASETS.register("synthetic")
def _synthetic(cfg: DataConfig):
    from bench.data.synthetic import make_synthetic

    return make_synthetic(
        num_labels=cfg.num_labels,
        num_train=cfg.num_train,
        num_test=cfg.num_test,
        num_features=cfg.num_features,
        avg_labels_per_point=cfg.avg_labels_per_point,
        zipf_exponent=cfg.zipf_exponent,
        seed=cfg.seed,
    )


@DATASETS.register("synthetic-text")
def _synthetic_text(cfg: DataConfig):
    """`synthetic` with raw texts for text encoders: each point's feature ids as words
    ("w123 w45 ..."), so a tokenizer over the words w0 … w{V-1} sees the same signal."""
    from bench.data.synthetic import render_texts

    dataset = _synthetic(cfg)
    dataset.name = "synthetic-text"
    dataset.train_text, dataset.test_text = render_texts(dataset.train_x), render_texts(dataset.test_x)
    return dataset


# The real datasets of ../shared/data (see datasets/NAME.yaml for each card and provenance).
SHARED = {
    "bibtex": Source("Bibtex", "arff", "bibtex-train.arff", "bibtex-test.arff", "bibtex.xml"),
    # the .xml renames 9 of the split files' label attributes (e.g. TAG_.net): take the last 983
    "delicious": Source("Delicious", "arff", "delicious-train.arff", "delicious-test.arff", "delicious.xml",
                        labels_by="last"),
    "corel5k": Source("Corel5k", "arff", "Corel5k-train-sparse.arff", "Corel5k-test-sparse.arff", "Corel5k.xml"),
    "mediamill-small": Source("Mediamill_small", "arff", "mediamill_small.arff", xml="mediamill_small.xml",
                              features="l2"),
    "stackex-cooking": Source("Stackex_cooking", "bow", "stackex_cooking_data.txt"),
    "stackex-cs": Source("Stackex_cs", "bow", "stackex_cs_data.txt"),
    "stackex-chemistry": Source("Stackex_chemistry", "bow", "stackex_chemistry_data.txt"),
}
for _name, _source in SHARED.items():
    DATASETS.register(_name, partial(load_source, _name, _source))


# The Extreme Classification Repository benchmarks: not shipped here; download them and point
# data.path at the folder (file names as in each card's `files`).
# The LF sets' raw texts (train, test, labels) are attached when present (bench/data/real.py).
LF_TEXT = ("trn.json", "tst.json", "lbl.json")
XC = {
    "eurlex-4k": Source("Eurlex-4K", "bow", "train.txt", "test.txt", features="l2"),
    "wiki10-31k": Source("Wiki10-31K", "bow", "train.txt", "test.txt", features="l2"),
    "amazoncat-13k": Source("AmazonCat-13K", "bow", "train.txt", "test.txt", features="l2"),
    "wiki-500k": Source("Wiki-500K", "bow", "train.txt", "test.txt", features="l2"),
    "amazon-670k": Source("Amazon-670K", "bow", "train.txt", "test.txt", features="l2"),
    "amazon-3m": Source("Amazon-3M", "bow", "train.txt", "test.txt", features="l2"),
    "lf-amazontitles-131k": Source("LF-AmazonTitles-131K", "xc-split", "trn", "tst", features="l2",
                                   test_filter="filter_labels_test.txt", raw_text=LF_TEXT),
    "lf-wikiseealso-320k": Source("LF-WikiSeeAlso-320K", "xc-split", "trn", "tst", features="l2",
                                  test_filter="filter_labels_test.txt", raw_text=LF_TEXT),
    "lf-amazontitles-1.3m": Source("LF-AmazonTitles-1.3M", "xc-split", "trn", "tst", features="l2",
                                   test_filter="filter_labels_test.txt", raw_text=LF_TEXT),
}
for _name, _source in XC.items():
    DATASETS.register(_name, partial(load_source, _name, _source))


def load_dataset(cfg: DataConfig):
    """The dataset ``cfg.name``: from its prepared cache (``xmc-bench data prepare``) when one
    was built from the same data settings, else built from its source."""
    from bench.data.cache import load_cached

    build = DATASETS.get(cfg.name)  # an unknown name fails here, with a "did you mean"
    dataset = load_cached(cfg)
    if dataset is None:
        dataset = build(cfg)
    dataset.validate()
    return dataset
