"""Datasets by name: ``load_dataset(cfg.data)``. The built-in synthetic ones are registered here,
the others come from their cards (``bench.data.cards``): a new dataset is a new card."""

from __future__ import annotations

from functools import partial

from bench.config import DataConfig
from bench.data.cards import card_names, load_card, source_of
from bench.data.real import load_source
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


# One dataset per shipped card (bench/cards/NAME.yaml): its folder, format, files and split.
# The Extreme Classification Repository's benchmarks are not in ../shared/data: download them
# and point data.path at the folder (file names as in each card's `files`).
SOURCES = {name: source_of(load_card(name)) for name in card_names()}
for _name, _source in SOURCES.items():
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
