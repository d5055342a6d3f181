"""Datasets by name: ``load_dataset(cfg.data)``. The built-in synthetic ones are registered here,
the others come from their cards (``bench.data.cards``): a new dataset is a new card."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from bench.config import DataConfig
from bench.data.cards import card_names, is_card_file, load_card, read_card, source_of
from bench.data.cache import load_cached, store
from bench.data.real import load_source
from bench.errors import ConfigError, UnknownNameError
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


def dataset_builder(name: str):
    """``build(cfg) -> XMCDataset`` of dataset ``name``: a registered dataset's, or for a card
    file (``path/to/NAME.yaml``) one that reads the files the card describes, its relative
    ``source.folder`` taken from the card file's folder. An unknown name is a ``ConfigError``
    with a "did you mean"; a card file that cannot be read, a ``DataFormatError``."""
    if is_card_file(name):
        path = Path(name)
        card = read_card(path)
        return partial(load_source, card["name"], source_of(card, base=path.parent))
    try:
        return DATASETS.get(name)
    except UnknownNameError as err:
        raise ConfigError(f"config key 'data.name': {err}; or give a card file, data=path/to/NAME.yaml "
                          "(`xmc-bench data card` writes one)") from None


def check_dataset_name(name: str) -> None:
    """Raise the error ``load_dataset`` would for an unknown dataset name or a bad card file,
    without reading any data: configs call it before anything runs."""
    dataset_builder(name)


def load_dataset(cfg: DataConfig):
    """The dataset ``cfg.name`` (a registered name or a card file): from its prepared cache
    (``xmc-bench data prepare``) when one was built from the same data settings, else built
    from its source."""
    build = dataset_builder(cfg.name)
    dataset = load_cached(cfg)
    if dataset is None:
        dataset = build(cfg)
    dataset.validate()
    return dataset


def prepare(cfg: DataConfig, log=print):
    """Build dataset ``cfg.name``, check it against its card and cache it (``xmc-bench data
    prepare``); returns the cache folder."""
    return store(cfg, dataset_builder(cfg.name)(cfg).validate(), log)
